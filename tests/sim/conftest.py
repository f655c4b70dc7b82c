"""Fixtures for the deepseek_sim tests (real loopback sockets)."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
# Plain `pytest` (not `python -m pytest`) does not put the repo root on sys.path.
for p in (_ROOT, _HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import httpx  # noqa: E402
import pytest  # noqa: E402

from deepseek_sim import SimConfig, Simulator  # noqa: E402


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
