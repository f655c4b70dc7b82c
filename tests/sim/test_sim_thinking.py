"""Hybrid thinking in deepseek_sim: chat_template_kwargs honoured with each family's default, with
and without a reasoning parser; agent loops of several tool calls; the request bodies recorded."""

import httpx
import pytest

from deepseek_sim import SimConfig
from deepseek_sim.script import ANSWER, REASONING, TOOL_REASONING, tool_reasoning
from deepseek_sim.thinking import HYBRID_DEFAULTS
from tests.sim.simtest_util import HI, VLLM_ANSWER, VLLM_REASONING, WEATHER_TOOL, chunks_of, collect, stream_chat


def _reply(sim, **body) -> dict:
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as c:
        r, datas, _ = stream_chat(c, body)
    assert r.status_code == 200
    return collect(chunks_of(datas))


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
@pytest.mark.parametrize("family", list(HYBRID_DEFAULTS))
def test_the_switch_decides_and_its_absence_is_the_server_s_default(make_sim, family, flavor):
    sim = make_sim(hybrid=family, flavor=flavor, shape="reasoning")
    on = _reply(sim, chat_template_kwargs={"thinking": True})
    assert on["reasoning"].strip() == REASONING and on["content"].strip() == ANSWER
    off = _reply(sim, chat_template_kwargs={"thinking": False})
    assert off["reasoning"] == "" and off["content"] == ANSWER
    default = _reply(sim)
    thinks = HYBRID_DEFAULTS[family][0 if flavor == "vllm" else 1]
    assert bool(default["reasoning"]) is thinks
    # the recorded bodies say what each request asked for
    sent = [r.body.get("chat_template_kwargs") for r in sim.requests if r.path.endswith("/chat/completions")]
    assert sent == [{"thinking": True}, {"thinking": False}, None]


def test_defaults_follow_the_facts():
    # issue14-facts section 1: V3.1/V3.2 chat when omitted; V4/V4.1 thinking on current vLLM, chat on SGLang
    assert HYBRID_DEFAULTS["v3.1"] == HYBRID_DEFAULTS["v3.2"] == (False, False)
    assert HYBRID_DEFAULTS["v4"] == HYBRID_DEFAULTS["v4.1"] == (True, False)
    assert HYBRID_DEFAULTS["v3.2-speciale"] == (False, False)  # why a client must send thinking=true


def test_vllm_reads_enable_thinking_and_v4_effort_none(make_sim):
    sim = make_sim(hybrid="v4", shape="reasoning")
    assert _reply(sim, chat_template_kwargs={"thinking": True, "reasoning_effort": "none"})["reasoning"] == ""
    assert _reply(make_sim(hybrid="v3.1", shape="reasoning"),
                  chat_template_kwargs={"enable_thinking": True})["reasoning"] == VLLM_REASONING


def test_without_a_reasoning_parser_the_text_starts_mid_reasoning(make_sim):
    """V3.1/V3.2/V4's prompt ends with <think>: the raw text is reasoning</think>answer."""
    sim = make_sim(hybrid="v3.1", shape="think_close_only")
    on = _reply(sim, chat_template_kwargs={"thinking": True})
    assert on["reasoning"] == "" and on["content"] == REASONING + "\n</think>\n\n" + ANSWER
    assert _reply(sim, chat_template_kwargs={"thinking": False})["content"] == ANSWER


def test_a_model_that_is_not_hybrid_ignores_the_switch(make_sim):
    sim = make_sim(shape="reasoning")  # R1
    assert _reply(sim, chat_template_kwargs={"thinking": False})["reasoning"] == VLLM_REASONING


def test_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="hybrid must be one of"):
        SimConfig(hybrid="v9")


def test_an_agent_loop_calls_the_tool_n_times_each_after_its_own_reasoning(make_sim):
    sim = make_sim(hybrid="v4", shape="reasoning", flavor="sglang")
    messages = [{"role": "user", "content": "weather in three steps [[3 rounds]]"}]
    reasonings = []
    for done in range(3):
        got = _reply(sim, messages=messages, tools=WEATHER_TOOL, tool_choice="auto",
                     chat_template_kwargs={"thinking": True})
        assert got["finish_reason"] == "tool_calls"
        call = got["tool_calls"][0]
        reasonings.append(got["reasoning"])
        messages = [*messages,
                    {"role": "assistant", "content": None, "reasoning_content": got["reasoning"],
                     "tool_calls": [{"id": call["id"], "type": "function",
                                     "function": {"name": call["name"], "arguments": call["arguments"]}}]},
                    {"role": "tool", "tool_call_id": call["id"], "content": f"sunny {done}"}]
    assert reasonings == [tool_reasoning(0), tool_reasoning(1), tool_reasoning(2)]
    assert reasonings[0] == TOOL_REASONING
    last = _reply(sim, messages=messages, tools=WEATHER_TOOL, tool_choice="auto")
    assert last["finish_reason"] == "stop" and last["content"] == "According to the tool, sunny 2."


def test_one_round_is_still_the_default(make_sim):
    sim = make_sim(shape="plain")
    first = _reply(sim, tools=WEATHER_TOOL, tool_choice="auto")
    assert first["finish_reason"] == "tool_calls"
    messages = [*HI, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"}]
    assert _reply(sim, messages=messages, tools=WEATHER_TOOL, tool_choice="auto")["content"] == \
        "According to the tool, rain."


def test_vllm_answer_after_reasoning_keeps_r1_whitespace(make_sim):
    got = _reply(make_sim(hybrid="v3.2", shape="reasoning"), chat_template_kwargs={"thinking": True})
    assert (got["reasoning"], got["content"]) == (VLLM_REASONING, VLLM_ANSWER)
