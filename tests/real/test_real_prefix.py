"""What the prefix-affinity policy reads from real vLLM: its KV cache size, its process start (a
restart empties the prefix index) and its prefix-cache counters, in vLLM's own /metrics text."""

from __future__ import annotations

import re
import urllib.request

from deepseek_engine.routing import parse_metrics


def _metrics(server) -> str:
    with urllib.request.urlopen(server.root_url + "/metrics", timeout=10) as r:
        return r.read().decode()


def _chat(server, text: str) -> None:
    import json

    body = json.dumps({"model": server.served_name, "max_tokens": 2,
                       "messages": [{"role": "user", "content": text}]}).encode()
    req = urllib.request.Request(server.base_url + "/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()


def test_real_vllm_metrics_give_what_the_prefix_index_reads(vllm_servers):
    server = vllm_servers.parsed
    load = parse_metrics(_metrics(server))
    assert load is not None
    assert load.kv_tokens and load.kv_tokens > 0  # cache_config_info: num_gpu_blocks × block_size
    assert load.started and load.started > 1.6e9  # process_start_time_seconds, Unix time
    assert load.queries is not None  # vllm:prefix_cache_queries_total
    assert not load.restarted_since(load)


def test_real_vllm_counts_prefix_cache_reuse_when_prefix_caching_is_on(vllm_servers):
    server = vllm_servers.parsed
    text = _metrics(server)
    on = re.search(r'vllm:cache_config_info\{[^}]*enable_prefix_caching="True"', text) is not None
    before = parse_metrics(text)
    long_prompt = "the same long shared system prompt " * 60
    _chat(server, long_prompt + "first question")
    _chat(server, long_prompt + "second question")
    after = parse_metrics(_metrics(server))
    assert after.queries > before.queries  # both prompts were looked up
    hits = [float(v) for v in re.findall(r"^vllm:prefix_cache_hits_total\{[^}]*\} (\S+)", _metrics(server), re.M)]
    assert (sum(hits) > 0) == on  # the second prompt reused the first's blocks exactly when caching is on
