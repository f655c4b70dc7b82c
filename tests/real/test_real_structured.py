"""Structured output on real vLLM (CPU): Dify's json_schema parameter through the plugin reaches
vLLM as response_format, vLLM's guided decoding (xgrammar) constrains the tiny model, and the
answer parses and matches the schema. The tiny model says whatever the grammar allows, so the
schema bounds every string and array to keep the answer within max_tokens."""

from __future__ import annotations

import json

import pytest

from deepseek_engine.reasoning import split_reasoning
from deepseek_engine.structured import mismatch
from scripts.real_vllm import build_model as bm
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import user_message
from tests.real.test_real_vllm import PROVIDER, TIMEOUT, assert_clean, creds, custom_creds

SCHEMA = {"type": "object",
          "properties": {"city": {"type": "string", "maxLength": 8},
                         "population": {"type": "integer"},
                         "capital": {"type": "boolean"},
                         "kind": {"type": "string", "enum": ["city", "town"]},
                         "districts": {"type": "array", "items": {"type": "string", "maxLength": 4},
                                       "maxItems": 2}},
          "required": ["city", "population", "capital", "kind", "districts"], "additionalProperties": False}
DIFY = {"response_format": "json_schema", "json_schema": json.dumps({"schema": SCHEMA, "name": "llm_response"}),
        "temperature": 0.0, "max_tokens": 400}


def structured(plugin, model, credentials, *, stream=True, params=None):
    result = plugin.invoke_llm(PROVIDER, model, credentials, [user_message("Describe Paris as JSON.")],
                               {**DIFY, **(params or {})}, stream=stream, timeout=TIMEOUT)
    assert cr.check_session(result) == [], cr.check_session(result)
    assert_clean(result, blocking=not stream)
    return cr.collect_text(result)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
def test_r1_reasons_then_answers_json_that_matches_the_schema(plugin, vllm_servers, stream):
    text = structured(plugin, "deepseek-r1", creds(vllm_servers["parsed"]), stream=stream)
    reasoning, answer = split_reasoning(text)
    assert reasoning == bm.REASONING  # the grammar holds after the reasoning: R1 thinks freely
    assert mismatch(json.loads(answer), SCHEMA) is None, answer


def test_without_a_reasoning_parser_the_answer_is_the_json_alone(plugin, vllm_servers):
    text = structured(plugin, vllm_servers["raw"].served_name, custom_creds(vllm_servers["raw"]))
    assert "<think>" not in text and mismatch(json.loads(text), SCHEMA) is None, text


def test_a_schema_xgrammar_cannot_take_is_refused_naming_what_to_change(plugin, vllm_servers):
    params = {"response_format": "json_schema", "max_tokens": 50,
              "json_schema": json.dumps({"name": "x", "schema": {"type": "object", "properties": {
                  "tags": {"type": "array", "uniqueItems": True}}}})}
    result = plugin.invoke_llm(PROVIDER, "deepseek-r1", creds(vllm_servers["parsed"]), [user_message("hi")],
                               params, timeout=TIMEOUT)
    assert result.error["error_type"] == "InvokeBadRequestError", result.error
    assert "uniqueItems" in result.error["message"] and "simplify it" in result.error["message"]


@pytest.mark.parametrize("thinking", [True, False], ids=["thinking-on", "thinking-off"])
def test_a_thinking_on_demand_model_answers_the_json_either_way(plugin, vllm_servers, thinking):
    # vLLM's deepseek_v3 reasoning parser must find the reasoning's end (or its absence) for the
    # grammar to hold on the answer
    text = structured(plugin, "deepseek-v3.1", creds(vllm_servers["hybrid"]), params={"thinking": thinking})
    reasoning, answer = split_reasoning(text)
    assert reasoning == (bm.HYBRID_REASONING.strip() if thinking else ""), text
    assert mismatch(json.loads(answer), SCHEMA) is None, answer
