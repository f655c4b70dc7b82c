"""Fixtures for the deepseek_sim tests (real loopback sockets)."""

import httpx
import pytest

from deepseek_sim import SimConfig, Simulator


@pytest.fixture
def make_sim():
    """make_sim(**SimConfig fields) -> a started Simulator, stopped at teardown."""
    started = []

    def _make(port: int = 0, **cfg):
        sim = Simulator(SimConfig(**cfg), port=port).start()
        started.append(sim)
        return sim

    yield _make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim):
    return make_sim()


@pytest.fixture
def client(sim):
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as c:
        yield c
