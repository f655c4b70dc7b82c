"""Hostile upstreams against the plugin as the daemon runs it: an event too large for one of the
daemon's lines, usage that cannot be true, malformed and swollen streams. The plugin must answer
with chunks the daemon can read (every stdout line under 5 MiB) or a typed error, fail over to a
healthy endpoint while nothing was shown, and stay alive."""

from __future__ import annotations

import json
import time

import pytest

from deepseek_sim import SimConfig, Simulator
from tests.loopback import Loopback, response
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import MAX_LINE_BYTES, user_message
from tests.protocol.plugin_util import PROVIDER, running_plugin

MODEL = "deepseek-v3"  # a catalogue model that does not reason: the content is shown as sent
SERVED = "m"
ANSWER = "Hello! I am a simulated DeepSeek model. How can I help you today?"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}
# 6,000,000 characters; its event is about 7 MB (quotes and newlines are escaped in JSON), within
# the plugin's 8 MiB bound on one event but over the daemon's 5 MiB bound on one line
BIG = ('Lorem ipsum "dolor" sit amet, é 你好\n' * 200_000)[:6_000_000]
USAGE = {"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1_500_000,
                                             "total_tokens": 1_500_005}}  # no offline count of BIG


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


def chunk(content=None, *, finish=None, tool_calls=None) -> dict:
    delta = {k: v for k, v in (("content", content), ("tool_calls", tool_calls)) if v is not None}
    return {"id": "c", "object": "chat.completion.chunk", "model": SERVED,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def events(*items) -> bytes:
    """An event stream of ``items`` (dicts as JSON without ASCII escapes, bytes as they are)."""
    return b"".join(b"data: " + (i if isinstance(i, bytes) else json.dumps(i, ensure_ascii=False).encode())
                    + b"\n\n" for i in items)


def upstream(answer):
    """A loopback server whose chat completions get ``answer`` (a warm-up gets a short one) and
    whose /models lists ``SERVED``; anything else (health probes) is a 404."""
    short = response(200, events(chunk("hi"), chunk(finish="length"), b"[DONE]"), "text/event-stream")

    def route(req):
        if req.path.endswith("/models"):
            return response(200, json.dumps({"object": "list", "data": [{"id": SERVED}]}).encode())
        if not req.path.endswith("/chat/completions"):
            return response(404, b"{}")
        return short if json.loads(req.body).get("max_tokens") == 1 else answer(req)
    return Loopback(route)


def creds(*urls: str) -> dict:
    return {"endpoint_urls": ", ".join(urls), "api_key": None, "served_model_name": SERVED}


def chat(plugin, credentials, **kw):
    return plugin.invoke_llm(PROVIDER, MODEL, credentials, [user_message("hi")], kw.pop("params", {}),
                             timeout=60, **kw)


def assert_lines_fit(plugin, result):
    assert result.ended and result.line_lengths, result.failure
    assert max(result.line_lengths) < MAX_LINE_BYTES
    assert plugin.max_line_length < MAX_LINE_BYTES  # nothing else the plugin wrote either
    assert plugin.alive


def assert_still_serving(plugin):
    with Simulator(SimConfig(served_model=SERVED, shape="plain")) as sim:
        result = chat(plugin, creds(sim.base_url))
    assert result.error is None and cr.collect_text(result) == ANSWER


# -- 8: a large event reaches Dify in chunks the daemon can read -----------------------------
def test_a_6_mb_event_reaches_dify_whole_in_chunks_under_the_line_limit(plugin):
    stream = response(200, events(chunk(BIG), chunk(finish="stop"), USAGE, b"[DONE]"), "text/event-stream")
    with upstream(lambda req: stream) as srv:
        result = chat(plugin, creds(srv.base_url))
    assert result.error is None, result.error
    assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []
    assert cr.collect_text(result) == BIG
    assert len(result.chunks) >= 3
    assert_lines_fit(plugin, result)
    assert_still_serving(plugin)


def test_a_lone_surrogate_in_a_stream_reaches_dify_as_a_replacement_character(plugin):
    # JSON may escape half of a UTF-16 pair alone; written as is, the chunk cannot be UTF-8
    stream = response(200, b'data: {"choices": [{"index": 0, "delta": {"content": "a\\ud800b \\ud83d\\ude00"}}]}\n\n'
                      + events(chunk(finish="stop"), USAGE, b"[DONE]"), "text/event-stream")
    with upstream(lambda req: stream) as srv:
        result = chat(plugin, creds(srv.base_url))
    assert result.error is None, result.error
    assert cr.collect_text(result) == "a\ufffdb \U0001f600"
    assert_still_serving(plugin)


def test_a_tool_call_too_large_for_one_line_is_a_typed_error(plugin):
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "get_weather",
                         "arguments": json.dumps({"location": BIG[:1_000_000]}, ensure_ascii=False)}}
    stream = response(200, events(chunk(tool_calls=[call]), chunk(finish="tool_calls"), b"[DONE]"),
                      "text/event-stream")
    with upstream(lambda req: stream) as srv:
        result = chat(plugin, creds(srv.base_url), tools=[WEATHER_TOOL])
    assert result.error is not None and result.error["error_type"] == "InvokeBadRequestError"
    assert "'get_weather'" in result.error["message"] and "characters" in result.error["message"]
    assert_lines_fit(plugin, result)


