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

    @property
    def saturated(self) -> bool:
        return (self.kv is not None and self.kv > SATURATED_KV) or self.waiting > SATURATED_QUEUE


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+([-+0-9.eEInfa]+)", re.MULTILINE)
_SUMS = {"vllm:num_requests_running": "running", "sglang:num_running_reqs": "running",
         "vllm:num_requests_waiting": "waiting", "sglang:num_queue_reqs": "waiting"}
_MAXES = {"vllm:kv_cache_usage_perc": "kv", "vllm:gpu_cache_usage_perc": "kv", "sglang:token_usage": "kv"}


def parse_metrics(text: str, now: float | None = None) -> ServerLoad | None:
    """vLLM or SGLang Prometheus text → load (counts summed over engines/ranks, KV the max)."""
    got: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        key = _SUMS.get(name)
        try:
            v = float(value)
        except ValueError:
            continue
        if key:
            got[key] = got.get(key, 0.0) + v
        elif (key := _MAXES.get(name)) is not None:
            got[key] = max(got.get(key, 0.0), v)
    if "running" not in got and "waiting" not in got:
        return None
    return ServerLoad(got.get("running", 0.0), got.get("waiting", 0.0), got.get("kv"),
                      time.monotonic() if now is None else now)
