"""Issue 14 through the plugin as the daemon runs it: thinking on demand for the hybrid families
(what is sent, what Dify shows), V3.1's tools without thinking, reasoning back in agent loops,
served names with variant suffixes, and the customizable model's thinking-on-demand kind."""

from __future__ import annotations

import json

import pytest

from deepseek_sim import SimConfig, Simulator
from deepseek_sim.script import ANSWER, REASONING, tool_reasoning
from tests.loopback import Loopback, response, sse
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import assistant_message, tool_message, user_message
from tests.protocol.plugin_util import PROVIDER, invokes, last_invoke, running_plugin
from tests.sim.simtest_util import WEATHER_TOOL as OPENAI_TOOLS

WEATHER_TOOL = OPENAI_TOOLS[0]["function"]  # as Dify gives a tool


def shown(reasoning: str, answer: str = "") -> str:
    """What Dify shows of an answer that reasoned: the think block, then the answer."""
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


WANT = shown(REASONING, ANSWER)


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


def creds(url: str, **extra) -> dict:
    return {"endpoint_urls": url, "api_key": None, "served_model_name": None, **extra}


def chat(plugin, sim, model, prompt=None, params=None, **kw):
    result = plugin.invoke_llm(PROVIDER, model, kw.pop("credentials", None) or creds(sim.base_url),
                               prompt or [user_message("hi")], params or {}, timeout=60, **kw)
    assert result.error is None, result.error
    assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []
    return result


def sent(sim) -> dict:
    return last_invoke(sim.requests).body


def hybrid(family: str, served: str, **cfg) -> Simulator:
    return Simulator(SimConfig(served_model=served, hybrid=family, **{"shape": "reasoning", **cfg}))


# -- thinking on demand: V3.1 (off by default) and V4 (on by default, with an effort) -------------
def test_v31_thinks_only_when_asked_and_is_always_told(plugin):
    with hybrid("v3.1", "deepseek-ai/DeepSeek-V3.1") as sim:
        off = chat(plugin, sim, "deepseek-v3.1")
        body = sent(sim)
        assert body["chat_template_kwargs"] == {"thinking": False}  # explicit: the default, sent
        assert "thinking" not in body and "reasoning_effort" not in body
        on = chat(plugin, sim, "deepseek-v3.1", params={"thinking": True})
        body = sent(sim)
    assert body["chat_template_kwargs"] == {"thinking": True} and "thinking" not in body
    assert cr.collect_text(off) == ANSWER
    assert cr.collect_text(on) == WANT


def test_v4_thinks_by_default_at_its_effort_and_stops_when_told(plugin):
    with hybrid("v4", "deepseek-ai/DeepSeek-V4-Flash", flavor="sglang") as sim:  # SGLang: off when omitted
        default = chat(plugin, sim, "deepseek-v4-flash")
        body = sent(sim)
        assert body["chat_template_kwargs"] == {"thinking": True, "reasoning_effort": "high"}
        assert body["reasoning_effort"] == "high"  # where SGLang's V4 path reads it
        most = chat(plugin, sim, "deepseek-v4-flash", params={"reasoning_effort": "max"})
        assert sent(sim)["chat_template_kwargs"]["reasoning_effort"] == sent(sim)["reasoning_effort"] == "max"
        off = chat(plugin, sim, "deepseek-v4-flash", params={"thinking": False, "reasoning_effort": "max"})
        body = sent(sim)
    assert body["chat_template_kwargs"] == {"thinking": False} and "reasoning_effort" not in body
    assert cr.collect_text(default) == cr.collect_text(most) == WANT
    assert cr.collect_text(off) == ANSWER


