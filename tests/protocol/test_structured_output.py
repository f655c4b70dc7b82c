"""Issue 19 through the plugin as the daemon runs it: Dify's structured output (its json_schema
parameter and response_format) as the request vLLM and SGLang constrain decoding with, for V3,
R1 (reasoning shown, answer constrained), a thinking-on-demand model and the customizable model;
and the refusals: a schema the backend cannot take, a server without a grammar backend, a proxy
that drops the constraint."""

from __future__ import annotations

import json

import pytest

from deepseek_engine.reasoning import split_reasoning
from deepseek_engine.structured import mismatch
from deepseek_sim import SimConfig, Simulator
from deepseek_sim.script import REASONING
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import user_message
from tests.protocol.plugin_util import PROVIDER, invokes, last_invoke, running_plugin
from tests.protocol.test_thinking import creds

SCHEMA = {"type": "object",
          "properties": {"city": {"type": "string"}, "population": {"type": "integer"},
                         "kind": {"type": "string", "enum": ["capital", "town"]},
                         "districts": {"type": "array", "items": {"type": "string"}}},
          "required": ["city", "population", "kind", "districts"], "additionalProperties": False}
# what Dify's LLM node sends with structured output on (structured_output.py, _handle_native_json_schema)
DIFY = {"response_format": "json_schema", "json_schema": json.dumps({"schema": SCHEMA, "name": "llm_response"})}
WIRE = {"type": "json_schema", "json_schema": {"name": "llm_response", "schema": SCHEMA}}


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


def ask(plugin, sim, model, params, **extra):
    return plugin.invoke_llm(PROVIDER, model, creds(sim.base_url, **extra), [user_message("Paris?")], params,
                             timeout=60)


def answered(result) -> str:
    assert result.error is None, result.error
    assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []
    return cr.collect_text(result)


def test_v3_sends_the_schema_and_answers_json_that_matches_it(plugin):
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-V3", shape="plain")) as sim:
        text = answered(ask(plugin, sim, "deepseek-v3", DIFY))
        body = last_invoke(sim.requests).body
        assert body["response_format"] == WIRE and "json_schema" not in body
        assert mismatch(json.loads(text), SCHEMA) is None  # the whole answer is the JSON
        answered(ask(plugin, sim, "deepseek-v3", {"response_format": "json_object"}))
        assert last_invoke(sim.requests).body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_r1_reasons_as_usual_and_its_answer_is_the_constrained_json(plugin, flavor):
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1", shape="reasoning", flavor=flavor)) as sim:
        text = answered(ask(plugin, sim, "deepseek-r1", DIFY))
        assert last_invoke(sim.requests).body["response_format"] == WIRE
    reasoning, answer = split_reasoning(text)
    assert text.startswith("<think>\n") and reasoning == REASONING
    assert mismatch(json.loads(answer), SCHEMA) is None


@pytest.mark.parametrize("shape", ["think_inline", "think_close_only"])
def test_r1_on_a_server_without_a_reasoning_parser_answers_the_json_alone(plugin, shape):
    # the grammar then holds from the first token: the JSON is the answer, not reasoning
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1", shape=shape)) as sim:
        text = answered(ask(plugin, sim, "deepseek-r1", DIFY))
    assert "<think>" not in text and mismatch(json.loads(text), SCHEMA) is None


def test_a_thinking_on_demand_model_thinks_then_answers_the_json(plugin):
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-V3.1", hybrid="v3.1", shape="reasoning")) as sim:
        text = answered(ask(plugin, sim, "deepseek-v3.1", {**DIFY, "thinking": True}))
        body = last_invoke(sim.requests).body
    assert body["response_format"] == WIRE and body["chat_template_kwargs"] == {"thinking": True}
    reasoning, answer = split_reasoning(text)
    assert reasoning and mismatch(json.loads(answer), SCHEMA) is None


