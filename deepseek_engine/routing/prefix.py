"""A request's prompt as a chain of hashes: what a prefix-caching server could reuse from another.

vLLM and SGLang reuse the KV cache of a prompt's longest prefix they still hold. Two requests
share a prefix when they render the same text up to a point, so the chain starts from what
changes the rendering before the first message (the model, the chat template and its kwargs such
as ``thinking``, the tools), then links every message, role and all, long messages split in
fixed-size chunks so that a long shared system prompt matches without the rest. Each link hashes
the one before it: a link matches only if everything before it does (as vLLM's block hashes and
the Gateway API inference extension's prefix scorer chain theirs). Every message counts, not
only the first (SGLang's chat path once hashed only the system prompt: sglang#26263).

The chain is seeded with the credential's scope, so one credential's prompts never match
another's: what one workspace sent cannot be probed through another's routing.

Python's own string hash (seeded per process, SipHash) keeps hashing a 32k-token prompt in the
order of 100 µs; a hash is only a routing hint, never trusted beyond this process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["Prefix", "prefix_chain", "CHUNK_CHARS", "CHARS_PER_TOKEN"]

CHUNK_CHARS = 4096  # about 1k tokens: GIE hashes 64-byte chunks, but a link per 64 bytes costs a lookup each
CHARS_PER_TOKEN = 4  # English and code; a routing estimate, never a count sent anywhere
# Request fields that change the rendered prompt before the messages (tools render into the system turn)
TEMPLATE_FIELDS = ("model", "chat_template", "chat_template_kwargs", "tools", "documents")


def _text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def prefix_chain(body: Mapping, scope: str = "", chunk: int = CHUNK_CHARS) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(hashes, ends)``: one hash per link of ``body``'s prompt, and the estimated prompt tokens
    up to the end of each link (the first link, the template fields, counts as none)."""
    seed = tuple(_text(body[k]) if k in body else "" for k in TEMPLATE_FIELDS)
    h = hash((scope, seed))
    hashes, ends = [h], [0]
    chars = 0
    for m in body.get("messages") or ():
        if not isinstance(m, Mapping):
            continue
        content = m.get("content")
        text = content if isinstance(content, str) else _text(content) if content is not None else ""
        # fields beside role and content (tool calls, names, reasoning kept in the history)
        extra = () if len(m) <= 2 else tuple(_text(m[k]) for k in sorted(m) if k not in ("role", "content"))
        if len(text) <= chunk:  # most messages: one link, one hash, no copy
            h = hash((h, m.get("role"), extra, text))
            chars += len(text)
            hashes.append(h)
            ends.append(chars // CHARS_PER_TOKEN)
            continue
        h = hash((h, m.get("role"), extra))  # a long message's start: a turn boundary
        for i in range(0, len(text), chunk):
            piece = text[i:i + chunk]
            h = hash((h, piece))
            chars += len(piece)
            hashes.append(h)
            ends.append(chars // CHARS_PER_TOKEN)
    return tuple(hashes), tuple(ends)


class Prefix:
    """One request's chain, computed only if a policy asks (a load-only policy pays nothing), and
    what the index predicted per endpoint (for the correction from the server's cached tokens)."""

    __slots__ = ("body", "scope", "_chain", "predicted")

    def __init__(self, body: Mapping, scope: str | None = None) -> None:
        self.body = body
        self.scope = scope or ""
        self._chain: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self.predicted: dict[str, int] = {}  # endpoint URL → tokens the index expected it to hold

    @property
    def computed(self) -> bool:
        return self._chain is not None

    @property
    def chain(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self._chain is None:
            self._chain = prefix_chain(self.body, self.scope)
        return self._chain

    @property
    def tokens(self) -> int:
        """The prompt's estimated tokens."""
        return self.chain[1][-1]