@pytest.mark.parametrize("thinking,want", [(True, WANT), (False, ANSWER)])
def test_without_a_reasoning_parser_the_switch_decides_what_is_reasoning(plugin, thinking, want):
    """No --reasoning-parser: V4's prompt ends with <think>, so a thinking answer arrives as
    reasoning</think>answer without an opening tag; shown as a think block, never raw. Off, the
    server is told so (vLLM's V4 default is on), and the answer is plain."""
    with hybrid("v4", "deepseek-ai/DeepSeek-V4-Pro", shape="think_close_only") as sim:
        result = chat(plugin, sim, "deepseek-v4-pro", params={"thinking": thinking})
    assert cr.collect_text(result) == want


def test_speciale_is_always_told_to_think(plugin):
    with hybrid("v3.2-speciale", "deepseek-ai/DeepSeek-V3.2-Speciale") as sim:
        result = chat(plugin, sim, "deepseek-v3.2-speciale")
        body = sent(sim)
    assert body["chat_template_kwargs"] == {"thinking": True}  # its encoder renders chat mode otherwise
    assert cr.collect_text(result) == WANT


def test_v31_with_tools_calls_them_without_thinking_and_logs_why(plugin):
    with hybrid("v3.1", "deepseek-ai/DeepSeek-V3.1") as sim:
        before = len(plugin.logs)
        result = chat(plugin, sim, "deepseek-v3.1", params={"thinking": True}, tools=[WEATHER_TOOL])
        body = sent(sim)
    assert body["chat_template_kwargs"] == {"thinking": False}
    assert cr.finish_reason(result) == "tool_calls" and "<think>" not in cr.collect_text(result)
    logs = [str(m["data"]["message"]) for m in plugin.logs[before:]]
    assert any("thinking turned off" in line and "tools only without thinking" in line for line in logs), logs


# -- reasoning back in agent loops -------------------------------------------------------------
PRIOR = [user_message("hello"), assistant_message(shown("earlier thoughts", "hi!")),
         user_message("weather, three times [[3 rounds]]")]


def agent_loop(plugin, sim, model):
    """Dify's function-calling agent: each answer (its think block included, as Dify keeps it)
    goes back as an assistant turn with its tool calls, then the tool's result; returns the
    bodies sent and the final answer."""
    prompt = list(PRIOR)
    bodies, texts = [], []
    for done in range(3):
        result = chat(plugin, sim, model, prompt=prompt, params={"thinking": True}, tools=[WEATHER_TOOL])
        bodies.append(sent(sim))
        assert cr.finish_reason(result) == "tool_calls"
        text = cr.collect_text(result)
        assert text == shown(tool_reasoning(done))
        texts.append(text)
        call = cr.tool_calls(result)[0]
        prompt += [assistant_message(text, tool_calls=[call]), tool_message(f"sunny {done}", call["id"])]
    final = chat(plugin, sim, model, prompt=prompt, params={"thinking": True}, tools=[WEATHER_TOOL])
    bodies.append(sent(sim))
    assert cr.collect_text(final) == shown(REASONING, "According to the tool, sunny 2.")
    return bodies


def reasoning_sent(body) -> list:
    turns = [m for m in body["messages"] if m["role"] == "assistant"]
    for m in turns:  # never the think block in the text; both names when sent
        assert "<think>" not in (m.get("content") or "") and m.get("reasoning") == m.get("reasoning_content")
    return [m.get("reasoning_content") for m in turns]


@pytest.mark.parametrize("model,served,family", [("deepseek-v4-flash", "deepseek-ai/DeepSeek-V4-Flash", "v4"),
                                                 ("deepseek-v4.1-flash", "deepseek-ai/DeepSeek-V4.1-Flash", "v4.1")])
def test_a_v4_agent_loop_sends_every_turn_s_reasoning_back(plugin, model, served, family):
    with hybrid(family, served) as sim:
        bodies = agent_loop(plugin, sim, model)
    rounds = [tool_reasoning(n) for n in range(3)]
    # with tools V4's encoder keeps every assistant turn's reasoning, the earlier exchange's too
    assert [reasoning_sent(b) for b in bodies] == [["earlier thoughts", *rounds[:n]] for n in range(4)]


