"""Which prompt prefixes each endpoint probably still holds in its KV cache, learnt from routing.

One process-wide structure, per endpoint URL: the chain links (``prefix.py``) of the prompts an
endpoint served, recorded once its first token arrived (it then holds the whole prompt). Bounded
three ways, as the server's own cache is:

- **LRU by tokens**: each endpoint's links are kept up to its *capacity* in estimated tokens,
  least recently used evicted first; a chain is recorded tail first so that its shared head (the
  system prompt) is the most recent, as vLLM frees a request's blocks tail first.
- **TTL**: a link not used for ``ttl`` seconds is forgotten (others' traffic may have evicted it).
- **entries**: at most ``max_entries`` links per endpoint, whatever their size (memory).

The capacity corrects itself from what the server reports it reused (``cached_tokens`` in usage,
else its prefix-cache counters between two ``/metrics`` scrapes): a prediction that the server
did not honour shrinks it (multiplicatively), one it honoured grows it back, so the index
converges to the share of the server's cache this process's traffic really keeps. A server
reporting its KV size (vLLM's ``cache_config_info``) caps it.
An endpoint ejected or restarted (``drop``) starts empty.

Links are seeded with the credential's scope: one credential's entries never match another's
requests, though they share (and compete for) each endpoint's bound, as they share its cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["PrefixIndex", "CAPACITY_TOKENS", "TTL", "MAX_ENTRIES"]

CAPACITY_TOKENS = 1_000_000  # until learnt: a large replica's KV cache, in tokens
MIN_CAPACITY_TOKENS = 4_096
TTL = 600.0  # seconds; Dynamo assumes 120 s without KV events, but Dify users think for minutes
MAX_ENTRIES = 100_000  # links per endpoint, about 10 MB at most
MISSED = 0.5  # a server that reused under half of what was predicted did not keep it
SHRINK = 0.7
GROW = 1.1


class _Endpoint:
    __slots__ = ("links", "tokens", "capacity", "ceiling", "scale")

    def __init__(self) -> None:
        self.links: OrderedDict[int, tuple[float, int]] = OrderedDict()  # hash → (last used, tokens)
        self.tokens = 0
        self.capacity = CAPACITY_TOKENS
        self.ceiling: int | None = None  # the server's own KV size in its tokens, when it reports it
        self.scale: float | None = None  # the index's estimated tokens per server token, from usage

    @property
    def top(self) -> int:
        """The most the index may assume, in its own token estimate."""
        return int(self.ceiling * (self.scale or 1.0)) if self.ceiling else CAPACITY_TOKENS


class PrefixIndex:
    def __init__(self, *, ttl: float = TTL, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._by_url: dict[str, _Endpoint] = {}
        self._lock = threading.Lock()

    def record(self, url: str, hashes: Sequence[int], ends: Sequence[int], now: float | None = None) -> None:
        """``url`` served a prompt of this chain: it holds every link now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            ep = self._by_url.get(url)
            if ep is None:
                ep = self._by_url[url] = _Endpoint()
            links = ep.links
            for i in range(len(hashes) - 1, -1, -1):  # tail first: the shared head ends most recent
                size = ends[i] - (ends[i - 1] if i else 0)
                old = links.pop(hashes[i], None)
                if old is not None:
                    ep.tokens -= old[1]
                links[hashes[i]] = (now, size)
                ep.tokens += size
            self._evict(ep, now)

    def _evict(self, ep: _Endpoint, now: float) -> None:
        links = ep.links
        while links and (ep.tokens > ep.capacity or len(links) > self.max_entries
                         or next(iter(links.values()))[0] < now - self.ttl):
            _, (_, size) = links.popitem(last=False)
            ep.tokens -= size

    def match(self, url: str, hashes: Sequence[int], ends: Sequence[int], now: float | None = None) -> int:
        """Estimated tokens of this chain's longest prefix that ``url`` still holds."""
        ep = self._by_url.get(url)
        if ep is None or not hashes:
            return 0
        oldest = (time.monotonic() if now is None else now) - self.ttl
        links = ep.links
        # The links held are always a head of the chain (recorded tail first, so a link is never
        # older than one after it; evicted oldest first): a binary search finds where they end,
        # a few lookups instead of one per link. No lock: a read of a dict being written is safe.
        lo, hi = 0, len(hashes)
        while lo < hi:
            mid = (lo + hi) // 2
            link = links.get(hashes[mid])
            if link is not None and link[0] >= oldest:
                lo = mid + 1
            else:
                hi = mid
        return ends[lo - 1] if lo else 0

    def observe_cached(self, url: str, predicted: int, cached: int, prompt: int, estimated: int) -> None:
        """The server reused ``cached`` of ``prompt`` tokens where the index predicted
        ``predicted`` of ``estimated`` (its own estimate of the prompt): less than half shrinks the
        capacity, clearly more (the index forgot what the server kept) grows it."""
        if prompt <= 0 or estimated <= 0:
            return
        reused = cached * estimated / prompt  # in the index's own token estimate
        with self._lock:
            ep = self._by_url.get(url)
            if ep is None:
                return
            scale = estimated / prompt  # characters per token differ by language and tokenizer
            ep.scale = scale if ep.scale is None else ep.scale + 0.1 * (scale - ep.scale)
            self._correct(ep, predicted, reused, estimated)

    def observe_share(self, url: str, predicted: int, share: float, estimated: int) -> None:
        """Requests of ``estimated`` tokens in all, predicted to find ``predicted`` of them cached,
        were served while the server found ``share`` of the prompt tokens it looked up cached (its
        counters: every client's requests, so only a clear miss or surplus moves the capacity)."""
        if estimated <= 0:
            return
        with self._lock:
            ep = self._by_url.get(url)
            if ep is not None:
                self._correct(ep, predicted, share * estimated, estimated)

    def _correct(self, ep: _Endpoint, predicted: float, reused: float, estimated: int) -> None:
        if reused < predicted * MISSED:
            ep.capacity = max(MIN_CAPACITY_TOKENS, int(ep.capacity * SHRINK))
        elif reused > predicted + max(MIN_CAPACITY_TOKENS // 16, estimated // 10):
            ep.capacity = int(ep.capacity * GROW)
        ep.capacity = min(ep.capacity, ep.top)
        self._evict(ep, time.monotonic())

    def set_ceiling(self, url: str, kv_tokens: int | None) -> None:
        """The server's KV cache holds ``kv_tokens`` (None: unknown): the index never assumes more."""
        with self._lock:
            ep = self._by_url.get(url)
            if ep is None:
                ep = self._by_url[url] = _Endpoint()
            ep.ceiling = kv_tokens
            if ep.capacity > ep.top:
                ep.capacity = ep.top
                self._evict(ep, time.monotonic())

    def drop(self, url: str) -> None:
        """``url`` was ejected or restarted: whatever it held is gone (its learnt ceiling stays)."""
        with self._lock:
            ep = self._by_url.get(url)
            if ep is not None and ep.links:
                ep.links.clear()
                ep.tokens = 0

    def capacity(self, url: str) -> int:
        ep = self._by_url.get(url)
        return ep.capacity if ep is not None else CAPACITY_TOKENS

    def held(self, url: str) -> int:
        """Estimated tokens recorded for ``url``."""
        ep = self._by_url.get(url)
        return ep.tokens if ep is not None else 0
