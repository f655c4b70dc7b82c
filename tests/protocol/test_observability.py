"""Opt-in metrics and JSON request logs, from the plugin process as the daemon runs it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import user_message  # noqa: E402
from plugin_util import PROVIDER, free_port, running_plugin  # noqa: E402

from deepseek_sim import SimConfig, Simulator  # noqa: E402

KEY = "sk-observability-SECRET-42"
CANARY = "PROMPT-CANARY-7731"


@pytest.fixture(scope="module")
def observed():
    port = free_port()
    env = {"DEEPSEEK_METRICS_PORT": str(port), "DEEPSEEK_METRICS_ADDR": "127.0.0.1", "DEEPSEEK_JSON_LOGS": "1"}
    with running_plugin(**env) as p:
        yield p, f"http://127.0.0.1:{port}/metrics"


def sample(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_move_and_logs_are_json_without_prompts_or_secrets(observed):
    plugin, metrics_url = observed
    assert sample(httpx.get(metrics_url).text, "deepseek_requests_total") == 0  # nothing yet
    with Simulator(SimConfig(served_model="deepseek-r1", api_key=KEY)) as sim:
        creds = {"endpoint_urls": sim.base_url, "api_key": KEY, "served_model_name": "deepseek-r1"}
        ep = f"127.0.0.1:{sim.port}/v1"
        for stream in (True, False):
            r = plugin.invoke_llm(PROVIDER, "deepseek-r1", creds, [user_message(CANARY)], {}, stream=stream)
            assert r.error is None
        sim.inject("status", count=10, status=503)
        r = plugin.invoke_llm(PROVIDER, "deepseek-r1", creds, [user_message(CANARY)], {})
        assert r.error["error_type"] == "InvokeConnectionError"  # still 503: Dify fails over
        text = httpx.get(metrics_url).text
    assert sample(text, "deepseek_requests_total", endpoint=ep, outcome="ok") == 2
    assert sample(text, "deepseek_requests_total", outcome="error") == 1
    assert sample(text, "deepseek_time_to_first_token_seconds_count", endpoint=ep) == 2
    assert sample(text, "deepseek_tokens_total", direction="completion") > 0
    assert sample(text, "deepseek_retries_total", endpoint=ep, error="UnavailableError") >= 1
    assert sample(text, "deepseek_in_flight", endpoint=ep) == 0
    lines = [json.loads(l["data"]["message"]) for l in plugin.logs
             if "llm_request" in str(l.get("data", {}).get("message", ""))]
    assert [(x["outcome"], x["stream"]) for x in lines] == [("ok", True), ("ok", False), ("error", True)]
    assert lines[2]["error_class"] == "UnavailableError" and lines[0]["endpoint"] == ep
    assert lines[0]["request_id"].startswith("dify-") and lines[0]["completion_tokens"] > 0
    chats = [r for r in sim.requests if r.path.endswith("/chat/completions") and r.body.get("max_tokens") != 1]
    assert chats[0].headers.get("x-request-id") == lines[0]["request_id"]  # correlates with vLLM's logs
    everything = json.dumps(plugin.logs)
    assert CANARY not in everything and KEY not in everything
