"""A prefix cache as vLLM v1 keeps one, faithful enough to measure routing by.

- The prompt (the rendering settings, then each message's role and tokens) is cut into blocks of
  ``block_size`` tokens; only full blocks are cached, each under a hash chained over the blocks
  before it, so a block is reused only behind the same prefix.
- A request reuses the longest run of cached blocks from its start, capped below the prompt's
  length (at least one token is always computed: ``(prompt − 1) // block_size`` blocks at most).
- The cache holds ``capacity`` blocks. A running request's blocks are pinned; when it finishes
  they stay cached but evictable, queued least recently used first in reverse order (its tail
  goes first, its shared head last), and evicted only when new blocks need the room.
- Prefill is serialised per replica (one GPU's compute): each request's uncached tokens cost
  ``per_token`` seconds, slept while holding the prefill lock, so a loaded 2-core machine measures
  routing and not the simulator's CPU.

Counters, in tokens: ``queries`` (prompt tokens looked up) and ``hits`` (tokens reused), as vLLM's
``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits``.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict

from .script import content_text, split_pieces

__all__ = ["PrefixCache", "block_hashes"]

TEMPLATE_FIELDS = ("model", "chat_template", "chat_template_kwargs", "tools")


def prompt_tokens_of(body: dict) -> list[str]:
    """The rendered prompt's tokens: what changes the template first, then each message."""
    seed = json.dumps([body.get(k) for k in TEMPLATE_FIELDS], sort_keys=True, default=str)
    tokens = [seed]
    for m in body.get("messages") or ():
        if not isinstance(m, dict):
            continue
        tokens.append(f"<|{m.get('role')}|>")
        tokens.extend(split_pieces(content_text(m.get("content"))))
        if m.get("tool_calls"):
            tokens.append(json.dumps(m["tool_calls"], sort_keys=True, default=str))
    return tokens


def block_hashes(tokens: list[str], block_size: int) -> list[int]:
    """One chained hash per full block."""
    hashes, h = [], 0
    for i in range(0, len(tokens) - block_size + 1, block_size):
        h = hash((h, tuple(tokens[i:i + block_size])))
        hashes.append(h)
    return hashes


class PrefixCache:
    def __init__(self, capacity: int, block_size: int) -> None:
        self.capacity = capacity  # blocks; 0: unlimited
        self.block_size = block_size
        self.queries = 0
        self.hits = 0
        self._ref: dict[int, int] = {}  # resident block → running requests using it
        self._free: OrderedDict[int, None] = OrderedDict()  # resident, unused: evictable, LRU first
        self._prefill: asyncio.Lock | None = None

    def admit(self, body: dict, prompt: int) -> tuple[list[int], int]:
        """A request starts: ``(its blocks, cached tokens)``; its blocks are pinned until ``release``."""
        hashes = block_hashes(prompt_tokens_of(body), self.block_size)
        cap = max(0, (prompt - 1) // self.block_size)
        hit = 0
        for h in hashes[:cap]:
            if h not in self._ref:
                break
            hit += 1
        for h in hashes:
            self._free.pop(h, None)
            self._ref[h] = self._ref.get(h, 0) + 1
        while self.capacity and len(self._ref) > self.capacity and self._free:
            gone, _ = self._free.popitem(last=False)
            del self._ref[gone]
        cached = hit * self.block_size
        self.queries += prompt
        self.hits += cached
        return hashes, cached

    def release(self, hashes: list[int]) -> None:
        """The request finished: its blocks stay cached, evictable, tail first."""
        for h in reversed(hashes):
            n = self._ref.get(h)
            if n is None:
                continue
            if n <= 1:
                self._ref[h] = 0
                self._free[h] = None
            else:
                self._ref[h] = n - 1

    async def prefill(self, tokens: int, per_token: float) -> None:
        """Compute ``tokens`` uncached prompt tokens, one request at a time on this replica."""
        if tokens <= 0 or per_token <= 0:
            return
        if self._prefill is None:
            self._prefill = asyncio.Lock()
        async with self._prefill:
            await asyncio.sleep(tokens * per_token)

    @property
    def pinned_share(self) -> float:
        """Share of the capacity used by running requests (vLLM counts cached, unused blocks free)."""
        return (len(self._ref) - len(self._free)) / self.capacity if self.capacity else 0.0
