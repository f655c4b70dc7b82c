"""A stored answer as pieces, the way a live one reaches the caller: streamed, its text in a
few pieces then its tool calls; blocking, all of it at the end. Pure."""

from __future__ import annotations

from ..answer import Piece
from .entry import Entry

__all__ = ["REPLAY_CHARS", "replay"]

REPLAY_CHARS = 256  # characters per streamed piece: a visible stream without a piece per token


def replay(entry: Entry, *, streamed: bool, chars: int = REPLAY_CHARS) -> tuple[list[Piece], Piece]:
    """The pieces before the last, and the last (which the caller finishes with the usage)."""
    calls = [dict(c, function=dict(c["function"])) for c in entry.tool_calls]  # the caller's own copies
    if not streamed:
        return [], Piece(entry.text, calls)
    text = entry.text
    before = [Piece(text[i:i + chars], []) for i in range(0, len(text), chars)]
    return before, Piece("", calls)
