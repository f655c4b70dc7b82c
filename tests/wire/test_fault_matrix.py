"""Issue 3's fault matrix in-process: the engine over real sockets, streaming and buffered."""

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fault_cases import CASES, CREDS, WANT  # noqa: E402
from wireutil import free_port, make_client, run  # noqa: E402

from deepseek_engine import build_body  # noqa: E402
from deepseek_engine.errors import EngineError  # noqa: E402
from deepseek_sim import SimConfig, Simulator  # noqa: E402


def _chat(client, case, buffered):
    body = build_body("deepseek-r1", [{"role": "user", "content": case.prompt}], {})
    if not buffered:
        return run(client, content=case.prompt)[0]
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
                text = _chat(client, case, mode == "blocking")
        except EngineError as e:
            outcome = type(e).__name__
        elapsed = time.monotonic() - t
        assert outcome == want, f"{case}/{mode}: {outcome}"
        if want == "ok":
            assert text == WANT  # nothing lost, duplicated or reordered
        assert case.at_least <= elapsed < case.within, elapsed
        if case.max_requests is not None:
            assert len([r for r in sim.requests if r.path.endswith("/chat/completions")]) <= max(case.max_requests, 1)
        deadline = time.monotonic() + 2
        while (sim.in_flight or sim.open_connections > 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sim.in_flight == 0 and sim.open_connections <= 1  # no leaked connections


def test_one_of_two_endpoints_dead_is_invisible(registry):
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        client = make_client([f"http://127.0.0.1:{free_port()}/v1", sim.base_url], registry, **CREDS)
        for _ in range(10):
            assert run(client)[0] == WANT


def test_cold_endpoint_refusing_then_503_then_healthy(registry):
    from deepseek_engine.errors import ConnectError, ServerError
    sim = Simulator(SimConfig(served_model="deepseek-r1"))
    port = free_port()
    client = make_client(f"http://127.0.0.1:{port}/v1", registry, **CREDS)
    client.health.base_cooldown = 0.2  # the active prober re-admits in production; here time does
    with pytest.raises(ConnectError):
        run(client)  # weights loading: the port is not bound yet
    sim = Simulator(SimConfig(served_model="deepseek-r1"), port=port).start()
    try:
        sim.inject("status", count=10, status=503)
        time.sleep(0.25)
        with pytest.raises(ServerError):
            run(client)  # bound, but not ready
        sim.clear_faults()
        time.sleep(0.5)
        assert run(client)[0] == WANT
    finally:
        sim.stop()
