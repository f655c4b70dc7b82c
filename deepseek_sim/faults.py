"""Injected faults: the queue ``Simulator.inject`` fills, and the faults that act on the
transport (before any validation, as a proxy or a dying server would) or on a non-streamed body.
Faults inside an event stream fire in ``sse.EventStream``."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from .config import FAULT_KINDS, Fault
from .errors import DEFAULT_MESSAGES, NGINX_502, error_body, http_phrase, send_error
from .httpio import reset, response_head, send, sleep_unless_gone

# Faults that act on the response body; they fire "after N events" in a stream.
BODY_FAULTS = ("malformed_chunk", "drop_mid_stream", "stall_mid_stream", "error_event", "no_done")


class FaultQueue:
    """Faults for the next chat requests, first in first out; one entry serves ``count`` requests."""

    def __init__(self) -> None:
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()

    def inject(self, kind: str, count: int = 1, **params: Any) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append(Fault(kind, count, dict(params)))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return [Fault(f.kind, f.count, dict(f.params)) for f in self._faults]

    def take(self) -> Fault | None:
        """The fault for the request at hand, if any."""
        with self._lock:
            if not self._faults:
                return None
            f = self._faults[0]
            f.count -= 1
            if f.count <= 0:
                self._faults.popleft()
            return f


async def answer_transport_fault(fault: Fault | None, flavor: str, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter, keep: bool) -> bool | None:
    """Act out a transport fault: whether the connection stays open once it answered, or None
    when the request goes on (no such fault, or after ``slow_headers``' wait)."""
    kind = fault.kind if fault else None
    params = fault.params if fault else {}
    if kind == "reset_before_headers":
        reset(writer)
        return False
    if kind == "slow_headers":
        await sleep_unless_gone(float(params.get("seconds", 1.0)), reader, writer)
    if kind == "status":
        status = int(params.get("status", 503))
        text = params.get("body")
        if text is None:
            payload = error_body(flavor, status, DEFAULT_MESSAGES.get(status, http_phrase(status)))
            ctype = "application/json"
        else:
            payload = text.encode() if isinstance(text, str) else bytes(text)
            ctype = "application/json" if payload.lstrip()[:1] in (b"{", b"[") else "text/plain; charset=utf-8"
        extra = [(str(k), str(v)) for k, v in (params.get("headers") or {}).items()]
        return await send(writer, status, payload, keep, ctype=ctype, extra=extra)
    if kind == "html_502":
        return await send(writer, 502, NGINX_502, keep, ctype="text/html", extra=[("server", "nginx/1.24.0")])
    return None


async def answer_instead_of_body(fault: Fault | None, flavor: str, writer: asyncio.StreamWriter,
                                 keep: bool) -> bool | None:
    """A non-streamed answer that never comes: ``error_event`` is a 500, ``malformed_chunk``
    invalid JSON. None when the body is sent as usual."""
    kind = fault.kind if fault else None
    if kind == "error_event":
        return await send_error(writer, flavor, 500, fault.params.get("message", "Internal server error"), keep)
    if kind == "malformed_chunk":
        return await send(writer, 200, b'{"id": broken', keep)
    return None


async def send_body_with_fault(fault: Fault | None, body: bytes, reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter, keep: bool) -> bool:
    """Send a non-streamed JSON body: cut (``drop_mid_stream``), late (``stall_mid_stream``) or whole."""
    kind = fault.kind if fault else None
    params = fault.params if fault else {}
    if kind == "drop_mid_stream":
        # Full Content-Length promised, half delivered, then the connection goes away.
        writer.write(response_head(200, [("content-type", "application/json"),
                                         ("content-length", str(len(body)))], keep) + body[: len(body) // 2])
        await writer.drain()
        if params.get("rst"):
            reset(writer)
        else:
            writer.transport.close()
        return False
    if kind == "stall_mid_stream":
        writer.write(response_head(200, [("content-type", "application/json"),
                                         ("content-length", str(len(body)))], keep))
        await writer.drain()
        await sleep_unless_gone(float(params.get("seconds", 1.0)), reader, writer)
        writer.write(body)
        await writer.drain()
        return keep
    return await send(writer, 200, body, keep)
