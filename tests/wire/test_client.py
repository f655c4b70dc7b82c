"""The engine's chat client over real sockets: shapes, keep-alive, faults, deadlines."""

import time

import pytest

from deepseek_engine import AnswerAssembler, build_body
from deepseek_engine.errors import (
    AuthError,
    BadRequestError,
    ConnectError,
    EndpointsDownError,
    FirstTokenTimeout,
    IdleTimeout,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
    StreamBrokenError,
)
from deepseek_sim import SimConfig, Simulator
from tests.loopback import Loopback, response, sse
from tests.wire.wireutil import ROLE, chat_only, chunk, free_port, make_client, run

ANSWER = "Hello! I am a simulated DeepSeek model. How can I help you today?"
REASONING = "Okay, the user sent me a message. I should reply with a short, friendly greeting."
WANT = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"


@pytest.mark.parametrize("shape", ["reasoning", "reasoning_content", "think_inline", "think_close_only"])
def test_every_reasoning_shape_gives_one_think_block(shape, registry):
    with Simulator(SimConfig(served_model="deepseek-r1", shape=shape, sse_quirks=True)) as sim:
        text, a = run(make_client(sim.base_url, registry))
    assert text == WANT
    assert a.usage["completion_tokens"] > 0 and a.finish_reason == "stop"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
@pytest.mark.parametrize("shape", ["reasoning", "reasoning_content", "think_inline", "think_close_only"])
def test_merged_deltas_give_the_same_think_block(shape, flavor, n, registry):
    # vLLM merges tokens into one delta (a lagging API process, --stream-interval, MTP): reasoning
    # and content in one delta, text on the finish chunk, R1's whitespace around </think> kept.
    with Simulator(SimConfig(served_model="deepseek-r1", shape=shape, flavor=flavor, chunk_tokens=n)) as sim:
        text, a = run(make_client(sim.base_url, registry))
    assert text == WANT and a.finish_reason == "stop"


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_tool_call_after_reasoning_in_merged_deltas(flavor, n, registry):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    with Simulator(SimConfig(served_model="deepseek-r1", flavor=flavor, chunk_tokens=n)) as sim:
        body = build_body("deepseek-r1", [{"role": "user", "content": "weather?"}], {}, tools=[tool])
        a = AnswerAssembler(True)
        text, calls = "", []
        for d in make_client(sim.base_url, registry).stream(body):
            if p := a.feed(d):
                text, calls = text + p.text, calls + p.tool_calls
        last = a.finish()
    text, calls = text + last.text, calls + last.tool_calls
    assert text == "<think>\nThe user wants the weather. I should call the tool.\n</think>\n\n"
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", '{"location": "Paris"}')]
    assert a.finish_reason == "tool_calls"


def test_tools_on_a_server_without_tool_parser_are_a_bad_request(registry):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    with Simulator(SimConfig(served_model="deepseek-r1", tool_parser=False)) as sim:
        body = build_body("deepseek-r1", [{"role": "user", "content": "weather?"}], {}, tools=[tool])
        with pytest.raises(BadRequestError, match="--enable-auto-tool-choice and --tool-call-parser"):
            list(make_client(sim.base_url, registry).stream(body))
        assert len(sim.requests) == 1  # never retried


