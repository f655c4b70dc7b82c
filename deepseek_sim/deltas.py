"""How each server groups the reply's pieces (tokens) into the deltas of its stream events.

Pure: pieces in, delta JSON out; ``sse.EventStream`` sends them and ``chat`` paces them.
"""

from __future__ import annotations

from collections.abc import Iterator

from .httpio import dumps


class Limited:
    """Wraps the piece generator: stops at max_tokens and remembers why it stopped."""

    __slots__ = ("it", "limit", "n", "truncated", "tools")

    def __init__(self, gen: Iterator, limit: int):
        self.it, self.limit = gen, limit
        self.n, self.truncated, self.tools = 0, False, False

    def __iter__(self):
        for piece in self.it:
            if self.n >= self.limit:
                self.truncated = True
                return
            self.n += 1
            if piece[0] == "th":
                self.tools = True
            yield piece

    @property
    def finish_reason(self) -> str:
        return "length" if self.truncated else ("tool_calls" if self.tools else "stop")


EMPTY = '{"content":""}'


Deltas = Iterator[tuple[str, int, str | None]]  # (delta JSON, tokens in it, finish reason on the last one)


def sglang_deltas(pieces: Limited, n: int, rfield: str | None, tool_reply: bool) -> Deltas:
    """SGLang's deltas: up to ``n`` tokens of one kind each; an empty content delta where reasoning
    turns into the answer; a finish chunk of its own. ``tool_reply`` is unused (same signature as
    ``vllm_deltas``)."""
    kind, idx, buf = None, None, []
    last_kind = None

    def flush():
        text = "".join(buf)
        if kind == "r":
            return '{"%s":%s}' % (rfield, dumps(text))
        if kind == "c":
            return '{"content":%s}' % dumps(text)
        return '{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}' % (idx, dumps(text))

    for piece in pieces:
        k = piece[0]
        if k == "th":
            if buf:
                yield flush(), len(buf), None
                buf = []
            kind = last_kind = "th"
            call = {"id": piece[2], "type": "function", "index": piece[1],
                    "function": {"name": piece[3], "arguments": ""}}
            yield dumps({"tool_calls": [call]}), 1, None
            continue
        pidx = piece[1] if k == "ta" else None
        if buf and (k != kind or pidx != idx or len(buf) >= n):
            yield flush(), len(buf), None
            buf = []
        if not buf:
            if k == "c" and last_kind == "r" and rfield:
                yield EMPTY, 0, None
            kind, idx, last_kind = k, pidx, k
        buf.append(piece[-1])
    if buf:
        yield flush(), len(buf), None
    finish = pieces.finish_reason
    yield ("{}" if finish == "tool_calls" else EMPTY), 0, finish


def vllm_deltas(pieces: Limited, n: int, rfield: str | None, tool_reply: bool) -> Deltas:
    """vLLM's deltas.

    Up to ``n`` consecutive tokens per delta whatever their kind, so one delta can hold reasoning and
    content (vLLM merges outputs when its API process lags behind the engine, with --stream-interval
    and with MTP). The finish reason rides on the delta of the last token when the reply is cut
    ("length"), or when the end-of-sentence token fell into the last, not full, group ("stop").
    Unmerged (n == 1), a tool reply has the empty content deltas of its special tokens: ``</think>``,
    ``<｜tool▁calls▁begin｜>`` and the tokens after the arguments.
    """
    empties = n == 1 and tool_reply
    r: list[str] = []  # the pending group: text (reasoning, content) ...
    c: list[str] = []
    a: list[str] = []  # ... or one call's argument pieces ...
    head = None  # ... or a call's name delta
    idx, k, prev = 0, 0, None  # call index of the arguments, tokens pending, kind of the last text

    def flush() -> str:
        if head is not None:
            return head
        if a:
            return '{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}' % (idx, dumps("".join(a)))
        if not r:
            return '{"content":%s}' % dumps("".join(c))
        if not c:
            return '{"%s":%s}' % (rfield, dumps("".join(r)))
        return '{"content":%s,"%s":%s}' % (dumps("".join(c)), rfield, dumps("".join(r)))

    for piece in pieces:
        kind = piece[0]
        if kind == "r" or kind == "c":
            if k and (k >= n or a or head is not None):
                yield flush(), k, None
                r, c, a, head, k = [], [], [], None, 0
            if empties and kind == "c" and prev == "r":
                yield EMPTY, 0, None
            prev = kind
            (r if kind == "r" else c).append(piece[1])
        elif kind == "ta":
            if k and (k >= n or head is not None or not a or idx != piece[1]):
                yield flush(), k, None
                r, c, a, head, k = [], [], [], None, 0
            idx = piece[1]
            a.append(piece[2])
        else:  # "th": the name delta, never merged
            if k:
                yield flush(), k, None
                r, c, a, head, k = [], [], [], None, 0
            if empties and piece[1] == 0:
                yield EMPTY, 0, None
            head = dumps({"tool_calls": [{"id": piece[2], "type": "function", "index": piece[1],
                                           "function": {"name": piece[3]}}]})
        k += 1
    finish = pieces.finish_reason
    if k and (finish == "length" or (finish == "stop" and k < n)):
        yield flush(), k, finish
        return
    if k:
        yield flush(), k, None
    if finish == "tool_calls":
        if empties:
            yield EMPTY, 0, None
        yield EMPTY, 0, finish
    else:  # parsed: the end-of-sentence token has no text at all; raw: empty content
        yield ("{}" if rfield else EMPTY), 0, finish
