"""Issue 3's fault matrix in-process: the engine over real sockets, streaming and buffered."""

import time

import pytest

from deepseek_engine import build_body
from deepseek_engine.errors import EngineError
from deepseek_sim import SimConfig, Simulator
from tests.fault_cases import CASES, CREDS, WANT
from tests.wire.wireutil import free_port, make_client, run


def _chat(client, prompt, buffered):
    body = build_body("deepseek-r1", [{"role": "user", "content": prompt}], {})
    if not buffered:
        return run(client, content=prompt)[0]
    from deepseek_engine import AnswerAssembler
    a = AnswerAssembler(True)
    text = "".join(p.text for p in (a.feed(d) for d in client.stream(body, buffered=True)) if p)
    return text + a.finish().text


@pytest.mark.parametrize("mode", ["stream", "blocking"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_fault(case, mode, registry):
    want = (case.stream if mode == "stream" else case.blocking)[0]
    with Simulator(SimConfig(served_model="deepseek-r1", **case.sim)) as sim:
        url = f"http://127.0.0.1:{free_port()}/v1" if case.refused else sim.base_url
        creds = {**CREDS, **case.creds}
        client = make_client(url, registry, **creds)
        if "served_model_name" in creds:  # the engine is given the served name by the edge
            case_body_model = creds["served_model_name"]
        else:
            case_body_model = None
        if case.fault:
            sim.inject(**case.fault)
        t = time.monotonic()
        outcome, text = "ok", None
        try:
            if case_body_model:
                body = build_body(case_body_model, [{"role": "user", "content": "hi"}], {})
                list(client.stream(body, buffered=mode == "blocking"))
            else:
                text = _chat(client, case.prompt, mode == "blocking")
        except EngineError as e:
            outcome = type(e).__name__
        elapsed = time.monotonic() - t
        assert outcome == want, f"{case}/{mode}: {outcome}"
        if want == "ok":
            assert text == WANT  # nothing lost, duplicated or reordered
        assert case.at_least <= elapsed < case.within, elapsed
        if case.max_requests is not None:
            assert len([r for r in sim.requests if r.path.endswith("/chat/completions")]) <= max(case.max_requests, 1)
        _no_leak(sim)


def _answer(client, mode):
    """The whole answer of one chat, streamed or blocking (buffered), as the user gets it."""
    return _chat(client, "hi", mode == "blocking")


def _no_leak(sim, pooled=1):
    deadline = time.monotonic() + 2
    while (sim.in_flight or sim.open_connections > pooled) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sim.in_flight == 0 and sim.open_connections <= pooled  # no leaked connections


@pytest.mark.parametrize("mode", ["stream", "blocking"])
def test_one_of_two_endpoints_dead_is_invisible(registry, mode):
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        client = make_client([f"http://127.0.0.1:{free_port()}/v1", sim.base_url], registry, **CREDS)
        for _ in range(10):
            t = time.monotonic()
            assert _answer(client, mode) == WANT
            assert time.monotonic() - t < 2.0  # a refused connect costs nothing; never a timeout
        assert len([r for r in sim.requests if r.path.endswith("/chat/completions")]) == 10
        _no_leak(sim)


@pytest.mark.parametrize("mode", ["stream", "blocking"])
def test_cold_endpoint_refusing_then_503_then_healthy(registry, mode):
    from deepseek_engine.errors import ConnectError, ServerError
    port = free_port()
    client = make_client(f"http://127.0.0.1:{port}/v1", registry, **CREDS)
    client.health.base_cooldown = 0.2  # the active prober re-admits in production; here time does
    t = time.monotonic()
    with pytest.raises(ConnectError):
        _answer(client, mode)  # weights loading: the port is not bound yet
    assert time.monotonic() - t < 2.0
    sim = Simulator(SimConfig(served_model="deepseek-r1"), port=port).start()
    try:
        sim.inject("status", count=10, status=503)
        time.sleep(0.25)
        t = time.monotonic()
        with pytest.raises(ServerError):
            _answer(client, mode)  # bound, but not ready
        assert time.monotonic() - t < 2.0
        sim.clear_faults()
        time.sleep(0.5)
        t = time.monotonic()
        assert _answer(client, mode) == WANT
        assert time.monotonic() - t < 2.0
        _no_leak(sim)
    finally:
        sim.stop()
