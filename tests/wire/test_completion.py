"""One request through the engine's ``Completion`` over real loopback sockets: pieces out, a last
piece with the finish reason and the token counts, arrived tokens sent together, paced ones one
by one, the token counts made offline when the server sends none, one telemetry record a request."""

import time

import pytest

from deepseek_engine import ChatClient, Completion, Finished
from deepseek_engine.errors import AuthError, ConfigError, EngineError
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryBudget, RetryPolicy
from deepseek_engine.telemetry import TELEMETRY
from deepseek_sim import SimConfig, Simulator
from tests.wire.wireutil import ANSWER, REASONING, WANT

HI = [{"role": "user", "content": "hi"}]
LONG = [{"role": "user", "content": "[[long]]"}]


def until(cond, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


@pytest.fixture
def done(monkeypatch):
    """The telemetry records of the requests made (TELEMETRY.request_done's keyword arguments)."""
    seen = []
    monkeypatch.setattr(TELEMETRY, "request_done", lambda **kw: seen.append(kw))
    return seen


def completion(sim, registry, messages=HI, parameters=None, **kw):
    def make_client(settings):
        policy = RetryPolicy(backoff_base=0.01, backoff_cap=0.05, budget=RetryBudget(cap=100))
        return ChatClient(settings, registry=registry, health=HealthBook(), policy=policy, prober=None)

    creds = {"endpoint_urls": sim.base_url, "served_model_name": "deepseek-r1", **kw.pop("creds", {})}
    return Completion(creds, "deepseek-r1", messages, parameters or {}, catalogue=True,
                      make_client=make_client, **kw)


def test_an_answer_comes_in_pieces_then_finished_with_the_servers_usage(sim, registry, done):
    c = completion(sim, registry)
    pieces = list(c.pieces())
    *body, last = pieces
    assert isinstance(last, Finished) and not any(isinstance(p, Finished) for p in body)
    assert "".join(p.text for p in pieces) == WANT
    assert last.finish_reason == "stop" and last.prompt_tokens > 0
    assert last.completion_tokens == len((REASONING + " " + ANSWER).split())  # the simulator's count
    chat = [r for r in sim.requests if r.path.endswith("/chat/completions")]
    assert chat[0].headers["x-request-id"] == c.request_id and c.request_id.startswith("dify-")
    [record] = done
    assert record["outcome"] == "ok" and record["error"] is None and record["request_id"] == c.request_id
    assert record["endpoint"] == f"127.0.0.1:{sim.port}/v1" and record["ttft"] is not None
    assert record["completion_tokens"] == last.completion_tokens and record["stream"] is True


def test_a_backlog_goes_out_in_few_pieces_and_a_paced_stream_token_by_token(registry, done):
    with Simulator(SimConfig(served_model="deepseek-r1")) as fast:
        batched = list(completion(fast, registry, LONG, {"max_tokens": 400}).pieces())
    # 400 tokens received back to back: merged into far fewer pieces, nothing lost
    assert len(batched) < 200 and sum(len(p.text.split()) for p in batched) >= 390
    with Simulator(SimConfig(served_model="deepseek-r1", inter_token=0.05)) as paced:
        c = completion(paced, registry, LONG, {"max_tokens": 20})
        c.pressure = _Lag(0.0)  # a process that keeps up, whatever this machine's load says
        one_by_one = list(c.pieces())
    # 50 ms apart: none waits for the next (3 spare for a loaded machine's longer hiccups)
    assert len(one_by_one) >= 20 - 3, len(one_by_one)


def test_without_usage_the_tokens_are_counted_offline_through_offload(registry, done):
    ran = []

    def offload(fn, *args):
        ran.append(fn.__name__)
        return fn(*args)

    with Simulator(SimConfig(served_model="deepseek-r1", usage="never")) as sim:
        *_, last = completion(sim, registry, offload=offload).pieces()
    assert ran == ["count_messages", "count_text"]
    assert last.prompt_tokens > 0 and last.completion_tokens > 0
    assert done[0]["prompt_tokens"] == last.prompt_tokens


def test_closing_early_closes_the_upstream_stream_and_is_recorded_cancelled(registry, done):
    with Simulator(SimConfig(served_model="deepseek-r1", inter_token=0.02)) as sim:
        pieces = completion(sim, registry, LONG, {"max_tokens": 2000}).pieces()
        for _, _p in zip(range(5), pieces, strict=False):
            pass
        pieces.close()
        assert until(lambda: sim.open_connections == 0, 2)
    assert [r["outcome"] for r in done] == ["cancelled"]


def test_engine_errors_are_raised_as_they_are_and_recorded(sim, registry, done):
    sim.inject("status", status=401)
    c = completion(sim, registry)
    with pytest.raises(AuthError):
        list(c.pieces())
    assert c.settings is not None  # what the caller scrubs the error's text with
    with pytest.raises(ConfigError):
        list(completion(sim, registry, creds={"timeouts": "idle=-1"}).pieces())
    assert [(r["outcome"], r["error"]) for r in done] == [("error", "AuthError"), ("error", "ConfigError")]
    assert done[1]["endpoint"] is None


def test_what_arrived_before_a_failure_comes_out_first(sim, registry, done):
    sim.inject("error_event", count=5, after=6, message="the GPU fell over")  # continuations too
    got = []
    with pytest.raises(EngineError, match="the GPU fell over"):
        for p in completion(sim, registry).pieces():
            got.append(p.text)
    assert "".join(got) and WANT.startswith("".join(got))
    assert done[0]["outcome"] == "error"


class _Lag:
    """A simulated busy process: the pressure signal fixed at ``window``; sleeps recorded."""

    def __init__(self, window: float) -> None:
        self.w, self.slept, self.lag = window, [], 0.0

    def window(self) -> float:
        return self.w

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        time.sleep(seconds)

    def opened(self) -> None:
        pass

    def closed(self) -> None:
        pass


def test_under_lag_paced_tokens_merge_within_the_window_and_one_by_one_when_idle(registry):
    """Issue 16: GPU-paced tokens (10 ms apart) from a process that is behind go out as fuller
    pieces, the reader never waiting more than MERGE_WINDOW; the same stream from a process
    that keeps up goes out a token a piece (tokens 50 ms apart: a loaded machine's hiccups
    cannot gather them)."""
    from deepseek_engine.pressure import MERGE_WINDOW

    def pieces(gap: float, window: float, tokens: int) -> tuple[list, _Lag]:
        with Simulator(SimConfig(served_model="deepseek-r1", inter_token=gap)) as sim:
            c = completion(sim, registry, LONG, {"max_tokens": tokens})
            c.pressure = lag = _Lag(window)
            return [p for p in c.pieces() if p.text][:-1], lag  # the last carries the end

    busy, lag = pieces(0.01, MERGE_WINDOW, 80)
    assert len(busy) <= 80 // 3, len(busy)  # ~8 tokens a piece; 3 leaves room for a slow machine
    assert lag.slept and max(lag.slept) <= MERGE_WINDOW
    idle, lag = pieces(0.05, 0.0, 16)
    assert len(idle) >= 16 - 3 and not lag.slept, len(idle)
