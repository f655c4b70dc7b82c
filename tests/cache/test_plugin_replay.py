"""The answer cache through the plugin as the daemon runs it (its Redis from the plugin's
environment): a repeat is replayed streamed and blocking, reasoning in its think block and tool
calls whole, marked as cached, without reaching the GPU; a workspace with the cache off is never
answered from it."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from deepseek_sim import SimConfig, Simulator
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import user_message
from tests.protocol.plugin_util import PROVIDER, free_port, invokes, running_plugin

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}


@pytest.fixture
def plugin(redis_server):
    port = free_port()
    with running_plugin(DEEPSEEK_CACHE_REDIS_URL=redis_server.url, DEEPSEEK_CACHE_SECRET="protocol-tier",
                        DEEPSEEK_METRICS_PORT=str(port), DEEPSEEK_METRICS_ADDR="127.0.0.1") as p:
        p.metrics_url = f"http://127.0.0.1:{port}/metrics"
        yield p


def counter(text: str, name: str, **labels) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()))


def fingerprints(result) -> set:
    return {c.get("system_fingerprint") for c in result.chunks if isinstance(c, dict)} - {None}


def written(server, n: int) -> None:
    """Writes go after delivery, in the background: wait for them."""
    r = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + 5
    while len(r.keys("dshc:*")) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(r.keys("dshc:*")) == n


def test_a_repeat_replays_reasoning_and_tool_calls_streamed_and_blocking(plugin, redis_server):
    with Simulator(SimConfig(served_model="deepseek-r1", shape="reasoning")) as sim:
        creds = {"endpoint_urls": sim.base_url, "api_key": "sk-replay-0001", "answer_cache": "on"}

        def chat(tools=None, stream=True, credentials=creds):
            r = plugin.invoke_llm(PROVIDER, "deepseek-r1", credentials, [user_message("Is my order late?")],
                                  {"temperature": 0}, tools=tools, stream=stream, timeout=60)
            assert r.error is None, r.error
            return r

        live = chat()
        written(redis_server, 1)
        live_tools = chat(tools=[WEATHER])
        written(redis_server, 2)
        before = len(invokes(sim.requests))
        hit, hit_blocking = chat(), chat(stream=False)
        tools_hit, tools_hit_blocking = chat(tools=[WEATHER]), chat(tools=[WEATHER], stream=False)
        assert len(invokes(sim.requests)) == before  # none reached the GPU
        assert cr.collect_text(live).startswith("<think>\n") and not fingerprints(live)
        for r in (hit, hit_blocking):
            assert cr.collect_text(r) == cr.collect_text(live) and fingerprints(r) == {"deepseek-answer-cache"}
            assert cr.final_usage(r)["completion_tokens"] == cr.final_usage(live)["completion_tokens"]
        assert len(hit.chunks) > 1 and cr.check_llm_stream(hit) == []
        for r in (tools_hit, tools_hit_blocking):
            assert cr.tool_calls(r) == cr.tool_calls(live_tools) and "<think>" in cr.collect_text(r)
            assert fingerprints(r) == {"deepseek-answer-cache"}
        assert cr.finish_reason(tools_hit) == cr.finish_reason(live_tools) == "tool_calls"
        json.loads(cr.tool_calls(tools_hit)[0]["function"]["arguments"])  # whole, parseable
        # the same question from a credential with the cache off reaches the GPU
        off = chat(credentials={"endpoint_urls": sim.base_url})
        assert not fingerprints(off) and len(invokes(sim.requests)) == before + 1
    metrics = httpx.get(plugin.metrics_url).text
    assert counter(metrics, "deepseek_answer_cache_total", event="hit") == 4
    assert counter(metrics, "deepseek_answer_cache_total", event="miss") == 2
    assert counter(metrics, "deepseek_answer_cache_bytes_total", direction="written") > 0
    assert counter(metrics, "deepseek_answer_cache_bytes_total", direction="read") > 0