def test_request_asks_for_usage_and_streams(sim, registry):
    run(make_client(sim.base_url, registry))
    body = sim.requests[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_keep_alive_reused_across_calls(sim, registry):
    client = make_client(sim.base_url, registry)
    for _ in range(5):
        run(client)
    assert sim.connections_opened == 1


def test_stream_without_done_but_finished_is_fine(registry):
    with Simulator(SimConfig(served_model="deepseek-r1", send_done=False, usage="always_on_finish")) as sim:
        text, a = run(make_client(sim.base_url, registry))
    assert text == WANT and a.usage is not None


def test_auth_error_names_endpoint_and_hides_key(registry):
    with Simulator(SimConfig(served_model="deepseek-r1", api_key="right-key")) as sim:
        with pytest.raises(AuthError) as e:
            run(make_client(sim.base_url, registry, api_key="wrong-key-123"))
        assert "wrong-key-123" not in str(e.value)
        assert f"127.0.0.1:{sim.port}" in str(e.value)
        text, _ = run(make_client(sim.base_url, registry, api_key="right-key"))
        assert text == WANT


def test_context_overflow_is_bad_request_with_server_message(registry):
    with Simulator(SimConfig(served_model="deepseek-r1", max_model_len=64)) as sim:
        with pytest.raises(BadRequestError, match="maximum context length is 64 tokens"):
            run(make_client(sim.base_url, registry), content="word " * 100)
        assert len(sim.requests) == 1  # never retried


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_max_tokens_over_the_servers_context_is_lowered_to_what_fits(flavor, registry):
    """Dify's catalogue default (8192 for R1) against a replica started with a small
    --max-model-len: sent again asking for what fits, on the same endpoint, instead of an error."""
    with Simulator(SimConfig(served_model="deepseek-r1", flavor=flavor, max_model_len=300)) as sim:
        client = make_client(sim.base_url, registry)
        text, a = run(client, max_tokens=8192)
        assert text == WANT and a.finish_reason == "stop"
        prompt = a.usage["prompt_tokens"]
        # vLLM refuses max_tokens over max_model_len (and lets the prompt use the rest); SGLang
        # refuses prompt + max_tokens >= its context length
        fit = 300 if flavor == "vllm" else 300 - prompt - 1
        assert [r.body["max_tokens"] for r in sim.requests] == [8192, fit]
        assert not client.health.all_down(client.settings.endpoints)  # not the endpoint's fault
        with pytest.raises(BadRequestError, match="context length"):  # nothing fits: the error stands
            run(client, content="word " * 400, max_tokens=8192)


def test_unknown_model_404(sim, registry):
    client = make_client(sim.base_url, registry)
    from deepseek_engine import build_body
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        list(client.stream(build_body("nope", [{"role": "user", "content": "hi"}], {})))


def test_refused_is_a_connect_error_quickly(registry):
    port = free_port()
    t = time.monotonic()
    with pytest.raises(ConnectError, match="connection refused; check that the server is running "
                                           "and the URL and port are right"):
        run(make_client(f"http://127.0.0.1:{port}/v1", registry))
    assert time.monotonic() - t < 2


@pytest.mark.parametrize("fault", [
    dict(kind="status", status=500),
    dict(kind="status", status=503),
    dict(kind="html_502"),
    dict(kind="reset_before_headers"),
    dict(kind="status", status=429, headers={"Retry-After": "0.2"}),
    dict(kind="drop_mid_stream", after=1),  # before any token: nothing shown, so retried
])
def test_transient_failures_before_output_are_retried_transparently(sim, registry, fault):
    sim.inject(**fault)
    text, _ = run(make_client(sim.base_url, registry))
    assert text == WANT
    assert len(sim.requests) == 2


def test_retry_after_is_honoured(sim, registry):
    sim.inject("status", status=429, headers={"Retry-After": "0.4"})
    t = time.monotonic()
    run(make_client(sim.base_url, registry))
    assert time.monotonic() - t >= 0.4


def test_persistent_429_is_a_rate_limit_error(sim, registry):
    sim.inject("status", count=5, status=429, headers={"Retry-After": "0"})
    with pytest.raises(RateLimitError):
        run(make_client(sim.base_url, registry))
    assert len(sim.requests) == 3  # at most 3 attempts


def test_html_502_message_is_readable(sim, registry):
    sim.inject("html_502", count=5)
    with pytest.raises(ServerError, match="502"):
        run(make_client(sim.base_url, registry))


@pytest.mark.parametrize("fault,exc", [
    (dict(kind="drop_mid_stream", after=8), StreamBrokenError),
    (dict(kind="malformed_chunk", after=8), StreamBrokenError),
    (dict(kind="error_event", after=8), ServerError),
])
def test_failures_after_output_are_continued_never_repeated(sim, registry, fault, exc):
    sim.inject(**fault)
    text, _ = run(make_client(sim.base_url, registry), max_tokens=200)
    assert text == WANT  # the rest of the answer, nothing shown twice
    first, again = sim.requests
    assert "continue_final_message" not in first.body
    assert again.body["continue_final_message"] is True and again.body["add_generation_prompt"] is False
    assert again.body["max_tokens"] == 200 - 7  # the budget left: 7 tokens followed the role chunk
    shown = again.body["messages"][-1]
    assert shown["role"] == "assistant" and WANT.startswith(shown["content"]) and shown["content"]
    # a fault that keeps coming: the typed error after two continuations
    sim.requests.clear()
    sim.inject(**fault, count=9)
    with pytest.raises(exc):
        run(make_client(sim.base_url, registry))
    assert len(sim.requests) == 3


@pytest.mark.parametrize("after", [3, 12, 22, 27])
@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
@pytest.mark.parametrize("shape", ["reasoning", "reasoning_content", "think_inline", "think_close_only"])
def test_a_cut_anywhere_is_continued_into_the_same_answer(shape, flavor, after, registry):
    """Cut during the reasoning, at its end, or in the answer, from every server shape: one
    think block, then the answer, each token once."""
    with Simulator(SimConfig(served_model="deepseek-r1", shape=shape, flavor=flavor)) as sim:
        sim.inject("drop_mid_stream", after=after)
        text, a = run(make_client(sim.base_url, registry))
        assert text == WANT and a.finish_reason == "stop"
        assert len(sim.requests) == 2 and sim.requests[1].body["continue_final_message"] is True
        assert a.usage is None  # the continuing server counts the shown part as prompt: the edge counts offline


def test_a_cut_after_the_finish_reason_loses_nothing(sim, registry):
    sim.inject("drop_mid_stream", after=30)  # after the finish chunk: only usage and [DONE] lost
    text, a = run(make_client(sim.base_url, registry))
    assert text == WANT and a.finish_reason == "stop" and len(sim.requests) == 1


def test_a_tool_call_cut_mid_way_is_not_continued(registry):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        sim.inject("drop_mid_stream", after=17)  # after the reasoning, inside the call
        body = build_body("deepseek-r1", [{"role": "user", "content": "weather?"}], {}, tools=[tool])
        deltas = []
        with pytest.raises(StreamBrokenError):
            for d in make_client(sim.base_url, registry).stream(body):
                deltas.append(d)
        assert any(d.tool_calls for d in deltas)  # the cut came inside the call
        assert len(sim.requests) == 1  # its arguments cannot be continued reliably


def test_stall_ends_at_the_idle_deadline(sim, registry):
    """The stalled stream is given up at the idle deadline, not at 300 s. A lone endpoint is not
    asked again (a server that stopped mid-answer is likely stuck): the typed error, at once."""
    sim.inject("stall_mid_stream", after=8, seconds=5)
    t = time.monotonic()
    with pytest.raises(IdleTimeout, match=r"stalled: nothing for 0.5s; .* raise idle= in timeouts"):
        run(make_client(sim.base_url, registry, timeouts="idle=0.5"))
    assert 0.4 < time.monotonic() - t < 1.2
    assert len(sim.requests) == 1


def test_a_stall_is_continued_on_another_endpoint_within_idle(registry):
    """With another endpoint up, the stalled answer goes on there from the last token shown; the
    continuation must start within idle too (the user is waiting mid-answer), or the stall's
    error stands."""
    with Simulator(SimConfig(served_model="deepseek-r1")) as stuck, \
            Simulator(SimConfig(served_model="deepseek-r1")) as other:
        urls = [stuck.base_url, f"{other.base_url} priority=1"]
        stuck.inject("stall_mid_stream", after=8, seconds=5)
        t = time.monotonic()
        assert run(make_client(urls, registry, timeouts="idle=0.5"))[0] == WANT
        assert 0.4 < time.monotonic() - t < 1.5
        assert [r.body["continue_final_message"] for r in other.requests] == [True]
        assert len(stuck.requests) == 1  # never asked to continue what it stalled on

        stuck.inject("stall_mid_stream", after=8, seconds=5)
        other.config.ttft = 5  # busy: would start the continuation in 5 s, past idle
        t = time.monotonic()
        with pytest.raises(IdleTimeout):
            run(make_client(urls, registry, timeouts="idle=0.5"))
        assert time.monotonic() - t < 3.5  # each try at a continuation waits idle at most


def test_slow_first_token_ends_at_the_first_token_deadline(registry):
    with Simulator(SimConfig(served_model="deepseek-r1", ttft=3)) as sim:
        t = time.monotonic()
        with pytest.raises(FirstTokenTimeout):
            run(make_client(sim.base_url, registry, timeouts="first_token=0.4 idle=10"))
        elapsed = time.monotonic() - t
    assert elapsed < 2.5  # 3 attempts x 0.4 s plus backoff, never the 3 s stall


def test_long_prefill_is_not_mistaken_for_a_stall(registry):
    with Simulator(SimConfig(served_model="deepseek-r1", ttft=0.8)) as sim:
        text, _ = run(make_client(sim.base_url, registry, timeouts="first_token=5 idle=0.3"))
    assert text == WANT


def test_one_dead_endpoint_of_two_is_invisible(sim, registry):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    client = make_client([dead, sim.base_url], registry)
    for _ in range(6):
        assert run(client)[0] == WANT


def test_all_endpoints_down_answers_at_once_naming_each(registry):
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    client = make_client(urls, registry)
    with pytest.raises(EndpointsDownError) as e:
        run(client)
    assert all(u.split("//")[1] in str(e.value) for u in urls)
    for _ in range(2):  # get both ejected
        with pytest.raises(ConnectError):
            run(client)
    t = time.monotonic()
    with pytest.raises(EndpointsDownError, match="all endpoints are down") as e:
        run(client)
    assert time.monotonic() - t < 0.05
    text = str(e.value)  # the action once, at the end; each endpoint's reason without it
    assert text.endswith("; check that the servers are running and reachable")
    assert text.count("check") == 1 and text.count("connection refused") == 2


def test_early_close_closes_the_upstream_stream(registry):
    with Simulator(SimConfig(served_model="deepseek-r1", inter_token=0.02)) as sim:
        client = make_client(sim.base_url, registry)
        from deepseek_engine import build_body
        gen = client.stream(build_body("deepseek-r1", [{"role": "user", "content": "[[long]]"}], {"max_tokens": 2000}))
        for _, _d in zip(range(5), gen, strict=False):
            pass
        gen.close()
        deadline = time.monotonic() + 2
        while sim.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sim.open_connections == 0


def test_every_endpoint_rate_limited_stays_a_rate_limit_error(registry):
    with Simulator(SimConfig(served_model="deepseek-r1")) as a, Simulator(SimConfig(served_model="deepseek-r1")) as b:
        for s in (a, b):
            s.inject("status", count=5, status=429, headers={"Retry-After": "0"})
        with pytest.raises(RateLimitError, match="every endpoint failed") as e:
            run(make_client([a.base_url, b.base_url], registry))
    assert f"127.0.0.1:{a.port}" in str(e.value) and f"127.0.0.1:{b.port}" in str(e.value)


def test_a_backlog_is_reported_ready_and_a_paced_stream_is_not(registry):
    """A back-to-back stream is read on while more has already arrived (h11's buffer, the
    socket) and passed on as few deltas of many events, the adapter told when still more is in
    hand; no delta of a paced stream is reported ready (a CRLF left of the last HTTP chunk is not
    an event)."""
    def deltas(sim, max_tokens):
        client = make_client(sim.base_url, registry)
        body = build_body("deepseek-r1", [{"role": "user", "content": "[[long]]"}], {"max_tokens": max_tokens})
        return [(d.events, client.more_ready) for d in client.stream(body)]

    def readiness(sim, max_tokens):
        flags = [ready for _, ready in deltas(sim, max_tokens)]
        return sum(flags) / len(flags)

    # the whole answer (about 260 KB, several network reads) in one write: a backlog whatever the
    # machine's load (a fast simulator sharing this process's GIL was sometimes read as it wrote)
    backlog = sse(ROLE, *[chunk(f"lorem {i} ") for i in range(2000)], chunk(finish="length"), b"[DONE]")
    with Loopback(chat_only(lambda req: response(200, backlog, "text/event-stream"))) as fast:
        got = deltas(fast, 2000)
    assert sum(n for n, _ in got) / len(got) >= 8 and any(ready for _, ready in got), got
    # 20 ms apart: a test process descheduled for a few ms on a loaded machine (CI's two cores,
    # other tiers) finds tokens waiting, and those are rightly reported ready
    with Simulator(SimConfig(served_model="deepseek-r1", inter_token=0.02)) as paced:
        assert readiness(paced, 100) < 0.15


def test_a_replica_that_breaks_every_stream_part_way_is_ejected(registry):
    """Passive health counts failures after the first token too: each stream the primary cuts
    mid-way is continued on the other replica; three such cuts set the primary aside, and the
    next requests go to the other one from the start."""
    from deepseek_engine.health import HealthBook

    with (Simulator(SimConfig(served_model="deepseek-r1")) as flaky,
          Simulator(SimConfig(served_model="deepseek-r1")) as good):
        flaky.inject("drop_mid_stream", count=10, after=5)
        client = make_client([flaky.base_url, f"{good.base_url} priority=1"], registry)
        client.health = HealthBook(threshold=3, base_cooldown=30)
        client.router.health = client.health
        for _ in range(3):  # the primary takes them and cuts each after its first tokens
            assert run(client)[0] == WANT
        continued = [r.body for r in good.requests if r.path.endswith("/chat/completions")]
        assert len(continued) == 3 and all(b["continue_final_message"] for b in continued)
        assert not client.health.state(flaky.base_url).available(time.monotonic())
        assert run(client)[0] == WANT  # now the backup answers, whole
        chats = [r.body for r in good.requests if r.path.endswith("/chat/completions")]
        assert len(chats) == 4 and "continue_final_message" not in chats[-1]


def test_a_url_password_goes_out_as_basic_auth_on_chat_requests(registry):
    import base64

    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        url = sim.base_url.replace("http://", "http://ops:s3cret-pw@")
        assert run(make_client(url, registry))[0] == WANT
        chats = [r for r in sim.requests if r.path.endswith("/chat/completions")]
    sent = {k.lower(): v for k, v in chats[-1].headers.items()}
    assert sent["authorization"] == "Basic " + base64.b64encode(b"ops:s3cret-pw").decode()
