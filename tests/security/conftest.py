import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from certs import make_pki  # noqa: E402


@pytest.fixture(scope="session")
def pki():
    return make_pki()
