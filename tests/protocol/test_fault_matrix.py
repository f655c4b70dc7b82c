"""Issue 3's fault matrix through the protocol tier: the plugin as the daemon runs it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import chunk_rules as cr  # noqa: E402
from fault_cases import CASES, CREDS, WANT  # noqa: E402
from harness import user_message  # noqa: E402
from plugin_util import PROVIDER, free_url, running_plugin  # noqa: E402

from deepseek_sim import SimConfig, Simulator  # noqa: E402



@pytest.fixture(scope="module")
def plugin():
    with running_plugin(DEEPSEEK_HEALTH_INTERVAL="0.2") as p:
        yield p


def creds(url, **extra):
    return {"endpoint_urls": url, "api_key": None, "served_model_name": None, **CREDS, **extra}


@pytest.mark.parametrize("mode", ["stream", "blocking"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_fault(plugin, case, mode):
    want = (case.stream if mode == "stream" else case.blocking)[1]
    with Simulator(SimConfig(served_model="deepseek-r1", **case.sim)) as sim:
        url = free_url() if case.refused else sim.base_url
        c = creds(url, **case.creds)
        if not (case.refused or case.creds or case.sim):
            # validation is the endpoint's warm-up: no background warm-up takes the fault
            assert plugin.validate_model_credentials(PROVIDER, "deepseek-r1", c).error is None
        before = len(sim.requests)
        if case.fault:
            sim.inject(**case.fault)
        t = time.monotonic()
        result = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message(case.prompt)], {},
                                   stream=mode == "stream", timeout=30)
        elapsed = time.monotonic() - t
        assert cr.check_session(result) == []
        outcome = result.error["error_type"] if result.error else "ok"
        assert outcome == want, f"{case}/{mode}: {result.error}"
        if want == "ok":
            assert cr.collect_text(result) == WANT  # nothing lost, duplicated or reordered
            assert cr.check_llm_stream(result) == []
            if mode == "blocking":
                assert len(result.chunks) == 1
        else:
            assert "127.0.0.1:" in result.error["message"]  # names the endpoint
        assert case.at_least <= elapsed < case.within, elapsed
        if case.max_requests is not None:
            chats = [r for r in sim.requests[before:] if r.path.endswith("/chat/completions")
                     and (r.body or {}).get("max_tokens") != 1]  # not the background warm-up
            assert len(chats) <= max(case.max_requests, 1)
        deadline = time.monotonic() + 2
        while (sim.in_flight or sim.open_connections > 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sim.in_flight == 0 and sim.open_connections <= 2  # pooled keep-alive only


def test_dead_endpoint_costs_one_connect_failure_then_is_skipped(plugin):
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        c = creds(f"{free_url()}, {sim.base_url}")
        for _ in range(8):
            result = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30)
            assert result.error is None and cr.collect_text(result) == WANT


def test_cold_endpoint_refusing_then_503_then_healthy(plugin):
    url = free_url()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    c = creds(url, served_model_name="deepseek-r1")
    first = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30)
    assert first.error["error_type"] == "InvokeConnectionError"  # loading weights: refused
    t = time.monotonic()
    again = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30)
    assert again.error["error_type"] == "InvokeConnectionError"
    assert "down" in again.error["message"] and time.monotonic() - t < 0.5  # answered at once
    sim = Simulator(SimConfig(served_model="deepseek-r1"), port=port)
    sim.healthy = False  # bound, /health 503 while warming up
    sim.start()
    try:
        time.sleep(0.5)
        sim.healthy = True
        deadline = time.monotonic() + 5  # the background probe re-admits it within its interval
        while time.monotonic() < deadline:
            result = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30)
            if result.error is None:
                break
            time.sleep(0.1)
        assert result.error is None and cr.collect_text(result) == WANT
    finally:
        sim.stop()
