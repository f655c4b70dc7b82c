"""Two workspaces' credentials on one URL, through one plugin process: what the server tells one
credential (its served models) is never another's answer."""

from __future__ import annotations

import json

import pytest

from tests.loopback import Loopback, response, sse
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import user_message
from tests.protocol.plugin_util import PROVIDER, running_plugin

# a gateway that serves each key its own deployment of R1
MODELS = {"Bearer key-team-a": "deepseek-ai/DeepSeek-R1", "Bearer key-team-b": "team-b-r1"}


def gateway(req):
    key = req.headers.get("authorization", "")
    if req.path.endswith("/models"):
        if key not in MODELS:
            return response(401, b'{"error": {"message": "unknown key"}}')
        return response(200, json.dumps({"object": "list", "data": [
            {"id": MODELS[key], "object": "model", "max_model_len": 8192}]}).encode())
    if req.path.endswith("/chat/completions"):
        model = json.loads(req.body)["model"]
        if MODELS.get(key) != model:
            return response(404, json.dumps({"error": {"message": f"The model `{model}` does not exist."}}).encode())
        return response(200, sse({"choices": [{"index": 0, "delta": {"content": f"served by {model}"}}]},
                                 {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})
                        + b"data: [DONE]\n\n", "text/event-stream")
    return response(404, b"{}")


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


def test_served_models_are_discovered_per_credential(plugin):
    with Loopback(gateway) as srv:
        texts = {}
        for team in ("a", "b", "a", "b"):
            c = {"endpoint_urls": srv.base_url, "api_key": f"key-team-{team}", "served_model_name": None}
            r = plugin.invoke_llm(PROVIDER, "deepseek-r1", c, [user_message("hi")], {}, timeout=30)
            assert r.error is None, r.error
            assert cr.check_llm_stream(r, require_usage=True) == []
            texts.setdefault(team, set()).add(cr.collect_text(r).split("served by ")[1].split()[0])
    assert texts == {"a": {"deepseek-ai/DeepSeek-R1"}, "b": {"team-b-r1"}}
