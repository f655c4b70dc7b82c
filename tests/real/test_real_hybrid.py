"""Thinking on demand against real vLLM: the plugin, launched as the Dify daemon launches it, and a
tiny hybrid model built after DeepSeek-V3.1 (``hybrid`` server in conftest.py: its chat template
reads ``chat_template_kwargs.thinking``, off when absent; ``--reasoning-parser deepseek_v3
--tool-call-parser deepseek_v31``). What the model says is fixed by scripts/real_vllm/build_model.py
(``HYBRID_*``): thinking on, ``reasoning</think>answer`` after a prompt ending ``<think>``; off, the
answer alone after a prompt ending ``</think>``; tools offered, a V3.1 call.

The wire contract under test: the plugin sends the switch as ``chat_template_kwargs: {"thinking":
true|false}`` on every request to a hybrid model (the catalogue's default when the workflow sets
nothing), and turns it off for a V3.1 request that carries tools.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from scripts.real_vllm import build_model as bm
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import assistant_message, tool_message, user_message
from tests.real.test_real_vllm import PROVIDER, WEATHER_TOOL, assert_clean, assert_usage, creds, custom_creds, invoke

MODEL = "deepseek-v3.1"
#: the catalogue card's sampling; max_tokens within the 2048 context
PARAMS = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 512}
THOUGHT = f"<think>\n{bm.HYBRID_REASONING}\n</think>\n\n{bm.HYBRID_ANSWER}"


def _post(server, body: dict) -> tuple[int, dict]:
    """One chat request straight to vLLM (no plugin): its status and JSON answer."""
    req = urllib.request.Request(server.base_url + "/chat/completions", method="POST",
                                 data=json.dumps({"model": server.served_name, "max_tokens": 64, **body}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _switch(ex) -> object:
    """The thinking switch a recorded request carried (``chat_template_kwargs.thinking``)."""
    return (ex.json.get("chat_template_kwargs") or {}).get("thinking", "absent")


# -- the server itself (direct HTTP): what the plugin's requests rely on ----------------------------
@pytest.mark.parametrize("kwargs, reasoning", [
    ({"thinking": True}, bm.HYBRID_REASONING),
    ({"thinking": False}, None),
    (None, None),  # omitted: off, as DeepSeek-V3.1's template
])
def test_vllm_honours_the_switch_in_chat_template_kwargs(vllm_servers, kwargs, reasoning):
    body = {"messages": [{"role": "user", "content": "hi"}]}
    if kwargs is not None:
        body["chat_template_kwargs"] = kwargs
    status, answer = _post(vllm_servers.hybrid, body)
    assert status == 200, answer
    message = answer["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == (reasoning, bm.HYBRID_ANSWER)


def test_vllm_ignores_a_top_level_thinking_field(vllm_servers):
    """Today's plugin copies every model parameter to the top level of the body: vLLM 0.32 drops an
    unknown ``thinking`` there without a word, so the switch must travel in chat_template_kwargs."""
    status, answer = _post(vllm_servers.hybrid, {"messages": [{"role": "user", "content": "hi"}],
                                                 "thinking": True})
    assert status == 200
    assert answer["choices"][0]["message"]["reasoning"] is None


def test_vllm_top_level_reasoning_effort_moves_a_v31_answer_into_reasoning(vllm_servers):
    """Pinned upstream behaviour (vLLM 0.32 ``ChatCompletionRequest.build_chat_params``): a top-level
    ``reasoning_effort`` adds ``enable_thinking: true`` to the template kwargs; the deepseek_v3
    parser reads it and expects reasoning, the V3.1 template reads only ``thinking`` and renders
    chat mode: the whole answer arrives as ``reasoning``, ``content`` null. A client must not send
    a top-level effort to V3.1 (it has no effort knob)."""
    status, answer = _post(vllm_servers.hybrid, {"messages": [{"role": "user", "content": "hi"}],
                                                 "chat_template_kwargs": {"thinking": False},
                                                 "reasoning_effort": "high"})
    assert status == 200
    message = answer["choices"][0]["message"]
    assert (message["reasoning"], message["content"]) == (bm.HYBRID_ANSWER, None), \
        "has vLLM stopped mapping reasoning_effort to enable_thinking? update the docs"


def test_vllm_refuses_an_image_for_a_text_model(vllm_servers):
    """The exact refusal the plugin and the doctor name (an image part to a text-only model)."""
    from deepseek_doctor.images import tiny_png_data_url

    status, answer = _post(vllm_servers.hybrid, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": tiny_png_data_url()}}]}]})
    assert status == 400
    assert answer["error"]["message"] == f"{vllm_servers.hybrid.served_name} is not a multimodal model"


# -- through the plugin -------------------------------------------------------------------------------
def test_thinking_on_shows_the_reasoning_in_a_think_block(plugin, recorded):
    proxy = recorded["hybrid"]
    result = invoke(plugin, MODEL, creds(proxy), params={**PARAMS, "thinking": True})
    assert_clean(result)
    ex = proxy.last_invoke()
    assert ex.json["chat_template_kwargs"] == {"thinking": True}
    assert "thinking" not in ex.json, "the switch goes in chat_template_kwargs only"
    assert any(d.get("reasoning") for d in ex.deltas()), "vLLM sent no reasoning"
    assert cr.collect_text(result) == THOUGHT
    assert cr.finish_reason(result) == "stop"
    assert_usage(result)


@pytest.mark.parametrize("params", [
    pytest.param({**PARAMS, "thinking": False}, id="off"),
    pytest.param(PARAMS, id="unset-catalogue-default-off"),
])
def test_thinking_off_answers_without_reasoning(plugin, recorded, params):
    """Off, or left unset (the catalogue's default for V3.1 is off), the switch is still sent
    explicitly, and the answer comes without a think block."""
    proxy = recorded["hybrid"]
    result = invoke(plugin, MODEL, creds(proxy), params=params)
    assert_clean(result)
    assert _switch(proxy.last_invoke()) is False
    assert cr.collect_text(result) == bm.HYBRID_ANSWER
    assert_usage(result)


def test_thinking_on_blocking(plugin, recorded):
    proxy = recorded["hybrid"]
    result = invoke(plugin, MODEL, creds(proxy), params={**PARAMS, "thinking": True}, stream=False)
    assert_clean(result, blocking=True)
    assert _switch(proxy.last_invoke()) is True
    assert cr.collect_text(result) == THOUGHT


def test_thinking_on_in_a_conversation_sends_no_earlier_reasoning(plugin, recorded):
    """V3.1's template keeps only what follows ``</think>`` of earlier turns: the plugin sends the
    earlier answer alone, and the new turn thinks again."""
    proxy = recorded["hybrid"]
    prompt = [user_message("hi"), assistant_message(THOUGHT), user_message("and again?")]
    result = invoke(plugin, MODEL, creds(proxy), prompt=prompt, params={**PARAMS, "thinking": True})
    assert_clean(result)
    sent = proxy.last_invoke().json
    assert sent["chat_template_kwargs"] == {"thinking": True}
    assert sent["messages"][1] == {"role": "assistant", "content": bm.HYBRID_ANSWER}
    assert cr.collect_text(result) == THOUGHT


def test_tools_turn_thinking_off_and_the_v31_call_is_parsed(plugin, recorded):
    """V3.1 calls tools only without thinking: asked to think with tools offered, the plugin sends
    thinking off; vLLM's deepseek_v31 parser lifts the call out; the answer from the tool result
    follows."""
    proxy = recorded["hybrid"]
    on = {**PARAMS, "thinking": True}
    first = invoke(plugin, MODEL, creds(proxy), prompt=[user_message("What is the weather in Paris?")],
                   params=on, tools=[WEATHER_TOOL])
    assert_clean(first)
    ex = proxy.last_invoke()
    assert _switch(ex) is False
    assert ex.tool_call_arguments() == {0: ("get_weather", bm.TOOL_ARGUMENTS)}
    calls = cr.agent_tool_calls(first)
    assert [(name, args) for _, name, args in calls] == [("get_weather", {"location": "Paris"})]
    assert cr.finish_reason(first) == "tool_calls"
    assert "<think>" not in cr.collect_text(first)
    call = cr.tool_calls(first)[0]

    follow = invoke(plugin, MODEL, creds(proxy), params=on, tools=[WEATHER_TOOL], prompt=[
        user_message("What is the weather in Paris?"),
        assistant_message("", tool_calls=[call]),
        tool_message('{"forecast": "sunny"}', call["id"], name="get_weather"),
    ])
    assert_clean(follow)
    assert _switch(proxy.last_invoke()) is False
    assert cr.collect_text(follow) == bm.HYBRID_RESULT_ANSWER
    assert cr.finish_reason(follow) == "stop"


def test_customizable_model_of_kind_thinking_on_demand(plugin, vllm_servers, recorded):
    """"Add Model" with the served name (no DeepSeek release name) and Model Kind "Thinking on
    demand": Dify offers the Thinking switch (off by default), and it reaches vLLM."""
    proxy, name = recorded["hybrid"], vllm_servers.hybrid.served_name
    credentials = custom_creds(proxy, reasoning="hybrid")
    res = plugin.get_ai_model_schemas(PROVIDER, name, credentials)
    assert res.error is None, res.error
    rules = {r["name"]: r for r in res.chunks[0]["model_schema"]["parameter_rules"]}
    assert rules["thinking"]["default"] is False
    on = invoke(plugin, name, credentials, params={**PARAMS, "thinking": True})
    assert_clean(on)
    assert _switch(proxy.last_invoke()) is True
    assert cr.collect_text(on) == THOUGHT
    off = invoke(plugin, name, credentials, params={**PARAMS, "thinking": False})
    assert_clean(off)
    assert _switch(proxy.last_invoke()) is False
    assert cr.collect_text(off) == bm.HYBRID_ANSWER
