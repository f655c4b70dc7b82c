"""The event stream of one response: ``data:`` events in chunked frames, the ``sse_quirks``
(keep-alive comments, split frames and events, multi-line data) and the faults that act
inside a stream."""

from __future__ import annotations

import asyncio

from .config import Fault
from .faults import BODY_FAULTS
from .httpio import LAST_CHUNK, chunk, dumps, reset, sleep_unless_gone

MALFORMED = b'data: {"id": broken\n\n'


class EventStream:
    """Writes SSE events of one response; applies sse_quirks and body faults."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: Fault | None,
                 quirks: bool, send_done: bool):
        self.r = reader
        self.w = writer
        self.kind = fault.kind if fault and fault.kind in BODY_FAULTS else None
        self.params = fault.params if fault else {}
        default_after = None if self.kind == "no_done" else 2
        self.after = self.params.get("after", default_after)
        self.quirks = quirks
        self.send_done = send_done
        self.count = 0  # data events sent
        self.fired = False
        self.result: str | None = None  # None running, "end" clean end, "closed" connection gone
        self.shift = 0.0  # seconds added by stalls, so pacing continues normally afterwards

    async def pace(self, deadline: float) -> None:
        delay = deadline + self.shift - asyncio.get_running_loop().time()
        if delay > 0:
            await sleep_unless_gone(delay, self.r, self.w)

    async def event(self, payload: str) -> bool:
        """Send ``data: payload``; True means the stream is over (a fault ended it)."""
        if self.kind and not self.fired and self.after is not None and self.count >= self.after:
            if await self._fire():
                return True
        data = "data: " + payload + "\n\n"
        if self.quirks:
            await self._quirky(data, payload)
        else:
            self.w.write(chunk(data.encode()))
        await self.w.drain()
        self.count += 1
        return False

    async def _quirky(self, data: str, payload: str) -> None:
        i, w = self.count, self.w
        if i % 4 == 0:
            w.write(chunk(b": keep-alive\n\n"))
        if i % 3 == 1 and payload.startswith("{"):
            # Multi-line data: SSE joins data lines with "\n", still valid JSON.
            cut = payload.find(',"choices":')
            if cut > 0:
                data = "data: " + payload[: cut + 1] + "\ndata: " + payload[cut + 1:] + "\n\n"
        raw = data.encode()
        if i % 4 == 1:
            # One HTTP chunk split across two TCP writes.
            framed = chunk(raw)
            half = len(framed) // 2
            w.write(framed[:half])
            await w.drain()
            await asyncio.sleep(0.01)
            w.write(framed[half:])
        elif i % 4 == 3:
            # One SSE event split across two HTTP chunks (may cut a UTF-8 sequence).
            half = len(raw) // 2
            w.write(chunk(raw[:half]))
            await w.drain()
            await asyncio.sleep(0.01)
            w.write(chunk(raw[half:]))
        else:
            w.write(chunk(raw))

    async def _fire(self) -> bool:
        self.fired = True
        w, p = self.w, self.params
        if self.kind == "malformed_chunk":
            w.write(chunk(MALFORMED))
            then = p.get("then", "continue")
            if then == "end":
                return await self._end()
            if then == "drop":
                await w.drain()
                w.transport.close()
                self.result = "closed"
                return True
            return False
        if self.kind == "drop_mid_stream":
            await w.drain()
            if p.get("rst"):
                reset(w)
            else:
                w.transport.close()  # FIN after flushing, but no terminating zero chunk
            self.result = "closed"
            return True
        if self.kind == "stall_mid_stream":
            await w.drain()
            seconds = float(p.get("seconds", 1.0))
            await sleep_unless_gone(seconds, self.r, w)
            self.shift += seconds
            return False
        if self.kind == "error_event":
            err = {"error": {"message": p.get("message", "Internal server error: the engine died"),
                             "type": p.get("type", "InternalServerError"), "param": None,
                             "code": int(p.get("code", 500))}}
            w.write(chunk(("data: " + dumps(err) + "\n\n").encode()))
            if self.send_done:
                w.write(chunk(b"data: [DONE]\n\n"))
            return await self._end()
        if self.kind == "no_done":
            return await self._end()
        return False

    async def _end(self) -> bool:
        self.w.write(LAST_CHUNK)
        await self.w.drain()
        self.result = "end"
        return True

    async def finish(self) -> None:
        # A fault whose "after" was beyond the stream fires just before the end.
        if self.kind and self.kind != "no_done" and not self.fired and self.result is None:
            if await self._fire():
                return
        if self.result is None:
            await self._end()
