"""The simulator's prefix cache: vLLM v1's rules (full blocks under chained hashes, a hit capped
below the prompt, LRU eviction of unused blocks, tail first), what usage and /metrics report, and
the prefill time it costs."""

import time

import httpx

from deepseek_engine.routing import parse_metrics
from deepseek_sim.prefix_cache import PrefixCache, block_hashes, prompt_tokens_of
from deepseek_sim.script import prompt_tokens

SYSTEM = "word " * 200


def chat(n, who="alice", system=SYSTEM):
    msgs = [{"role": "system", "content": system}]
    for i in range(n):
        msgs.append({"role": "user", "content": f"{who} asks question number {i} " * 5})
        if i < n - 1:
            msgs.append({"role": "assistant", "content": f"answer {i} " * 20})
    return {"model": "deepseek-r1", "messages": msgs}


def admit(cache, body):
    return cache.admit(body, prompt_tokens(body["messages"]))


def test_only_full_blocks_under_chained_hashes():
    tokens = prompt_tokens_of(chat(1))
    hashes = block_hashes(tokens, 16)
    assert len(hashes) == len(tokens) // 16  # the partial tail block is not cached
    other = block_hashes(prompt_tokens_of(chat(1, system="other " + SYSTEM)), 16)
    assert not set(hashes) & set(other)  # a different start changes every block after it


def test_the_next_turn_reuses_the_previous_prompt_capped_below_its_length():
    cache = PrefixCache(capacity=0, block_size=16)
    blocks, cached = admit(cache, chat(2))
    assert cached == 0
    cache.release(blocks)
    _, cached = admit(cache, chat(3))
    assert cached > prompt_tokens(chat(2)["messages"]) - 40 and cached % 16 == 0
    body = chat(2)
    _, held = admit(cache, body)
    _, again = admit(cache, body)  # the same prompt: never all of it
    assert again < prompt_tokens(body["messages"])
    assert cache.hits == cached + held + again and cache.queries == sum(
        prompt_tokens(b["messages"]) for b in (chat(2), chat(3), body, body))


def test_unused_blocks_are_evicted_least_recent_first_and_tail_first():
    one = len(block_hashes(prompt_tokens_of(chat(2)), 16))
    cache = PrefixCache(capacity=one + 4, block_size=16)
    a, _ = admit(cache, chat(2, "alice"))
    cache.release(a)
    b, _ = admit(cache, chat(2, "bob"))  # needs its own blocks past the shared system prompt
    _, alice_again = admit(cache, chat(2, "alice"))
    system_blocks = len(block_hashes(prompt_tokens_of({"model": "deepseek-r1", "messages": [
        {"role": "system", "content": SYSTEM}]}), 16))
    assert alice_again >= system_blocks * 16  # the shared head stayed (bob pinned it)
    assert alice_again < (one - 1) * 16  # alice's own tail was evicted for bob


def test_running_requests_blocks_are_never_evicted():
    one = len(block_hashes(prompt_tokens_of(chat(2)), 16))
    cache = PrefixCache(capacity=one, block_size=16)
    a, _ = admit(cache, chat(2, "alice"))  # pinned
    admit(cache, chat(2, "bob"))
    assert all(h in cache._ref for h in a)


def test_usage_and_metrics_report_the_reuse(make_sim):
    sim = make_sim(prefix_caching=True, kv_blocks=4096)
    with httpx.Client(base_url=sim.base_url) as c:
        first = c.post("/chat/completions", json=chat(2)).json()["usage"]
        second = c.post("/chat/completions", json=chat(3)).json()["usage"]
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    assert 0 < second["prompt_tokens_details"]["cached_tokens"] < second["prompt_tokens"]
    text = httpx.get(sim.root_url + "/metrics").text
    assert f"vllm:prefix_cache_hits_total{{engine=\"0\",model_name=\"deepseek-r1\"}} " \
           f"{float(second['prompt_tokens_details']['cached_tokens'])!r}" in text
    assert "vllm:prefix_cache_queries_total" in text
    load = parse_metrics(text)
    assert load.kv_tokens == 4096 * 16 and load.queries == first["prompt_tokens"] + second["prompt_tokens"]
    assert load.started is not None


def test_streamed_usage_carries_cached_tokens_and_sglang_reports_its_hit_rate(make_sim):
    sim = make_sim(prefix_caching=True, flavor="sglang")
    with httpx.Client(base_url=sim.base_url) as c:
        c.post("/chat/completions", json=chat(1))
        with c.stream("POST", "/chat/completions", json={**chat(1), "stream": True,
                                                         "stream_options": {"include_usage": True}}) as r:
            body = b"".join(r.iter_bytes()).decode()
    assert '"cached_tokens":' in body and '"cached_tokens":0' not in body
    assert "sglang:cache_hit_rate" in httpx.get(sim.root_url + "/metrics").text


def test_without_prefix_caching_usage_is_unchanged(make_sim):
    sim = make_sim()
    usage = httpx.post(sim.base_url + "/chat/completions", json=chat(2)).json()["usage"]
    assert "prompt_tokens_details" not in usage
    assert "prefix_cache" not in httpx.get(sim.root_url + "/metrics").text


def test_uncached_prompt_tokens_cost_prefill_time(make_sim):
    sim = make_sim(prefix_caching=True, prefill_per_token=0.0005)
    body = chat(3)
    n = prompt_tokens(body["messages"])
    with httpx.Client(base_url=sim.base_url) as c:
        t = time.monotonic()
        c.post("/chat/completions", json=body)
        assert time.monotonic() - t >= n * 0.0005  # a miss: the whole prompt's prefill


def test_a_restarted_server_starts_with_an_empty_cache(make_sim):
    sim = make_sim(prefix_caching=True)
    with httpx.Client(base_url=sim.base_url) as c:
        c.post("/chat/completions", json=chat(2))
    before = parse_metrics(httpx.get(sim.root_url + "/metrics").text)
    sim.stop()
    time.sleep(0.01)
    sim.start()
    usage = httpx.post(sim.base_url + "/chat/completions", json=chat(2)).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert parse_metrics(httpx.get(sim.root_url + "/metrics").text).restarted_since(before)
