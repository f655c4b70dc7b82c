import pytest

from tests.security.certs import make_pki


@pytest.fixture(scope="session")
def pki():
    return make_pki()
