"""Server-sent events, decoded to the WHATWG spec.

Pure and incremental: feed whatever the network read returned (bytes cut anywhere, even inside a
UTF-8 sequence or between ``\\r`` and ``\\n``) and get back the data payloads of the events that
completed. Comments (``:`` lines, the keep-alives some gateways send), ``event``/``id``/``retry``
fields and blank events are dropped; several ``data`` lines join with ``\\n``. One leading UTF-8
byte order mark is stripped, as the spec's decoding does. An event whose data is empty or blank
(a bare ``data:`` line) carries nothing an OpenAI-style stream can use and is dropped too (the
spec would dispatch it as an empty message).

Bounded and linear: an unfinished line is kept as the pieces that arrived and joined once, when
its end comes (rebuilding it on every read was quadratic: one 100 MB line froze the process for
93 s), and a line or an event longer than ``MAX_EVENT_CHARS`` raises ``EventTooLarge``.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

__all__ = ["SSEDecoder", "EventTooLarge", "MAX_EVENT_CHARS", "iter_sse_data"]

# characters in one line or one event (8 MiB of ASCII): a chat event is a token or a tool call,
# so far below it; an upstream event of 6 MB (a whole document in one delta) still passes
MAX_EVENT_CHARS = 8 * 1024 * 1024


class EventTooLarge(ValueError):
    """A line or an event longer than the decoder's bound."""


class SSEDecoder:
    """Incremental SSE decoder: ``feed(chunk) -> [data, ...]``."""

    __slots__ = ("_utf8", "_tail", "_size", "_data", "_data_size", "_skip_lf", "_started", "_limit")

    def __init__(self, limit: int = MAX_EVENT_CHARS) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail: list[str] = []  # the pieces of an incomplete line, carried to the next read
        self._size = 0  # characters in _tail
        self._data: list[str] = []  # data lines of the event being built
        self._data_size = 0  # characters in _data
        self._skip_lf = False  # the previous read ended on "\r": a leading "\n" belongs to it
        self._started = False  # some text was decoded: a BOM from here on is content
        self._limit = limit

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
        # str.splitlines() would also split on \x0b, \u2028... which may sit inside JSON strings;
        # the spec's line ends are \r\n, \n and \r only, and \r is rare enough for a slow path.
        cr = "\r" in text
        if not cr and "\n" not in text:  # no line ends yet: kept, not joined
            self._carry(text)
            return []
        if self._tail:  # joined once, now that its line ends
            text = "".join([*self._tail, text])
            self._tail.clear()
            self._size = 0
        if not cr:
            lines = text.split("\n")
            rest = lines.pop()
        else:
            lines, rest = _split_lines(text)
            if text.endswith("\r"):
                self._skip_lf = True
        out: list[str] = []
        for line in lines:
            self._line(line, out)
        if rest:
            self._carry(rest)
        return out

    def flush(self) -> list[str]:
        """End of stream: per the spec an event without its closing blank line is discarded."""
        self._tail.clear()
        self._size = 0
        self._data.clear()
        self._data_size = 0
        return []

    def _carry(self, piece: str) -> None:
        self._tail.append(piece)
        self._size += len(piece)
        if self._size > self._limit:
            raise EventTooLarge(f"a line longer than {self._limit:,} characters")

    def _line(self, line: str, out: list[str]) -> None:
        if not line:
            if self._data:
                data = "\n".join(self._data)
                self._data.clear()
                self._data_size = 0
                if data and not data.isspace():
                    out.append(data)
            return
        if len(line) > self._limit:
            raise EventTooLarge(f"a line longer than {self._limit:,} characters")
        if line[0] == ":":
            return
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data_size += len(value) + 1
            if self._data_size > self._limit:
                raise EventTooLarge(f"an event longer than {self._limit:,} characters")
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
