"""Hostile upstreams that quote the request's credentials back, for the secrets tests.

Each kind answers the chat route (and, for ``models-*``, ``/v1/models``) with the request's
Authorization header in it: as received, its bare credential, that credential URL-encoded and, for
Basic, decoded (``user:password``), in every place issue 12 found a server's words going: an error
body, an in-band stream error, a malformed field, a /v1/models answer, a non-streamed body; and the
failures that carry no words (a first token that never comes, a stall). ``/health`` answers 200,
so the prober never sets an echoing endpoint aside on its own.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import quote

from tests.loopback import Loopback, Request, response, sse

MODELS = {"object": "list", "data": [{"id": "deepseek-r1", "object": "model", "max_model_len": 4096}]}
# every answer that gets as far as its end carries usage: no request waits on the tokenizer (and
# on issue 12's item 1, a deadlock of concurrent counting that is not this test's subject)
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def echo(req: Request) -> str:
    """Everything a careless gateway might quote: the bare credential first, so that a message
    cut short still holds it whole."""
    auth = req.headers.get("authorization", "")
    scheme, _, bare = auth.partition(" ")
    text = f"{bare} rejected (Authorization: {auth}; as sent: {quote(bare, safe='')}"
    if scheme.lower() == "basic":
        try:
            text += "; user " + base64.b64decode(bare).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            pass
    return text + ")"


def _chunk(delta: object = None, finish: object = None, **extra: object) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "deepseek-r1",
            "choices": [{"index": 0, "delta": delta if delta is not None else {}, "finish_reason": finish}],
            **extra}


def _text(n: int = 3) -> list[dict]:
    return [_chunk({"content": f"word{i} "}) for i in range(n)]


def _stream(*events: object) -> bytes:
    return response(200, sse(*events), "text/event-stream")


def _json(status: int, obj: object) -> bytes:
    return response(status, json.dumps(obj).encode())


def _error(status: int, req: Request) -> bytes:
    return _json(status, {"error": {"message": echo(req), "type": "invalid_request_error"}})


CHAT = {
    "http-500": lambda r: _error(500, r),
    "http-400": lambda r: _error(400, r),
    "http-401-html": lambda r: response(401, f"<html><head><title>401 {echo(r)}</title></head></html>".encode(),
                                        "text/html"),
    "inband-error-first": lambda r: _stream({"error": {"message": echo(r), "code": 500}}),
    "inband-error-after-tokens": lambda r: _stream(*_text(), {"error": {"message": echo(r), "code": 500}}),
    "malformed-chunk": lambda r: _stream(*_text(1), ('{"x": "' + echo(r)).encode()),
    "finish-reason-dict": lambda r: _stream(*_text(), _chunk({}, {"auth": echo(r)}, usage=USAGE), b"[DONE]"),
    "choices-string": lambda r: _stream({"id": "c1", "choices": echo(r)}, b"[DONE]"),
    "delta-string": lambda r: _stream(_chunk(echo(r)), b"[DONE]"),
    "usage-strings": lambda r: _stream(*_text(), _chunk({}, "stop"),
                                       {"choices": [], "usage": {"prompt_tokens": echo(r), "completion_tokens": 3,
                                                                 "total_tokens": echo(r)}}, b"[DONE]"),
    "tool-call-echo": lambda r: _stream(_chunk({"tool_calls": [{"index": [echo(r)], "id": echo(r), "type": "function",
                                                                "function": {"name": {"n": echo(r)},
                                                                             "arguments": echo(r)}}]}),
                                        _chunk({}, "tool_calls", usage=USAGE), b"[DONE]"),
    "non-streamed-malformed": lambda r: _json(200, {"choices": [{"message": {"content": "hi"},
                                                                 "finish_reason": {"auth": echo(r)}}],
                                                    "usage": {"prompt_tokens": echo(r), "completion_tokens": 3}}),
    "non-streamed-not-json": lambda r: response(200, echo(r).encode(), "text/plain"),
    "first-token-timeout": lambda r: [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n", 10.0],
    "idle-timeout": lambda r: [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n", 0.0,
                               sse(_text(1)[0]), 10.0],
}
MODELS_KINDS = {
    "models-500": lambda r: _error(500, r),
    "models-401": lambda r: _error(401, r),
    "models-not-json": lambda r: response(200, echo(r).encode(), "text/plain"),
    "models-malformed": lambda r: _json(200, {"object": "list", "data": [{"id": {"auth": echo(r)}},
                                                                         {"id": echo(r), "max_model_len": echo(r)}]}),
}
KINDS = [*CHAT, *MODELS_KINDS]


def upstream(kind: str) -> Loopback:
    """A loopback server answering as ``kind`` (and as a healthy vLLM everywhere else)."""
    def answer(req: Request):
        if req.path.endswith("/health"):
            return response(200, b"{}")
        if req.path.endswith("/models"):
            return MODELS_KINDS[kind](req) if kind in MODELS_KINDS else _json(200, MODELS)
        if req.path.endswith("/chat/completions") and kind in CHAT:
            return CHAT[kind](req)
        if req.path.endswith("/chat/completions"):
            return _stream(_chunk({"content": "hi"}, "stop", usage=USAGE), b"[DONE]")
        return response(404, b'{"detail": "Not Found"}')

    return Loopback(answer)