def test_a_v32_agent_loop_sends_the_reasoning_since_the_last_user_message(plugin):
    with hybrid("v3.2", "deepseek-ai/DeepSeek-V3.2") as sim:
        bodies = agent_loop(plugin, sim, "deepseek-v3.2")
    rounds = [tool_reasoning(n) for n in range(3)]
    assert [reasoning_sent(b) for b in bodies] == [[None, *rounds[:n]] for n in range(4)]


def test_r1_0528_still_strips_reasoning_in_a_tool_loop(plugin):
    """A regression guard (it passes on the code before issue 14 too): R1's templates drop the
    reasoning, so none is sent back, and R1 is told nothing about thinking."""
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1-0528", shape="reasoning")) as sim:
        first = chat(plugin, sim, "deepseek-r1-0528", prompt=PRIOR, tools=[WEATHER_TOOL])
        call = cr.tool_calls(first)[0]
        chat(plugin, sim, "deepseek-r1-0528", tools=[WEATHER_TOOL], prompt=[
            *PRIOR, assistant_message(cr.collect_text(first), tool_calls=[call]), tool_message("sunny", call["id"])])
        body = sent(sim)
    assert reasoning_sent(body) == [None, None]
    assert [m["content"] for m in body["messages"] if m["role"] == "assistant"] == ["hi!", None]
    assert "chat_template_kwargs" not in body


# -- served names with variant suffixes ------------------------------------------------------------
SERVED = ["deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R1-0528", "deepseek-ai/DeepSeek-V4-Flash-0731",
          "nvidia/DeepSeek-V3.1-Terminus-NVFP4", "DeepSeek-V3.2-Speciale", "DeepSeek-V4-Flash-Vision-Exp"]


