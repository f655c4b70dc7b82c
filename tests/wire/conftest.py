"""Wire tier: the engine over real loopback sockets against the project's simulator."""

import pytest

from deepseek_engine.transport import ClientRegistry
from deepseek_sim import SimConfig, Simulator


@pytest.fixture
def sim():
    with Simulator(SimConfig(served_model="deepseek-r1", shape="reasoning")) as s:
        yield s


@pytest.fixture
def registry():
    r = ClientRegistry()
    yield r
    r.close()
