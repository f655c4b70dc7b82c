"""Tool calls from a server that parses none (SGLang without --tool-call-parser, vLLM with another
family's parser): the model's own markup arrives in the text, and Dify must get proper tool calls,
finish reason "tool_calls", and never the markup. The plugin launched as the daemon does."""

from __future__ import annotations

import pytest

from deepseek_sim import SimConfig, Simulator
from deepseek_sim.markup import render, tokens
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import user_message
from tests.protocol.plugin_util import PROVIDER, running_plugin

WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                               "required": ["location"]}}
TWO_CALLS = [("get_weather", {"location": "Paris"}), ("get_weather", {"location": "London"})]
REASONING = "The user wants the weather. I should call the tool."
MARKUP_SIGNS = ("｜", "DSML", "tool▁", "```")


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


def creds(sim) -> dict:
    return {"endpoint_urls": sim.base_url, "api_key": None, "served_model_name": None}


def invoke(plugin, sim, model, stream, params=None):
    return plugin.invoke_llm(PROVIDER, model, creds(sim), [user_message("weather? [[two tools]]")], params or {},
                             tools=[WEATHER_TOOL], stream=stream, timeout=60)


def assert_proper_calls(result, stream, text=""):
    assert result.error is None, result.error
    if stream:
        assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []
    else:
        assert cr.check_non_stream(result) == []
    calls = cr.agent_tool_calls(result)  # what Dify's agents do with each chunk
    assert [(name, args) for _, name, args in calls] == TWO_CALLS
    assert len({call_id for call_id, _, _ in calls}) == 2
    if stream:  # a blocking answer (LLMResult) carries no finish reason
        assert cr.finish_reason(result) == "tool_calls"
    shown = cr.collect_text(result)
    assert not any(sign in shown for sign in MARKUP_SIGNS), shown
    assert shown == text


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
@pytest.mark.parametrize("family", ["v3", "v31", "v32", "v4", "v41"])
def test_markup_in_the_text_becomes_tool_calls(plugin, family, stream):
    """SGLang started without --tool-call-parser: the calls are markup in content, cut into
    one-token deltas (markers split across them)."""
    cfg = SimConfig(served_model="deepseek-v3", shape="plain", flavor="sglang", tool_markup=family)
    with Simulator(cfg) as sim:
        result = invoke(plugin, sim, "deepseek-v3", stream)
    assert_proper_calls(result, stream)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
@pytest.mark.parametrize("family,shape", [("v3", "reasoning"), ("v4", "think_inline"), ("v32", "think_close_only")])
def test_markup_after_reasoning_becomes_tool_calls(plugin, family, shape, stream):
    """A reasoner's thinking (a parser's field, inline tags, or the template's open tag) stays
    reasoning; the markup after it becomes calls (vLLM merging tokens into deltas of three)."""
    cfg = SimConfig(served_model="deepseek-r1", shape=shape, chunk_tokens=3, tool_markup=family)
    with Simulator(cfg) as sim:
        result = invoke(plugin, sim, "deepseek-r1", stream)
    assert_proper_calls(result, stream, text=f"<think>\n{REASONING}\n</think>\n\n")


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "blocking"])
@pytest.mark.parametrize("family,parser", [("v3", "deepseek_v3"), ("v4", "deepseek_v4")])
def test_markup_cut_at_max_tokens_is_a_bad_request_naming_the_flags(plugin, family, parser, stream):
    """The first call is whole, the second cut by max_tokens in its arguments: no half call, no
    markup, and the error says what to raise and which flags make the server parse calls."""
    markup = render([(name, f'{{"location": "{city}"}}') for name, city in
                     [("get_weather", "Paris"), ("get_weather", "London")]], family)
    limit = len(tokens(markup[:markup.index("London")])) + 1  # the reply is the markup alone
    cfg = SimConfig(served_model="deepseek-v3", shape="plain", flavor="sglang", tool_markup=family)
    with Simulator(cfg) as sim:
        result = invoke(plugin, sim, "deepseek-v3", stream, {"max_tokens": limit})
    assert result.error is not None and result.error["error_type"] == "InvokeBadRequestError", result.error
    message = result.error["message"]
    assert "max_tokens" in message and f"--tool-call-parser {parser}" in message
    assert "--enable-auto-tool-choice" in message
    calls = cr.agent_tool_calls(result)
    assert [(name, args) for _, name, args in calls] == (TWO_CALLS[:1] if stream else [])
    shown = cr.collect_text(result)
    assert not any(sign in shown for sign in MARKUP_SIGNS), shown
