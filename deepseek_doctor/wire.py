"""The raw wire: requests sent through the engine's own pool, TLS and auth headers, read before
the engine merges anything (a check needs to see which delta field reasoning arrives in).

Failures are typed as the engine types them (``error_from_response``, ``parse_chunk``,
``transport.connection_error``), so the doctor and the plugin name a failure alike."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from deepseek_engine.body import ERROR_CAP, read_capped
from deepseek_engine.client import ChatClient
from deepseek_engine.errors import ConnectError, EngineError, StreamBrokenError, error_from_response
from deepseek_engine.protocol import parse_chunk
from deepseek_engine.sse import iter_sse_data
from deepseek_engine.transport import connect_timeout, connection_error, ssl_context_of

from .probe import Probe

__all__ = ["GET_TIMEOUT", "Raw", "get", "no_answer", "pool_ssl_context", "raw_chat",
           "unauthenticated_get"]

GET_TIMEOUT = 10.0  # seconds for /health, /metrics and the unauthenticated /v1/models


def pool_ssl_context(client: ChatClient) -> ssl.SSLContext:
    """The very context the engine's pool verifies with."""
    return ssl_context_of(client.http)


# -- requests --------------------------------------------------------------------------------------

@dataclass
class Raw:
    """What one raw streamed chat showed, delta by delta (before the engine merges anything)."""

    status: int | None = None
    error: EngineError | None = None
    fields: set = field(default_factory=set)  # "reasoning", "reasoning_content" seen non-empty
    reasoning: str = ""  # their text
    content: str = ""
    tool_calls: list = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def reasoned(self) -> bool:
        """Reasoning came: in a reasoning field, or inline in the text (no reasoning parser)."""
        return bool(self.fields) or self.content.lstrip().startswith("<think>") or "</think>" in self.content


def no_answer(e: httpx.HTTPError, p: Probe, timed_out: str) -> EngineError:
    """A request that got no answer, typed and worded as the engine's transport does it;
    ``timed_out`` says what a read timeout means for this request."""
    if isinstance(e, httpx.ConnectTimeout):
        return connect_timeout(p.settings.timeouts.connect, p.endpoint.name)
    if isinstance(e, httpx.TimeoutException):
        return ConnectError(timed_out, endpoint=p.endpoint.name)
    return connection_error(e, p.endpoint.name)


def raw_chat(p: Probe, body: dict, stop: Callable[[Raw], bool]) -> Raw:
    """Stream ``body`` through the client's pool and headers, recording the raw deltas; stop
    reading (closing the stream, so the server stops generating) once ``stop`` says so."""
    client, ep, t = p.client, p.endpoint, p.settings.timeouts
    out = Raw()
    try:
        with client.http.stream("POST", ep.url + "/chat/completions", json=body,
                                  headers=client.headers(),
                                  timeout=httpx.Timeout(t.first_token, connect=t.connect)) as resp:
            out.status = resp.status_code
            if resp.status_code != 200:
                out.error = error_from_response(resp.status_code, read_capped(resp, ERROR_CAP).text,
                                                ep.name, resp.headers.get("retry-after"))
                return out
            for data in iter_sse_data(resp.iter_raw()):
                if data == "[DONE]":
                    break
                try:
                    obj = json.loads(data)
                except (ValueError, RecursionError):  # RecursionError: JSON nested past the limit
                    out.error = StreamBrokenError(f"the server sent a malformed chunk: {data[:80]!r}",
                                                  endpoint=ep.name)
                    return out
                try:
                    parse_chunk(obj, ep.name)  # the engine's verdict: an in-band error, a bad shape
                except EngineError as e:
                    out.error = e
                    return out
                _record(out, obj)
                if stop(out):
                    break
    except httpx.HTTPError as e:
        out.error = no_answer(e, p, f"no answer within {t.first_token:g}s (raise --timeout for a "
                                    "busy or cold server)")
    return out


def _record(out: Raw, chunk: dict) -> None:
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        for key in ("reasoning", "reasoning_content"):
            if isinstance(delta.get(key), str) and delta[key]:
                out.fields.add(key)
                if key == "reasoning" or "reasoning" not in delta:  # one text when both names come
                    out.reasoning += delta[key]
        if isinstance(delta.get("content"), str):
            out.content += delta["content"]
        if delta.get("tool_calls"):
            out.tool_calls.extend(delta["tool_calls"])
        if choice.get("finish_reason"):
            out.finish_reason = choice["finish_reason"]


def get(p: Probe, path: str) -> httpx.Response:
    """``GET`` of ``path`` under the endpoint's root (``/health``, ``/metrics``), with auth."""
    return p.client.http.get(p.endpoint.root + path, headers=p.client.headers(),
                               timeout=httpx.Timeout(GET_TIMEOUT, connect=p.settings.timeouts.connect))


def unauthenticated_get(p: Probe, url: str) -> httpx.Response:
    """``GET`` of ``url`` on the engine's pool without the auth header: is a key required?"""
    return p.client.http.get(url, timeout=GET_TIMEOUT)
