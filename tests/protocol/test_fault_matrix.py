"""Issue 3's fault matrix through the protocol tier: the plugin as the daemon runs it."""

from __future__ import annotations

import time

import pytest

from deepseek_sim import SimConfig, Simulator
from tests.blackhole import Blackhole
from tests.fault_cases import CASES, CREDS, WANT
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import user_message
from tests.protocol.plugin_util import PROVIDER, free_url, invokes, is_warm_up, running_plugin


@pytest.fixture(scope="module")
def plugin():
    with running_plugin(DEEPSEEK_HEALTH_INTERVAL="0.2") as p:
        yield p


def creds(url, **extra):
    return {"endpoint_urls": url, "api_key": None, "served_model_name": None, **CREDS, **extra}


def _no_leak(sim, since):
    # Pooled keep-alive only: the request and the health probe may each hold a connection, and so
    # may the background warm-up when no validation warmed the endpoint first, and the background
    # read of the served context (/v1/models) a catalogue model's schema asks for (all overlap).
    mine = sim.requests[since:]
    pooled = 2 + any(is_warm_up(r.body) for r in mine) + any(r.path.endswith("/models") for r in mine)
    deadline = time.monotonic() + 2
    while (sim.in_flight or sim.open_connections > pooled) and time.monotonic() < deadline:
        time.sleep(0.02)
    seen = [(r.method, r.path, r.headers.get("content-length"), r.raw_body[:80]) for r in sim.requests[since:]]
    assert sim.in_flight == 0 and sim.open_connections <= pooled, (sim.open_connections, seen)


def _wait(cond, seconds):
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


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
            assert len(invokes(sim.requests, before)) <= max(case.max_requests, 1)
        _no_leak(sim, before)


CONNECT = 0.5


@pytest.mark.parametrize("mode", ["stream", "blocking"])
def test_dead_endpoint_costs_one_connect_failure_then_is_skipped(plugin, mode):
    # a host that drops SYNs, listed first (priority 0): every request would meet it first
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim, Blackhole() as dead:
        dead.check()
        c = creds(f"{dead.base_url}, {sim.base_url} priority=1", served_model_name="deepseek-r1",
                  timeouts=f"idle=1 first_token=1.5 connect={CONNECT}")
        costs = []
        for _ in range(8):
            t = time.monotonic()
            result = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {},
                                       stream=mode == "stream", timeout=30)
            costs.append(time.monotonic() - t)
            assert result.error is None and cr.collect_text(result) == WANT
        assert costs[0] < CONNECT + 1.0, costs  # at most one connect timeout
        assert max(costs[1:]) < CONNECT * 0.8, costs  # then the dead host is skipped: no timeout
        assert sum(costs) < 2 * CONNECT + 8 * 0.25, costs  # one connect timeout in all, not one each
        assert len(invokes(sim.requests)) == 8
        _no_leak(sim, 0)


@pytest.mark.parametrize("mode", ["stream", "blocking"])
def test_cold_endpoint_refusing_then_503_then_healthy(plugin, mode):
    url = free_url()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    c = creds(url, served_model_name="deepseek-r1")
    ask = lambda: plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {},  # noqa: E731
                                    stream=mode == "stream", timeout=30)
    refused_at = time.monotonic()
    first = ask()
    assert first.error["error_type"] == "InvokeConnectionError"  # loading weights: refused
    t = time.monotonic()
    again = ask()
    assert again.error["error_type"] == "InvokeConnectionError"
    assert "down" in again.error["message"] and time.monotonic() - t < 0.5  # answered at once
    sim = Simulator(SimConfig(served_model="deepseek-r1"), port=port)
    sim.healthy = False  # bound, /health 503 while warming up...
    sim.inject("status", count=1000, status=503)  # ...and so are its chat completions
    sim.start()
    try:
        assert _wait(lambda: any(r.path == "/health" for r in sim.requests), 2)  # probed: 503
        for _ in range(3):  # cold: set aside until /health says otherwise, whatever the timer
            t = time.monotonic()
            cold = ask()
            assert cold.error["error_type"] == "InvokeConnectionError"
            assert "down" in cold.error["message"] and time.monotonic() - t < 0.5
            time.sleep(0.2)
        assert invokes(sim.requests) == []  # no user request met the 503s
        sim.clear_faults()
        ready = len(sim.requests)
        sim.healthy = True
        deadline = time.monotonic() + 2  # the background probe (every 0.2 s here) re-admits it
        while time.monotonic() < deadline:
            result = ask()
            if result.error is None:
                break
            time.sleep(0.05)
        assert result.error is None and cr.collect_text(result) == WANT
        # re-admitted by a /health 200, not by the passive cool-down (5 s, not over yet)
        assert time.monotonic() - refused_at < 4.5
        after = [r.path for r in sim.requests[ready:]]
        assert "/health" in after and after.index("/health") < after.index("/v1/chat/completions")
        _no_leak(sim, 0)
    finally:
        sim.stop()


@pytest.mark.parametrize("status,dify", [(503, "InvokeConnectionError"), (502, "InvokeConnectionError"),
                                         (504, "InvokeConnectionError"),
                                         (500, "InvokeServerUnavailableError")])
def test_persistent_unavailable_reaches_dify_as_a_connection_error(plugin, status, dify):
    # Dify's load balancing cools a credential down and tries the next one only on connection,
    # auth and rate-limit errors: a replica that still answers 503 after every retry is that
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        c = creds(sim.base_url, served_model_name="deepseek-r1")
        sim.inject("status", count=1000, status=status)
        result = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {},
                                   stream=False, timeout=30)
        assert result.error["error_type"] == dify, result.error
        assert f"HTTP {status}" in result.error["message"]
        assert len(invokes(sim.requests)) >= 2  # retried first (the warm-up's 503 counts towards ejection)