def test_the_customizable_model_declares_it_by_its_switch(plugin):
    with Simulator(SimConfig(served_model="my-r1", shape="reasoning")) as sim:
        on = plugin.get_ai_model_schemas(PROVIDER, "my-r1", creds(sim.base_url)).chunks[0]["model_schema"]
        off = plugin.get_ai_model_schemas(PROVIDER, "my-r1", creds(
            sim.base_url, structured_output_support="no_support")).chunks[0]["model_schema"]
        text = answered(ask(plugin, sim, "my-r1", DIFY))
        assert last_invoke(sim.requests).body["response_format"] == WIRE
        # switched off, Dify's SDK drops the parameters the schema has no rule for: nothing is sent
        answered(ask(plugin, sim, "my-r1", DIFY, structured_output_support="no_support"))
        assert "response_format" not in last_invoke(sim.requests).body
    assert "structured-output" in on["features"] and "structured-output" not in off["features"]
    rules = {r["name"]: r for r in on["parameter_rules"]}
    assert rules["response_format"]["options"] == ["text", "json_object", "json_schema"] and "json_schema" in rules
    assert not {"response_format", "json_schema"} & {r["name"] for r in off["parameter_rules"]}
    assert mismatch(json.loads(split_reasoning(text)[1]), SCHEMA) is None


def test_a_schema_the_backend_cannot_take_is_refused_naming_what_to_change(plugin):
    schema = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}
    params = {"response_format": "json_schema", "json_schema": json.dumps({"name": "x", "schema": schema})}
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-V3", shape="plain")) as sim:
        result = ask(plugin, sim, "deepseek-v3", params)
    assert result.error["error_type"] == "InvokeBadRequestError", result.error
    assert "uniqueItems" in result.error["message"] and "simplify it" in result.error["message"]


def test_a_server_without_a_grammar_backend_is_refused_naming_the_flag(plugin):
    cfg = SimConfig(served_model="deepseek-ai/DeepSeek-V3", shape="plain", flavor="sglang", grammar_backend="none")
    with Simulator(cfg) as sim:
        result = ask(plugin, sim, "deepseek-v3", DIFY)
    assert result.error["error_type"] == "InvokeBadRequestError", result.error
    assert "--grammar-backend none" in result.error["message"]


def test_an_answer_a_proxy_left_unconstrained_is_never_passed_off_as_constrained(plugin):
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-V3", shape="plain", grammar_backend="ignored")) as sim:
        result = ask(plugin, sim, "deepseek-v3", DIFY)
    assert result.error is not None and "does not constrain its output" in result.error["message"], result.error
    assert "response_format" in result.error["message"]


def test_a_schema_that_is_not_one_is_refused_before_sending(plugin):
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-V3", shape="plain")) as sim:
        result = ask(plugin, sim, "deepseek-v3", {"response_format": "json_schema", "json_schema": "{oops"})
        with pytest.raises(LookupError):
            last_invoke(sim.requests)  # nothing was sent
    assert result.error["error_type"] == "InvokeBadRequestError" and "not valid JSON" in result.error["message"]


def test_a_cut_constrained_answer_is_not_continued_but_a_blocking_one_is_retried(plugin):
    # a continuation's grammar would start a second JSON document inside the first
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1", shape="reasoning")) as sim:
        sim.inject("drop_mid_stream", after=20)  # in the JSON
        cut = ask(plugin, sim, "deepseek-r1", DIFY)
        assert not any(r.body.get("continue_final_message") for r in invokes(sim.requests))
        sim.inject("drop_mid_stream", after=20)
        whole = plugin.invoke_llm(PROVIDER, "deepseek-r1", creds(sim.base_url), [user_message("Paris?")], DIFY,
                                  stream=False, timeout=60)
    assert cut.error["error_type"] == "InvokeConnectionError" and "cut off" in cut.error["message"], cut.error
    assert whole.error is None, whole.error
    assert mismatch(json.loads(split_reasoning(cr.collect_text(whole))[1]), SCHEMA) is None
