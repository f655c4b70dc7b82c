"""The stored value of one answer: what Dify was shown (text with its reasoning in the think
block, whole tool calls), why it ended and its token counts. Encoded compressed and versioned;
anything that does not decode into exactly this is unreadable (``BadEntry``): a miss."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

__all__ = ["CACHED_FINISH", "MAX_VALUE_BYTES", "BadEntry", "Entry", "decode", "encode"]

_VERSION = b"\x01"
MAX_VALUE_BYTES = 512 * 1024  # a larger answer is not kept: Redis values stay small
CACHED_FINISH = ("stop", "tool_calls")  # only answers that finished normally are kept


class BadEntry(ValueError):
    """A stored value this version cannot read (corrupted, foreign, or from another schema)."""


@dataclass(frozen=True, slots=True)
class Entry:
    text: str
    tool_calls: list
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def encode(entry: Entry) -> bytes:
    doc = {"t": entry.text, "c": entry.tool_calls, "f": entry.finish_reason,
           "p": entry.prompt_tokens, "o": entry.completion_tokens}
    return _VERSION + zlib.compress(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(), 6)


def decode(raw: bytes) -> Entry:
    if not raw.startswith(_VERSION):
        raise BadEntry("unknown version byte")
    try:
        doc = json.loads(zlib.decompress(raw[1:]))  # zlib's checksum catches a flipped byte
    except (zlib.error, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise BadEntry(f"not a compressed answer: {type(e).__name__}") from None
    if not isinstance(doc, dict):
        raise BadEntry("not an answer")
    text, calls, finish, p, o = (doc.get(k) for k in ("t", "c", "f", "p", "o"))
    if not (isinstance(text, str) and isinstance(calls, list) and finish in CACHED_FINISH
            and _count(p) and _count(o) and all(_call(c) for c in calls)):
        raise BadEntry("fields of the wrong type")
    return Entry(text, calls, finish, p, o)


def _count(v: object) -> bool:
    return type(v) is int and v >= 0


def _call(c: object) -> bool:
    f = c.get("function") if isinstance(c, dict) else None
    return (isinstance(f, dict) and isinstance(c.get("id"), str) and isinstance(f.get("name"), str)
            and isinstance(f.get("arguments"), str))
