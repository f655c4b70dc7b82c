"""What ``GET /metrics`` reports: the counters of answered requests and the batch's gauges, in
vLLM's or SGLang's Prometheus names."""

from __future__ import annotations

import bisect
from collections import Counter

from .config import SimConfig
from .prefix_cache import PrefixCache

# vLLM's buckets of vllm:time_to_first_token_seconds
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)


class Metrics:
    def __init__(self) -> None:
        self.prompt_total = 0
        self.gen_total = 0
        self.finished: Counter[str] = Counter()
        self._ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)
        self._ttft_sum = 0.0

    def observe_ttft(self, seconds: float) -> None:
        self._ttft_counts[bisect.bisect_left(TTFT_BUCKETS, seconds)] += 1
        self._ttft_sum += seconds

    def render(self, cfg: SimConfig, in_flight: int, queued: int, kv_cache: PrefixCache | None = None,
               started: float | None = None) -> str:
        """The Prometheus text; ``in_flight`` and ``queued``: the batch now (added to the
        configured ``num_running`` and ``num_waiting``); ``kv_cache``: the prefix cache, when
        ``cfg.prefix_caching``; ``started``: the server process's start (Unix time)."""
        model = cfg.served_model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        running = float(cfg.num_running + in_flight)
        waiting = float(cfg.num_waiting + queued)
        kv = max(float(cfg.kv_usage), in_flight / cfg.max_running if cfg.max_running else 0.0)
        caching = cfg.prefix_caching and kv_cache is not None
        if caching:
            kv = max(kv, kv_cache.pinned_share)
        if cfg.flavor == "vllm":
            lab = f'engine="0",model_name="{model}"'
            rows = [
                ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
                 [(lab, running)]),
                ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
                 [(lab, waiting)]),
                ("vllm:num_requests_waiting_by_reason", "gauge", "Number of requests waiting, by reason.",
                 [(f'engine="0",model_name="{model}",reason="capacity"', waiting),
                  (f'engine="0",model_name="{model}",reason="deferred"', 0.0)]),
                ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
                 [(lab, kv)]),
                ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
                 [(lab, float(self.prompt_total))]),
                ("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
                 [(lab, float(self.gen_total))]),
                ("vllm:request_success_total", "counter", "Count of successfully processed requests.",
                 [(f'engine="0",finished_reason="{r}",model_name="{model}"',
                   float(self.finished[r] + (self.finished["tool_calls"] if r == "stop" else 0)))
                  for r in ("stop", "length", "abort", "error", "repetition")]),
            ]
        else:
            lab = f'model_name="{model}"'
            rows = [
                ("sglang:num_running_reqs", "gauge", "The number of running requests.", [(lab, running)]),
                ("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue.",
                 [(lab, waiting)]),
                ("sglang:token_usage", "gauge", "The token usage.", [(lab, kv)]),
                ("sglang:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
                 [(lab, float(self.prompt_total))]),
                ("sglang:generation_tokens_total", "counter", "Number of generation tokens processed.",
                 [(lab, float(self.gen_total))]),
                ("sglang:num_requests_total", "counter", "Number of requests processed.",
                 [(lab, float(sum(self.finished.values())))]),
            ]
        if caching and cfg.flavor == "vllm":
            rows += [
                ("vllm:prefix_cache_queries_total", "counter",
                 "Prefix cache queries, in terms of number of queried tokens.", [(lab, float(kv_cache.queries))]),
                ("vllm:prefix_cache_hits_total", "counter",
                 "Prefix cache hits, in terms of number of cached tokens.", [(lab, float(kv_cache.hits))]),
                ("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig",
                 [(f'block_size="{cfg.block_size}",enable_prefix_caching="True",engine="0",'
                   f'num_gpu_blocks="{cfg.kv_blocks or "None"}"', 1.0)]),
            ]
        elif caching:
            rows.append(("sglang:cache_hit_rate", "gauge", "The prefix cache hit rate.",
                         [(lab, kv_cache.hits / kv_cache.queries if kv_cache.queries else 0.0)]))
        if started is not None:
            rows.append(("process_start_time_seconds", "gauge",
                         "Start time of the process since unix epoch in seconds.", [("", started)]))
        out = []
        for name, typ, help_, samples in rows:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {typ}")
            out.extend(f"{name}{{{labels}}} {value!r}" if labels else f"{name} {value!r}" for labels, value in samples)
        if cfg.flavor == "vllm":
            name = "vllm:time_to_first_token_seconds"
            out += [f"# HELP {name} Histogram of time to first token in seconds.", f"# TYPE {name} histogram"]
            total = 0
            for le, count in zip((*map(repr, TTFT_BUCKETS), "+Inf"), self._ttft_counts, strict=True):
                total += count
                out.append(f'{name}_bucket{{engine="0",le="{le}",model_name="{model}"}} {float(total)!r}')
            out.append(f'{name}_count{{engine="0",model_name="{model}"}} {float(total)!r}')
            out.append(f'{name}_sum{{engine="0",model_name="{model}"}} {self._ttft_sum!r}')
        return "\n".join(out) + "\n"