@pytest.mark.parametrize("size,fits", [(1_000_000, True), (6_000_000, False)])
def test_a_blocking_answer_is_one_chunk_or_a_typed_error(plugin, size, fits):
    stream = response(200, events(chunk(BIG[:size]), chunk(finish="stop"), USAGE, b"[DONE]"),
                      "text/event-stream")
    with upstream(lambda req: stream) as srv:
        result = chat(plugin, creds(srv.base_url), stream=False)
    if fits:
        assert cr.check_non_stream(result) == [] and cr.collect_text(result) == BIG[:size]
    else:
        assert result.error is not None and result.error["error_type"] == "InvokeBadRequestError"
        assert "turn streaming on" in result.error["message"]
    assert_lines_fit(plugin, result)


# -- 12: usage that cannot be true is counted by the plugin instead ---------------------------
@pytest.mark.parametrize("usage", [b'{"prompt_tokens": -5, "completion_tokens": -1, "total_tokens": -6}',
                                   b'{"prompt_tokens": 1e999, "completion_tokens": 1e999, "total_tokens": 1e999}',
                                   b'{"prompt_tokens": "5", "completion_tokens": null, "total_tokens": 5}'])
def test_usage_that_cannot_be_true_never_reaches_dify(plugin, usage):
    stream = response(200, events(chunk("Hello there"), chunk(finish="stop"),
                                  b'{"id": "c", "choices": [], "usage": ' + usage + b"}", b"[DONE]"),
                      "text/event-stream")
    with upstream(lambda req: stream) as srv:
        result = chat(plugin, creds(srv.base_url))
    assert result.error is None, result.error
    assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []
    counted = cr.final_usage(result)
    assert counted["prompt_tokens"] > 0 and counted["completion_tokens"] > 0  # counted offline


# -- 11 and 2: a malformed or swollen stream fails over to a healthy endpoint -----------------
MALFORMED = {
    "finish-object": events(chunk("x", finish={"why": "stop"})),
    "tool-index-list": events(chunk(tool_calls=[{"index": [0], "function": {"name": "f"}}])),
    "usage-list": events({"id": "c", "choices": [], "usage": [5, 2]}),
    "nested-100000": b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n",
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_server_fails_over_to_a_healthy_one(plugin, name):
    stream = response(200, MALFORMED[name] + events(chunk("wrong"), chunk(finish="stop"), b"[DONE]"),
                      "text/event-stream")
    with upstream(lambda req: stream) as bad, Simulator(SimConfig(served_model=SERVED, shape="plain")) as sim:
        result = chat(plugin, creds(bad.base_url, sim.base_url + " priority=1"))
        assert any(r.path.endswith("/chat/completions") for r in bad.requests)
    assert result.error is None, result.error
    assert cr.collect_text(result) == ANSWER


def test_a_100_mb_line_fails_over_at_once(plugin):
    mib = b"x" * (1 << 20)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    swollen = [head, b'data: {"choices": [{"delta": {"content": "', *[mib] * 100, b'"}}]}\n\n']
    with upstream(lambda req: swollen) as bad, Simulator(SimConfig(served_model=SERVED, shape="plain")) as sim:
        began = time.monotonic()
        result = chat(plugin, creds(bad.base_url, sim.base_url + " priority=1"))
        took = time.monotonic() - began
    assert result.error is None, result.error
    assert cr.collect_text(result) == ANSWER
    assert took < 10, f"{took:.1f}s"
    assert_lines_fit(plugin, result)
