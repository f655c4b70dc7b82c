"""A server's own load, read from its Prometheus ``/metrics`` (vLLM or SGLang)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

__all__ = ["ServerLoad", "parse_metrics", "SATURATED_KV", "SATURATED_QUEUE"]

SATURATED_KV = 0.8
SATURATED_QUEUE = 5


@dataclass(frozen=True, slots=True)
class ServerLoad:
    running: float
    waiting: float
    kv: float | None
    at: float
    # for the prefix index (prefix_index.py): when the server process started, its prefix-cache
    # lookups so far (a counter: lower than before means a restart), its KV cache in tokens
    started: float | None = None
    queries: float | None = None
    kv_tokens: int | None = None
    hits: float | None = None  # vLLM's prefix-cache hits so far (a counter, in tokens, as queries)
    hit_rate: float | None = None  # SGLang's recent hit rate (a gauge)

    @property
    def saturated(self) -> bool:
        return (self.kv is not None and self.kv > SATURATED_KV) or self.waiting > SATURATED_QUEUE

    def restarted_since(self, before: ServerLoad) -> bool:
        """A different server process answers than at ``before``'s scrape."""
        if self.started is not None and before.started is not None:
            return self.started != before.started
        return self.queries is not None and before.queries is not None and self.queries < before.queries

    def hit_share_since(self, before: ServerLoad | None) -> float | None:
        """The share of prompt tokens the server found cached since ``before``'s scrape (vLLM's
        counters), or its own recent rate (SGLang's gauge); None when there is nothing to say."""
        if self.queries is not None and self.hits is not None:
            if before is None or before.queries is None or before.hits is None or self.restarted_since(before):
                return None
            looked = self.queries - before.queries
            return min(1.0, max(0.0, (self.hits - before.hits) / looked)) if looked > 0 else None
        return self.hit_rate


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+([-+0-9.eEInfa]+)", re.MULTILINE)
_SUMS = {"vllm:num_requests_running": "running", "sglang:num_running_reqs": "running",
         "vllm:num_requests_waiting": "waiting", "sglang:num_queue_reqs": "waiting"}
_MAXES = {"vllm:kv_cache_usage_perc": "kv", "vllm:gpu_cache_usage_perc": "kv", "sglang:token_usage": "kv",
          "process_start_time_seconds": "started", "sglang:cache_hit_rate": "hit_rate"}
_COUNTERS = {"vllm:prefix_cache_queries_total": "queries", "vllm:prefix_cache_queries": "queries",
             "vllm:prefix_cache_hits_total": "hits", "vllm:prefix_cache_hits": "hits"}
# vLLM's cache_config_info carries the cache's size in its labels (num_gpu_blocks × block_size)
_BLOCKS = re.compile(r'^vllm:cache_config_info\{([^}]*)\}', re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_metrics(text: str, now: float | None = None) -> ServerLoad | None:
    """vLLM or SGLang Prometheus text → load (counts summed over engines/ranks, KV the max)."""
    got: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        key = _SUMS.get(name)
        try:
            v = float(value)
        except ValueError:
            continue
        if key or (key := _COUNTERS.get(name)):
            got[key] = got.get(key, 0.0) + v
        elif (key := _MAXES.get(name)) is not None:
            got[key] = max(got.get(key, 0.0), v)
    if "running" not in got and "waiting" not in got:
        return None
    return ServerLoad(got.get("running", 0.0), got.get("waiting", 0.0), got.get("kv"),
                      time.monotonic() if now is None else now, got.get("started"), got.get("queries"),
                      _kv_tokens(text), got.get("hits"), got.get("hit_rate"))


def _kv_tokens(text: str) -> int | None:
    """The KV cache's size in tokens, from vLLM's ``cache_config_info`` labels (the sum over engines)."""
    total = 0
    for labels in _BLOCKS.findall(text):
        kv = dict(_LABEL.findall(labels))
        try:
            total += int(kv["num_gpu_blocks"]) * int(kv["block_size"])
        except (KeyError, ValueError):
            continue
    return total or None