def test_variant_served_names_resolve_to_their_catalogue_entries(plugin):
    def route(req):
        if req.path.endswith("/models"):
            return response(200, json.dumps({"object": "list", "data": [{"id": i} for i in SERVED]}).encode())
        if req.path.endswith("/chat/completions"):
            return response(200, sse({"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]},
                                     b"[DONE]"), "text/event-stream")
        return response(404, b"{}")

    with Loopback(route) as srv:
        got = {}
        for model in ("deepseek-r1", "deepseek-r1-0528", "deepseek-v4-flash", "deepseek-v3.1-terminus",
                      "deepseek-v3.2-speciale", "deepseek-v3.2", "deepseek-v4-pro"):
            result = plugin.invoke_llm(PROVIDER, model, creds(srv.base_url), [user_message("hi")], {}, timeout=60)
            got[model] = (json.loads(invokes(srv.requests)[-1].body)["model"] if result.error is None
                          else result.error["message"])
            srv.requests.clear()
    assert got["deepseek-r1"] == "deepseek-ai/DeepSeek-R1"  # exact, not its -0528 sibling
    assert got["deepseek-r1-0528"] == "deepseek-ai/DeepSeek-R1-0528"
    assert got["deepseek-v4-flash"] == "deepseek-ai/DeepSeek-V4-Flash-0731"  # never the Vision-Exp one
    assert got["deepseek-v3.1-terminus"] == "nvidia/DeepSeek-V3.1-Terminus-NVFP4"
    assert got["deepseek-v3.2-speciale"] == "DeepSeek-V3.2-Speciale"
    for model in ("deepseek-v3.2", "deepseek-v4-pro"):  # not served: no sibling stands in
        assert "cannot tell which served model is " + model in got[model], got[model]


# -- the customizable model: thinking on demand as a kind ----------------------------------------
def test_a_customizable_hybrid_model_offers_and_sends_the_switch(plugin):
    with hybrid("v3.2", "my-hybrid") as sim:
        c = creds(sim.base_url, reasoning="hybrid")
        schema = plugin.get_ai_model_schemas(PROVIDER, "my-hybrid", c).chunks[0]["model_schema"]
        rules = {r["name"]: r for r in schema["parameter_rules"]}
        assert rules["thinking"]["default"] is False and "reasoning_effort" not in rules
        assert "agent-thought" in schema["features"]
        off = chat(plugin, sim, "my-hybrid", credentials=c)
        assert sent(sim)["chat_template_kwargs"] == {"thinking": False}
        on = chat(plugin, sim, "my-hybrid", credentials=c, params={"thinking": True})
        assert sent(sim)["chat_template_kwargs"] == {"thinking": True}
        chat_kind = plugin.get_ai_model_schemas(PROVIDER, "my-hybrid", creds(sim.base_url, reasoning="none"))
    assert cr.collect_text(off) == ANSWER and cr.collect_text(on) == WANT
    assert "thinking" not in {r["name"] for r in chat_kind.chunks[0]["model_schema"]["parameter_rules"]}


def test_a_customizable_v4_keeps_its_family_s_efforts(plugin):
    with hybrid("v4", "DeepSeek-V4-Pro-0813") as sim:
        c = creds(sim.base_url)  # kind left blank: the name says V4
        schema = plugin.get_ai_model_schemas(PROVIDER, "DeepSeek-V4-Pro-0813", c).chunks[0]["model_schema"]
        rules = {r["name"]: r for r in schema["parameter_rules"]}
        assert rules["thinking"]["default"] is True
        assert rules["reasoning_effort"]["options"] == ["low", "high", "max"]
        chat(plugin, sim, "DeepSeek-V4-Pro-0813", credentials=c, params={"reasoning_effort": "low"})
        assert sent(sim)["chat_template_kwargs"] == {"thinking": True, "reasoning_effort": "low"}


# -- continuation of a cut stream -----------------------------------------------------------------
def cut_once(plugin, sim, model, after, params):
    res = plugin.validate_model_credentials(PROVIDER, model, creds(sim.base_url))  # the warm-up, first
    assert res.error is None, res.error
    since = len(sim.requests)
    sim.inject("drop_mid_stream", after=after)
    result = plugin.invoke_llm(PROVIDER, model, creds(sim.base_url), [user_message("hi")], params, timeout=60)
    return result, [r.body for r in invokes(sim.requests, since)]


def test_a_cut_v31_thinking_answer_is_continued_with_its_switch(plugin):
    with hybrid("v3.1", "deepseek-ai/DeepSeek-V3.1") as sim:
        result, bodies = cut_once(plugin, sim, "deepseek-v3.1", 24, {"thinking": True})
    assert result.error is None, result.error
    assert cr.collect_text(result) == WANT
    assert len(bodies) == 2 and bodies[1]["continue_final_message"] is True
    assert bodies[1]["chat_template_kwargs"] == {"thinking": True}  # the continuation thinks as the start did


def test_a_cut_v4_answer_is_not_continued_where_the_server_would_ignore_it(plugin):
    """vLLM's V4 encoder (tokenizers/deepseek_v4.py) ignores continue_final_message and renders
    the prefill as a finished turn: a continuation would be garbage, so the cut is reported
    after what was shown."""
    with hybrid("v4", "deepseek-ai/DeepSeek-V4-Flash") as sim:
        result, bodies = cut_once(plugin, sim, "deepseek-v4-flash", 24, {})
    assert len(bodies) == 1
    assert result.error["error_type"] == "InvokeConnectionError" and "cut off" in result.error["message"]
    assert cr.collect_text(result).startswith(shown(REASONING))


def test_ocr_requests_carry_the_recipe_s_fields(plugin):
    """DeepSeek-OCR's recipe: special tokens kept (grounding boxes) and the n-gram no-repeat
    logits processor's arguments, on every request; no thinking switch."""
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-OCR", shape="plain")) as sim:
        result = chat(plugin, sim, "deepseek-ocr", prompt=[user_message("Free OCR.")])
        body = sent(sim)
    assert cr.collect_text(result) == ANSWER
    assert body["skip_special_tokens"] is False
    assert body["vllm_xargs"] == {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}
    assert "chat_template_kwargs" not in body
