"""Bounded reads of a whole (non-streamed) response body: at most ``cap`` bytes after decompression.

An error page, a non-streamed answer, ``/v1/models`` and ``/metrics`` are read whole before use. A
hostile or broken upstream can send a 500 MB error page, or 1 MB of gzip that inflates to 1 GiB:
read as httpx reads (``Response.read``), either costs the process gigabytes. Here bytes are
inflated with zlib's ``max_length``, so no more than ``cap`` (plus one network read) is ever held,
and the connection is closed as soon as the cap is reached: the server stops sending.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import httpx

from .errors import StreamBrokenError

__all__ = ["Body", "read_capped", "read_text", "ERROR_CAP", "ANSWER_CAP", "LISTING_CAP", "size"]

ERROR_CAP = 64 * 1024  # an error page: its message is in the first lines
ANSWER_CAP = 8 << 20  # a non-streamed completion (a long answer is a few hundred KiB)
LISTING_CAP = 4 << 20  # /v1/models and /metrics (vLLM's /metrics is 50-200 KiB)

# zlib's window bits for each content-coding (RFC 9110): gzip, or zlib-wrapped deflate (raw
# deflate, which some servers send as "deflate", is tried when the zlib header is missing)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes
    whole: bool  # False: the body is longer than the cap, and ``data`` is its first ``cap`` bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def size(n: int) -> str:
    """``n`` bytes for a message: "64 KiB", "8 MiB"."""
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


class _Inflater:
    """One content-coding, inflated at most ``limit`` bytes at a time."""

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._z = zlib.decompressobj(_WBITS[coding])
        self._started = False

    def __call__(self, data: bytes, limit: int) -> bytes:
        try:
            out = self._z.decompress(data, limit)
        except zlib.error as e:
            if self._coding != "deflate" or self._started:
                raise httpx.DecodingError(f"{self._coding} body could not be decompressed: {e}") from None
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, without the zlib header
            out = self._z.decompress(data, limit)
        self._started = True
        return out


def _decoder(encoding: str):
    """An inflater for a response's Content-Encoding, or None for identity. httpx would skip a
    coding it does not know and hand over compressed bytes as text: refused here instead."""
    codings = [c for c in (x.strip().lower() for x in encoding.split(",")) if c not in ("", "identity")]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in _WBITS:
        raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")
    return _Inflater(codings[0])


def read_capped(resp: httpx.Response, cap: int) -> Body:
    """``resp``'s body, decompressed, up to ``cap`` bytes; the response is closed in any case
    (before its end when the cap is reached: httpcore then drops the connection, so the rest is
    never read). Transport errors are httpx's; a body that cannot be decompressed raises
    ``httpx.DecodingError``."""
    try:
        if resp.is_stream_consumed:  # already read, and decoded, by httpx (a MockTransport's answer)
            return Body(resp.content[:cap], whole=len(resp.content) <= cap)
        inflate = _decoder(resp.headers.get("content-encoding", ""))
        out = bytearray()
        for raw in resp.iter_raw():
            out += inflate(raw, cap + 1 - len(out)) if inflate is not None else raw
            if len(out) > cap:
                del out[cap:]
                return Body(bytes(out), whole=False)
        return Body(bytes(out), whole=True)
    finally:
        resp.close()


def read_text(resp: httpx.Response, endpoint: str, cap: int = ERROR_CAP, what: str | None = None) -> str:
    """A non-streamed body as text: an error page's first ``cap`` bytes (its message needs no
    more), or the whole of ``what`` (an answer), refused beyond ``cap``. Transport errors are
    httpx's (the caller's ``transport.Words`` types them)."""
    body = read_capped(resp, cap)
    if what is not None and not body.whole:
        raise StreamBrokenError(f"{what} is larger than {size(cap)}: refused", endpoint=endpoint,
                                hint="check what the server or a proxy in between sends")
    return body.text
