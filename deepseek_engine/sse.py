"""Server-sent events, decoded to the WHATWG spec.

Pure and incremental: feed whatever the network read returned (bytes cut anywhere, even inside a
UTF-8 sequence or between ``\\r`` and ``\\n``) and get back the data payloads of the events that
completed. Comments (``:`` lines, the keep-alives some gateways send), ``event``/``id``/``retry``
fields and blank events are dropped; several ``data`` lines join with ``\\n``. One leading UTF-8
byte order mark is stripped, as the spec's decoding does. An event whose data is empty or blank
(a bare ``data:`` line) carries nothing an OpenAI-style stream can use and is dropped too (the
spec would dispatch it as an empty message).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

__all__ = ["SSEDecoder", "iter_sse_data"]


class SSEDecoder:
    """Incremental SSE decoder: ``feed(chunk) -> [data, ...]``."""

    __slots__ = ("_utf8", "_tail", "_data", "_skip_lf", "_started")

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail = ""  # an incomplete line carried to the next read
        self._data: list[str] = []  # data lines of the event being built
        self._skip_lf = False  # the previous read ended on "\r": a leading "\n" belongs to it
        self._started = False  # some text was decoded: a BOM from here on is content

    def feed(self, chunk: bytes | str) -> list[str]:
        text = self._utf8.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        buf = self._tail + text if self._tail else text
        # str.splitlines() would also split on \x0b, \u2028... which may sit inside JSON strings;
        # the spec's line ends are \r\n, \n and \r only, and \r is rare enough for a slow path.
        if "\r" not in buf:
            lines = buf.split("\n")
            self._tail = lines.pop()
        else:
            lines, self._tail = _split_lines(buf)
            if buf.endswith("\r"):
                self._skip_lf = True
        out: list[str] = []
        for line in lines:
            self._line(line, out)
        return out

    def flush(self) -> list[str]:
        """End of stream: per the spec an event without its closing blank line is discarded."""
        self._tail = ""
        self._data.clear()
        return []

    def _line(self, line: str, out: list[str]) -> None:
        if not line:
            if self._data:
                data = "\n".join(self._data)
                self._data.clear()
                if data and not data.isspace():
                    out.append(data)
            return
        if line[0] == ":":
            return
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        # event/id/retry and unknown fields carry nothing an OpenAI-style stream needs


def _split_lines(buf: str) -> tuple[list[str], str]:
    """Split on \\r\\n, \\n or \\r only; return complete lines and the unfinished tail."""
    lines: list[str] = []
    start = 0
    i = 0
    n = len(buf)
    while i < n:
        c = buf[i]
        if c == "\n" or c == "\r":
            lines.append(buf[start:i])
            if c == "\r" and i + 1 < n and buf[i + 1] == "\n":
                i += 1
            start = i + 1
        i += 1
    return lines, buf[start:]


def iter_sse_data(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """Data payloads of every complete event in a stream of network reads."""
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    decoder.flush()
