"""A chat completion's event stream, read: network reads in, deltas out.

Each network read is decoded (``sse.py``) and its chunks parsed; while more has already arrived
(``transport.arrival_check``) it is read too, and what arrived together is merged (``protocol.py``:
one delta, not one per token, up to ``MAX_MERGED`` events). The reader says, before each delta it
yields, whether more has already arrived (``Readiness.more_ready``): a caller may then merge them
into one chunk without holding any token back for the network. httpx yields one item per HTTP chunk, and vLLM (uvicorn)
sends every SSE event as its own HTTP chunk, so merging per ``iter_raw`` item alone never merges
anything: the reader also looks at h11's receive buffer and the socket (``transport.arrival_check``).

Transport errors are httpx's: the loop that drives the reader types them (``transport.Words``),
as it alone knows whether a timeout struck before the first token or between two.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Protocol

import httpx
import orjson

from .errors import EngineError, StreamBrokenError
from .protocol import ChatDelta, coalesce, parse_chunk, without_lone_surrogates
from .sse import EventTooLarge, SSEDecoder
from .transport import arrival_check, drain

__all__ = ["DONE", "Readiness", "chat_events", "loads"]

DONE = object()  # the stream's [DONE]
# events read from what has already arrived before a delta goes on (a backlog's reads take a few
# µs an event: the caller's hold, ``completion.MAX_HOLD``, is not outrun)
MAX_MERGED = 64


class Readiness(Protocol):
    """Where a reader says what has already arrived (``ChatClient`` is one)."""

    more_ready: bool  # the delta just yielded is followed by more that has already arrived
    pending: int  # deltas of the current network read not yielded yet


def loads(text: str) -> object:
    """One event's JSON. orjson reads a chat event in a third of the standard library's time
    (docs/performance.md); what it refuses and the standard library reads (a lone surrogate
    escape, NaN, nesting past 1024) is read by the latter, as before. An integer past 64 bits
    comes out a float (no count or index is that large: ``checked_usage`` drops it either way)."""
    try:
        return orjson.loads(text)  # never holds a lone surrogate: it refuses them
    except orjson.JSONDecodeError:
        obj = json.loads(text)
    return without_lone_surrogates(obj) if "\\ud" in text or "\\uD" in text else obj


def chat_events(resp: httpx.Response, endpoint: str, ready: Readiness) -> Iterator[ChatDelta | object]:
    """The deltas of ``resp``'s event stream, then ``DONE`` if the server sent [DONE] (the body's
    end is then read for a short while, so the connection can be reused: ``transport.drain``)."""
    decoder = SSEDecoder()
    # a gateway that compresses despite Accept-Encoding: identity is decoded (slower path)
    encoded = resp.headers.get("content-encoding", "identity").lower() not in ("", "identity")
    reads = resp.iter_bytes() if encoded else resp.iter_raw()
    arrived = arrival_check(resp)
    batch: list[ChatDelta] = []
    while True:
        try:
            raw = next(reads, None)
        except Exception:  # a cut: what was read before it is delivered first
            yield from _handed(batch, False, ready)
            raise
        if raw is None:
            break
        try:
            payloads = decoder.feed(raw)
        except EventTooLarge as e:
            raise StreamBrokenError(f"the server sent {e}: not a chat stream", endpoint=endpoint) from None
        done = False
        for data in payloads:
            if data == "[DONE]":
                done = True
                break
            try:
                batch.append(parse_chunk(loads(data), endpoint))
            except Exception as e:
                yield from coalesce(batch)  # what came before was fine: deliver it
                if isinstance(e, EngineError):  # an in-band {"error"}, a malformed shape
                    raise
                # bad JSON, JSON nested past the recursion limit, ...: the server's fault
                raise StreamBrokenError(f"the server sent a malformed chunk: {data[:80]!r}",
                                        endpoint=endpoint) from None
        more = done or arrived()
        if more and not done and len(batch) < MAX_MERGED:
            continue  # more has arrived already (h11's buffer, the socket): read before passing on
        yield from _handed(batch, more, ready)
        batch = []
        if done:  # the end, whatever the server does next
            drain(reads)
            yield DONE
            return
    yield from _handed(batch, False, ready)  # the body ended (without [DONE]) after these


def _handed(batch: list[ChatDelta], more: bool, ready: Readiness) -> Iterator[ChatDelta]:
    """What arrived together as one delta (or a few, to keep their order: ``coalesce``), each
    told whether more is in hand."""
    merged = coalesce(batch)
    last = len(merged) - 1
    for i, delta in enumerate(merged):
        ready.pending = last - i
        ready.more_ready = i < last or more
        yield delta
