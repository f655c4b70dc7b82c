"""Doctor tier: ``python -m deepseek_doctor`` against the simulator (every reasoning shape,
faults, auth, TLS) and a small stub for what the simulator cannot express."""

import pytest

from deepseek_doctor.__main__ import main
from deepseek_sim import SimConfig, Simulator


@pytest.fixture
def make_sim():
    """make_sim(ssl_context=None, **SimConfig fields) -> a started Simulator, stopped at teardown."""
    started = []

    def _make(ssl_context=None, **cfg):
        sim = Simulator(SimConfig(**cfg), ssl_context=ssl_context).start()
        started.append(sim)
        return sim

    yield _make
    for sim in started:
        sim.stop()


@pytest.fixture
def make_stub():
    from tests.doctor.stub import Stub

    started = []

    def _make(**kw):
        s = Stub(**kw)
        started.append(s)
        return s

    yield _make
    for s in started:
        s.close()


@pytest.fixture
def run_doctor(capsys, monkeypatch):
    """run_doctor(*argv, env=None) -> (exit code, stdout, stderr) of the doctor's main()."""
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)

    def _run(*argv: str, env: dict | None = None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        code = main(["--requests", "2", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture(scope="session")
def pki():
    from tests.security.certs import make_pki

    return make_pki()
