"""The promise at the edges, through one plugin process as Dify's daemon runs it: whatever a
hostile upstream does to one workspace's requests, the process keeps its heartbeat, its memory
stays bounded, and another workspace's requests to a healthy endpoint see no added delay.

Each hostile upstream is a loopback server (tests/loopback.py) that answers the way the hardening
issue's probes did: one 100 MB line, a trickling /v1/models, a gzip bomb of an error page, a
500 MB error body, a stream held open after [DONE] or kept alive by comments alone, one 6 MB
event, malformed and 100,000-deep JSON. The numbers the README states are checked here.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import zlib
from itertools import pairwise
from pathlib import Path

import pytest

from deepseek_sim import SimConfig, Simulator
from tests.loopback import Loopback
from tests.protocol.harness import user_message
from tests.protocol.plugin_util import PROVIDER, running_plugin

MIB = 1024 * 1024
PEAK_RSS_BOUND = 400 * MIB  # the README's memory bound for the plugin process (about 210 MB at rest)
HEARTBEAT = 0.5  # seconds between the SDK's heartbeats in this test (10 s in production)
HOSTILE_CREDS = {"timeouts": "connect=2 first_token=4 idle=2 total=12"}


def head(status: int, ctype: str, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\n{extra}"
            "connection: close\r\n\r\n").encode()


def _sse_event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def one_line_of(size: int):
    yield head(200, "text/event-stream")
    yield b"data: {\"choices\": [{\"delta\": {\"content\": \""
    for _ in range(size // MIB):
        yield b"x" * MIB
        yield 0.0


def trickle(status_line: bytes):
    yield status_line
    for _ in range(60):
        yield 2.0
        yield b" "


def gzip_bomb():
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    yield head(500, "application/json", "content-encoding: gzip\r\n")
    zeros = b"\0" * MIB
    for _ in range(1024):  # 1 GiB inflated, about 1 MB on the wire
        out = gz.compress(zeros)
        if out:
            yield out
            yield 0.0
    yield gz.flush()


def big_error(size: int):
    yield head(500, "text/plain")
    for _ in range(size // MIB):
        yield b"e" * MIB
        yield 0.0


def done_then_open():
    yield head(200, "text/event-stream")
    yield _sse_event({"choices": [{"index": 0, "delta": {"content": "short answer"}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})
    yield b"data: [DONE]\n\n"
    for _ in range(30):
        yield 1.0
        yield b": still here\n\n"


def comments_only():
    yield head(200, "text/event-stream")
    yield _sse_event({"choices": [{"index": 0, "delta": {"content": "a"}}]})
    for _ in range(60):
        yield 0.5
        yield b": keep-alive\n\n"


def six_mb_event():
    yield head(200, "text/event-stream")
    yield _sse_event({"choices": [{"index": 0, "delta": {"content": "y" * (6 * MIB)}}]})
    yield _sse_event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    yield b"data: [DONE]\n\n"


def deep_json():
    yield head(200, "text/event-stream")
    yield b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n"


def malformed():
    yield head(200, "text/event-stream")
    yield _sse_event({"choices": "Authorization: Bearer sk-never-shown-123"})


STREAMS = {
    "100MB-line": lambda: one_line_of(100 * MIB),
    "gzip-bomb-500": gzip_bomb,
    "500MB-error": lambda: big_error(500 * MIB),
    "done-then-held-open": done_then_open,
    "keep-alive-comments-only": comments_only,
    "6MB-event": six_mb_event,
    "100000-deep-json": deep_json,
    "malformed-choices": malformed,
    "trickled-chat": lambda: trickle(head(200, "text/event-stream") + b"data: {"),
}


def hostile_server(case: str) -> Loopback:
    def answer(req):
        if req.path.endswith("/models"):
            if case == "trickled-models":
                return trickle(head(200, "application/json") + b'{"data": [')
            return (head(200, "application/json")
                    + json.dumps({"data": [{"id": "deepseek-r1", "max_model_len": 8192}]}).encode())
        if req.path.endswith("/health"):
            return trickle(head(200, "text/plain")) if case == "trickled-health" else head(200, "text/plain")
        if req.path.endswith("/metrics"):
            return head(404, "text/plain")
        return STREAMS.get(case, STREAMS["trickled-chat"])()
    return Loopback(answer)


@pytest.fixture(scope="module")
def plugin():
    with running_plugin(HEARTBEAT_INTERVAL=str(HEARTBEAT), DEEPSEEK_HEALTH_INTERVAL="1") as p:
        yield p


@pytest.fixture(scope="module")
def healthy():
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        yield sim


def _ask(plugin, sim) -> float:
    c = {"endpoint_urls": sim.base_url, "served_model_name": "deepseek-r1"}
    t = time.monotonic()
    r = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {"max_tokens": 8}, timeout=30)
    assert r.error is None, r.error
    return time.monotonic() - t


def _reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def baseline(plugin, healthy):
    for _ in range(5):
        _ask(plugin, healthy)  # warm
    return statistics.median(_ask(plugin, healthy) for _ in range(15))


CASES = [*STREAMS, "trickled-models", "trickled-health"]


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_upstream_costs_the_others_nothing(plugin, healthy, baseline, case):
    _reset_peak_rss(plugin.pid)
    with hostile_server(case) as srv:
        c = {"endpoint_urls": srv.base_url, "served_model_name": None if case == "trickled-models" else "deepseek-r1",
             **HOSTILE_CREDS}
        outcome: dict = {}

        def hostile():
            t = time.monotonic()
            if case in ("trickled-models", "trickled-health"):
                r = plugin.validate_provider_credentials(PROVIDER, c, timeout=60)
            else:
                r = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=60)
            outcome.update(result=r, took=time.monotonic() - t)

        beats = len(plugin.heartbeat_times)
        worker = threading.Thread(target=hostile)
        worker.start()
        during = []
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end or (worker.is_alive() and len(during) < 200):
            during.append(_ask(plugin, healthy))
        worker.join(60)
        assert not worker.is_alive(), f"{case}: the hostile request never ended"
    result = outcome["result"]
    assert result.ended, case
    if case not in ("done-then-held-open", "6MB-event", "trickled-health"):
        assert result.error is not None and result.error["error_type"].startswith(("Invoke", "Credentials")), \
            (case, result.error)
    assert outcome["took"] < 30, (case, outcome["took"])
    times = plugin.heartbeat_times[beats:]
    assert len(times) >= 2 and max(b - a for a, b in pairwise(times)) < 5 * HEARTBEAT + 1, case
    assert statistics.median(during) < max(3 * baseline, baseline + 0.1), (case, baseline, statistics.median(during))
    assert _peak_rss(plugin.pid) < PEAK_RSS_BOUND, (case, _peak_rss(plugin.pid) // MIB)
    for line in result.raw_lines:
        assert len(line.encode()) + 1 <= 5 * MIB, case
    assert "sk-never-shown-123" not in str(result.raw_lines)
