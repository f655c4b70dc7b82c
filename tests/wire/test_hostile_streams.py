"""Hostile upstreams on loopback: streams that never end, trickle, swell, lie about usage or send
shapes that are not the protocol. Each must end within its deadline as a typed error (failing over
to a healthy endpoint while nothing was shown), never hang the process or reach the caller raw."""

import json
import time

import pytest

from deepseek_engine import AnswerAssembler, build_body
from deepseek_engine.errors import BadRequestError, FirstTokenTimeout, IdleTimeout, StreamBrokenError, TotalTimeout
from deepseek_engine.sse import MAX_EVENT_CHARS
from tests.loopback import Loopback, response, sse
from tests.wire.wireutil import ROLE, WANT, chat_only, chunk, make_client, run

CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


def framed(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def body(**params) -> dict:
    return build_body("m", [{"role": "user", "content": "hi"}], params)


def assemble(client, **params):
    """(text, assembler) of one streamed chat read to its end (``finish`` included)."""
    a = AnswerAssembler(expect_reasoning=False)
    text = ""
    for d in client.stream(body(**params)):
        if p := a.feed(d):
            text += p.text
    return text + a.finish().text, a


# -- 2: one huge line ends quickly with a typed error, and fails over ----------------------
def _huge_line(req):
    mib = b"x" * (1 << 20)
    return [UNTIL_CLOSE, b'data: {"choices": [{"delta": {"content": "', *[mib] * 100, b'"}}]}\n\n']


def test_a_100_mb_line_is_refused_at_the_event_bound_not_read_whole(registry):
    with Loopback(chat_only(_huge_line)) as srv:
        client = make_client(srv.base_url, registry, timeouts="total=60")
        began = time.monotonic()
        with pytest.raises(StreamBrokenError) as e:
            list(client.stream(body()))
        took = time.monotonic() - began
    assert took < 10, f"{took:.1f}s: the line was read whole (or quadratically)"
    assert e.value.endpoint and e.value.endpoint in srv.base_url
    assert f"{MAX_EVENT_CHARS:,} characters" in e.value.message


def test_a_huge_line_before_the_first_token_fails_over_to_a_healthy_endpoint(sim, registry):
    with Loopback(chat_only(_huge_line)) as bad:
        client = make_client([bad.base_url, sim.base_url + " priority=1"], registry, timeouts="total=60")
        began = time.monotonic()
        text, _ = run(client)
        assert time.monotonic() - began < 10
        assert len(bad.requests) == 1
    assert text == WANT
    assert client.health.state(bad.base_url).consecutive_failures == 1  # counted against it


# -- 5: [DONE] ends the stream, whatever the server does next -------------------------------
ANSWERED = sse(ROLE, chunk("Hi"), chunk(finish="stop"), chunk(usage=USAGE), b"[DONE]")


@pytest.mark.parametrize("after", [[30], [0.5, framed(sse(chunk(" more"))), 0.5, framed(b": x\n\n")] * 30],
                         ids=["held-open", "keeps-sending"])
def test_a_stream_ends_at_done_with_its_usage_at_once(registry, after):
    with Loopback(chat_only(lambda req: [CHUNKED + framed(ANSWERED), *after])) as srv:
        began = time.monotonic()
        text, a = assemble(make_client(srv.base_url, registry, timeouts="idle=20 total=60"))
        took = time.monotonic() - began
    assert took < 3, f"the end waited {took:.1f}s for the server"
    assert text == "Hi" and a.finish_reason == "stop" and a.usage == USAGE


# -- 6: the idle deadline counts events, not bytes ------------------------------------------
def _keep_alives(req):
    return [CHUNKED + framed(sse(ROLE, chunk("Hi"))), *[0.5, framed(b": keep-alive\n\n")] * 60]


def _byte_a_tick(req):
    event = json.dumps(chunk(" there")).encode()
    return [CHUNKED + framed(sse(ROLE, chunk("Hi"))), framed(b"data: "),
            *[p for b in event for p in (0.5, framed(bytes([b])))]]


@pytest.mark.parametrize("answer", [_keep_alives, _byte_a_tick], ids=["comments", "byte-trickle"])
def test_comments_or_a_trickle_do_not_keep_a_stream_alive_past_idle(registry, answer):
    with Loopback(chat_only(answer)) as srv:
        client = make_client(srv.base_url, registry, timeouts="idle=2 total=60")
        began = time.monotonic()
        with pytest.raises(IdleTimeout, match="nothing for 2s"):
            assemble(client)
        took = time.monotonic() - began
    assert took < 8, f"{took:.1f}s: the idle deadline counted bytes"


def test_comments_before_the_first_token_end_at_first_token(registry):
    comments = [CHUNKED, *[0.5, framed(b": keep-alive\n\n")] * 60]
    with Loopback(chat_only(lambda req: comments)) as srv:
        client = make_client(srv.base_url, registry, timeouts="first_token=1 idle=20 total=60")
        began = time.monotonic()
        with pytest.raises(FirstTokenTimeout):
            list(client.stream(body()))
        assert time.monotonic() - began < 8


def test_a_stream_that_keeps_sending_events_ends_at_total(registry):
    events = [CHUNKED + framed(sse(ROLE, chunk("Hi"))), *[0.3, framed(sse(chunk(".")))] * 100]
    with Loopback(chat_only(lambda req: events)) as srv:
        client = make_client(srv.base_url, registry, timeouts="idle=2 total=3")
        began = time.monotonic()
        with pytest.raises(TotalTimeout):
            assemble(client)
        assert time.monotonic() - began < 8


# -- 11: a malformed server is typed, counted against it, and failed over -------------------
def _bad_tool(**call) -> dict:
    return chunk(tool_calls=[{"index": 0, "id": "t", "type": "function",
                              "function": {"name": "f", "arguments": "{}"}, **call}])


NESTED = b"[" * 100_000 + b"]" * 100_000
STREAMED = {
    "choices-number": {"id": "c", "choices": 5},
    "choices-string": {"id": "c", "choices": "hello"},
    "delta-string": {"id": "c", "choices": [{"index": 0, "delta": "hello", "finish_reason": None}]},
    "usage-string": {"id": "c", "choices": [], "usage": "lots"},
    "usage-list": {"id": "c", "choices": [], "usage": [5, 2]},
    "finish-object": chunk("x", finish={"why": "stop"}),
    "tool-name-number": _bad_tool(function={"name": 5, "arguments": "{}"}),
    "tool-index-list": _bad_tool(index=[0]),
    "nested-100000": NESTED,
}
COMPLETED = {
    "completion-choices-number": {"id": "c", "object": "chat.completion", "choices": 5},
    "completion-message-string": {"id": "c", "object": "chat.completion",
                                  "choices": [{"index": 0, "message": "hello", "finish_reason": "stop"}]},
    "completion-nested-100000": NESTED,
}


def _malformed(name):
    if name in COMPLETED:
        bad = COMPLETED[name]
        return lambda req: response(200, bad if isinstance(bad, bytes) else json.dumps(bad).encode())
    rest = sse(ROLE, chunk("wrong server"), chunk(finish="stop"), b"[DONE]")
    return lambda req: response(200, sse(STREAMED[name]) + rest, "text/event-stream")


@pytest.mark.parametrize("name", [*STREAMED, *COMPLETED])
def test_a_malformed_server_is_typed_and_failed_over(sim, registry, name):
    with Loopback(chat_only(_malformed(name))) as bad:
        client = make_client([bad.base_url, sim.base_url + " priority=1"], registry)
        text, _ = run(client)
        assert len(bad.requests) == 1
    assert text == WANT
    health = client.health.state(bad.base_url)
    assert health.consecutive_failures == 1 and "malformed" in health.last_error


@pytest.mark.parametrize("name", [*STREAMED, *COMPLETED])
def test_a_lone_malformed_server_is_a_stream_broken_error_naming_it(registry, name):
    with Loopback(chat_only(_malformed(name))) as bad:
        with pytest.raises(StreamBrokenError, match="malformed") as e:
            list(make_client(bad.base_url, registry).stream(body()))
    assert e.value.endpoint and e.value.endpoint in bad.base_url


# -- 12: usage that cannot be true is counted offline, never passed on ---------------------
@pytest.mark.parametrize("usage,kept", [
    (b'{"prompt_tokens": -5, "completion_tokens": 2}', {"completion_tokens": 2}),
    (b'{"prompt_tokens": 5, "completion_tokens": 1e999}', {"prompt_tokens": 5}),
    (b'{"prompt_tokens": "5", "completion_tokens": null}', {}),
    (b'{"prompt_tokens": 5.5, "completion_tokens": true}', {}),
    (b'{"prompt_tokens": 100000000000, "completion_tokens": 2.0}', {"completion_tokens": 2}),
])
def test_usage_counts_that_cannot_be_true_are_dropped(registry, usage, kept):
    answer = sse(ROLE, chunk("Hi"), chunk(finish="stop")) + b'data: {"id": "c", "choices": [], "usage": ' \
        + usage + b"}\n\n" + sse(b"[DONE]")
    with Loopback(chat_only(lambda req: response(200, answer, "text/event-stream"))) as srv:
        text, a = assemble(make_client(srv.base_url, registry))
    assert text == "Hi"
    assert (a.usage or {}) == kept  # every true count is kept, as an int
    assert all(type(v) is int for v in (a.usage or {}).values())


# -- 16: the max_tokens budget and cut tool calls -------------------------------------------
def _one_event_per_read(*events) -> list[bytes]:
    return [CHUNKED, *(framed(sse(e)) for e in events)]


@pytest.mark.parametrize("shown,finish,asked", [("abc", "length", [3]), ("ab", "stop", [3, 1])],
                         ids=["spent", "one-left"])
def test_a_stream_cut_at_its_budget_ends_as_length_not_one_token_more(registry, shown, finish, asked):
    """max_tokens=3 and the connection drops: after 3 tokens the answer is finished ("length"),
    after 2 it is continued for the last one."""
    cut = [UNTIL_CLOSE, *(sse(e) for e in (ROLE, *map(chunk, shown)))]
    rest = response(200, sse(ROLE, chunk("c"), chunk(finish="stop"), b"[DONE]"), "text/event-stream")
    with Loopback(chat_only(lambda req: rest if srv.requests[1:] else cut)) as srv:
        text, a = assemble(make_client(srv.base_url, registry), max_tokens=3)
        sent = [json.loads(r.body)["max_tokens"] for r in srv.requests]
    assert (text, a.finish_reason, sent) == ("abc", finish, asked)


CALL = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
CUT_ARGS = {"index": 0, "function": {"arguments": '{"location": "Par'}}


@pytest.mark.parametrize("end,exc,says", [
    ([chunk(finish="length"), chunk(usage=USAGE), b"[DONE]"], BadRequestError, "raise max_tokens"),
    ([b"[DONE]"], StreamBrokenError, "the stream ended before the tool call"),
], ids=["length", "done-without-finish"])
def test_a_tool_call_with_cut_arguments_is_never_delivered(registry, end, exc, says):
    events = sse(ROLE, chunk(tool_calls=[CALL]), chunk(tool_calls=[CUT_ARGS]), *end)
    with Loopback(chat_only(lambda req: response(200, events, "text/event-stream"))) as srv:
        client = make_client(srv.base_url, registry)
        a = AnswerAssembler(expect_reasoning=False)
        calls = []
        with pytest.raises(exc, match="cut off") as e:
            for d in client.stream(body(max_tokens=16)):
                if p := a.feed(d):
                    calls += p.tool_calls
            calls += a.finish().tool_calls
    assert calls == [] and says in str(e.value)
