"""Opt-in metrics: a bad DEEPSEEK_METRICS_PORT is a logged warning, never a plugin that fails to start."""

import logging
import socket

import pytest

from deepseek_engine.telemetry import TELEMETRY, configure


@pytest.fixture
def fresh():
    before = (TELEMETRY.metrics, TELEMETRY.json_logs)
    TELEMETRY.metrics = None
    yield
    TELEMETRY.metrics, TELEMETRY.json_logs = before


def _configure_warns(caplog, env: dict) -> str:
    with caplog.at_level(logging.WARNING, logger="deepseek_selfhosted.requests"):
        t = configure(env)
    assert t.metrics is None  # metrics stay off, nothing raised
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    return record.getMessage()


@pytest.mark.parametrize("value", ["9464x", "-1", "70000", "0"])
def test_bad_metrics_port_is_a_warning(fresh, caplog, value):
    msg = _configure_warns(caplog, {"DEEPSEEK_METRICS_PORT": value})
    assert f"DEEPSEEK_METRICS_PORT={value!r}" in msg and "metrics are off" in msg
    assert "free port number (1-65535), or unset it" in msg


def test_metrics_port_in_use_is_a_warning(fresh, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        msg = _configure_warns(caplog, {"DEEPSEEK_METRICS_PORT": str(port),
                                        "DEEPSEEK_METRICS_ADDR": "127.0.0.1"})
    assert f"DEEPSEEK_METRICS_PORT='{port}'" in msg and "in use" in msg.lower()
