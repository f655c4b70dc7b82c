"""What ChatClient puts on the wire and how it reads the answer, over httpx's in-memory transport
(no sockets): request headers, and streams from a gateway that compresses what it may."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from deepseek_engine import AnswerAssembler, ChatClient, build_body, parse_settings
from deepseek_engine.errors import StreamBrokenError
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryBudget, RetryPolicy

ANSWER = "Hello there, friend."


def _sse(*objs: object) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n"
                    for o in objs)


def _chunk(content: str | None = None, finish: str | None = None) -> dict:
    delta = {"content": content} if content is not None else {}
    return {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


STREAM = _sse(_chunk("Hello there,"), _chunk(" friend."), _chunk(finish="stop"), b"[DONE]")


class _Registry:
    """ClientRegistry's interface over one client on an in-memory transport."""

    def __init__(self, handler) -> None:
        self.client = httpx.Client(transport=httpx.MockTransport(handler))

    def get(self, key, verify=True) -> httpx.Client:
        return self.client


def _client(handler) -> ChatClient:
    settings = parse_settings({"endpoint_urls": "http://gpu-1:8000/v1", "api_key": "k-1234"})
    policy = RetryPolicy(attempts=1, budget=RetryBudget(cap=100))
    return ChatClient(settings, registry=_Registry(handler), health=HealthBook(), policy=policy,
                      prober=None)


def _answer(client: ChatClient) -> str:
    a = AnswerAssembler(expect_reasoning=False)
    text = "".join(p.text for d in client.stream(build_body("m", [{"role": "user", "content": "hi"}], {}))
                   if (p := a.feed(d)))
    return text + a.finish().text


def _response(body: bytes, **headers: str) -> httpx.Response:
    # a stream, not content=: httpx reads a content= body at once, leaving nothing to stream
    return httpx.Response(200, headers={"content-type": "text/event-stream", **headers},
                          stream=httpx.ByteStream(body))


def _gateway(seen: list[httpx.Request], *, always: bool = False):
    """A gateway that gzips the event stream whenever the client accepts gzip (or always)."""
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if always or "gzip" in request.headers.get("accept-encoding", ""):
            return _response(gzip.compress(STREAM), **{"content-encoding": "gzip"})
        return _response(STREAM)
    return handler


def test_chat_request_asks_for_an_uncompressed_stream():
    seen: list[httpx.Request] = []
    assert _answer(_client(_gateway(seen))) == ANSWER
    (req,) = seen
    assert req.headers["accept-encoding"] == "identity"
    assert req.headers["accept"] == "text/event-stream"
    assert req.headers["authorization"] == "Bearer k-1234"


def test_a_gateway_that_compresses_anyway_still_streams():
    seen: list[httpx.Request] = []
    assert _answer(_client(_gateway(seen, always=True))) == ANSWER


def test_an_empty_data_event_is_not_a_malformed_chunk():
    body = _sse(_chunk("Hello there,")) + b"data:\n\n" + b"data: \n\n" + STREAM[len(_sse(_chunk("Hello there,"))):]
    client = _client(lambda r: _response(body))
    assert _answer(client) == ANSWER


def test_a_byte_order_mark_before_the_first_event_is_ignored():
    client = _client(lambda r: _response(b"\xef\xbb\xbf" + STREAM))
    assert _answer(client) == ANSWER


def test_garbage_is_still_a_malformed_chunk():
    client = _client(lambda r: _response(_sse(b"{broken") + STREAM))
    with pytest.raises(StreamBrokenError, match="malformed chunk"):
        _answer(client)
