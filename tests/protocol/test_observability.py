"""Opt-in metrics and JSON request logs, from the plugin process as the daemon runs it."""

from __future__ import annotations

import json

import httpx
import pytest

from deepseek_sim import SimConfig, Simulator
from tests.protocol.harness import user_message
from tests.protocol.plugin_util import PROVIDER, free_port, free_url, invokes, running_plugin

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


def value(text: str, name: str, **labels) -> float:
    """The one sample of ``name`` with ``labels``; fails when the series was never recorded
    (``sample`` sums zero rows to 0, so ``sample(...) == 0`` also passes for a missing series)."""
    rows = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())]
    assert len(rows) == 1, f"expected one {name} series with {labels}, found {len(rows)}"
    return rows[0]


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
    assert value(text, "deepseek_in_flight", endpoint=ep) == 0  # recorded, and back to 0
    lines = [json.loads(log["data"]["message"]) for log in plugin.logs
             if "llm_request" in str(log.get("data", {}).get("message", ""))]
    assert [(x["outcome"], x["stream"]) for x in lines] == [("ok", True), ("ok", False), ("error", True)]
    assert lines[2]["error_class"] == "UnavailableError" and lines[0]["endpoint"] == ep
    assert lines[0]["request_id"].startswith("dify-") and lines[0]["completion_tokens"] > 0
    assert invokes(sim.requests)[0].headers["x-request-id"] == lines[0]["request_id"]  # correlates with vLLM's logs
    everything = json.dumps(plugin.logs)
    assert CANARY not in everything and KEY not in everything


def test_in_flight_is_one_while_a_stream_is_open_and_zero_after(observed):
    # Checked against the recording switched off, in a scratch copy of the repo: Telemetry.in_flight
    # a no-op fails the "during" assertion ("expected one deepseek_in_flight series ..., found 0");
    # recording only the +1 fails the wait for 0 after the first request (the gauge stays up).
    plugin, metrics_url = observed
    with Simulator(SimConfig(served_model="deepseek-r1", api_key=KEY)) as sim:
        creds = {"endpoint_urls": sim.base_url, "api_key": KEY, "served_model_name": "deepseek-r1"}
        ep = f"127.0.0.1:{sim.port}/v1"
        # a first, unpaced request: the plugin's background warm-up of a new endpoint is done by
        # the time the gauge is back at 0, so the paced stream below is the only request in flight
        assert plugin.invoke_llm(PROVIDER, "deepseek-r1", creds, [user_message("hi")], {}).error is None
        assert plugin.wait_for(lambda: sample(httpx.get(metrics_url).text, "deepseek_in_flight",
                                              endpoint=ep) == 0, timeout=5)
        sim.config.inter_token = 0.035  # ~30 events: the stream stays open for about a second
        during, chunks_after = None, 0
        for msg in plugin.stream_llm(PROVIDER, "deepseek-r1", creds, [user_message("hi")], {}, stream=True):
            assert msg["type"] != "error", msg
            if msg["type"] == "stream":
                if during is None:
                    during = httpx.get(metrics_url).text  # the plugin is still streaming this answer
                else:
                    chunks_after += 1
        assert during is not None and chunks_after >= 5  # the scrape really was mid-stream
        assert value(during, "deepseek_in_flight", endpoint=ep) == 1
        # the gauge drops when the engine closes the response, which may trail the session's end
        assert plugin.wait_for(lambda: sample(httpx.get(metrics_url).text, "deepseek_in_flight",
                                              endpoint=ep) == 0, timeout=5)
        assert value(httpx.get(metrics_url).text, "deepseek_in_flight", endpoint=ep) == 0


@pytest.fixture(scope="module")
def observed_without_probes():
    """Metrics on, /health probes off: the refused endpoint below is then set aside by the request
    itself (passive health, which counts an ejection). With probes on, the first probe may find
    it down before the request does, and a probe-down endpoint is skipped, never ejected."""
    port = free_port()
    env = {"DEEPSEEK_METRICS_PORT": str(port), "DEEPSEEK_METRICS_ADDR": "127.0.0.1",
           "DEEPSEEK_HEALTH_INTERVAL": "0"}
    with running_plugin(**env) as p:
        yield p, f"http://127.0.0.1:{port}/metrics"


def refused_next_to_live(plugin, metrics_url: str) -> tuple[str, str, str, float]:
    """One request over [refused (primary), live (priority=1)]: (scrape, refused, live, ejections
    of the refused endpoint before)."""
    refused = free_url()
    refused_ep = refused.split("://", 1)[1]
    with Simulator(SimConfig(served_model="deepseek-r1", api_key=KEY)) as sim:
        live_ep = f"127.0.0.1:{sim.port}/v1"
        # the refused endpoint is the primary, so the request always tries it first
        creds = {"endpoint_urls": f"{refused} {sim.base_url} priority=1", "api_key": KEY,
                 "served_model_name": "deepseek-r1"}
        before = sample(httpx.get(metrics_url).text, "deepseek_ejections_total", endpoint=refused_ep)
        r = plugin.invoke_llm(PROVIDER, "deepseek-r1", creds, [user_message("hi")], {})
        assert r.error is None  # failed over to the live endpoint
        return httpx.get(metrics_url).text, refused_ep, live_ep, before


def test_refused_endpoint_is_ejected_and_down_next_to_a_live_one(observed_without_probes):
    # Checked against the recording switched off, in a scratch copy of the repo: Telemetry.ejected,
    # then Telemetry.endpoint_state, a no-op fails the matching assertion ("... series ..., found 0").
    text, refused_ep, live_ep, before = refused_next_to_live(*observed_without_probes)
    assert value(text, "deepseek_ejections_total", endpoint=refused_ep) >= before + 1
    assert value(text, "deepseek_endpoint_up", endpoint=refused_ep) == 0
    assert value(text, "deepseek_requests_total", endpoint=live_ep, outcome="ok") == 1


def test_live_endpoint_is_up_next_to_a_refused_one(observed_without_probes):
    text, refused_ep, live_ep, _ = refused_next_to_live(*observed_without_probes)
    assert value(text, "deepseek_endpoint_up", endpoint=refused_ep) == 0
    assert value(text, "deepseek_endpoint_up", endpoint=live_ep) == 1
