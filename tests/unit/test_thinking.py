"""Thinking on demand (thinking.thinking_for) and the body it shapes (protocol.build_body): the
switch in chat_template_kwargs, always explicit for hybrid families, and reasoning in the history
by each family's rule."""

from __future__ import annotations

import pytest

from deepseek_engine.errors import BadRequestError
from deepseek_engine.families import family_named
from deepseek_engine.protocol import build_body, clean_messages
from deepseek_engine.thinking import thinking_for

V31, V32, SPECIALE, V4, V41, R1 = (family_named(n) for n in ("v3.1", "v3.2", "v3.2-speciale", "v4", "v4.1", "r1"))


def wire(family, params=None, tools=False):
    t = thinking_for(family, params or {}, tools=tools)
    return t.on, t.wire


def test_a_hybrid_family_is_always_told_its_default_when_the_author_set_nothing():
    assert wire(V31) == (False, {"chat_template_kwargs": {"thinking": False}})
    assert wire(V32) == (False, {"chat_template_kwargs": {"thinking": False}})
    assert wire(V4) == (True, {"chat_template_kwargs": {"thinking": True, "reasoning_effort": "high"},
                               "reasoning_effort": "high"})


def test_the_author_s_switch_and_effort_are_sent_where_servers_read_them():
    assert wire(V31, {"thinking": True}) == (True, {"chat_template_kwargs": {"thinking": True}})
    assert wire(V41, {"thinking": True, "reasoning_effort": "max"}) == (
        True, {"chat_template_kwargs": {"thinking": True, "reasoning_effort": "max"}, "reasoning_effort": "max"})
    # off: no effort at all (V4's parser reads "none" as off; nothing is the clean way)
    assert wire(V4, {"thinking": False, "reasoning_effort": "max"}) == (
        False, {"chat_template_kwargs": {"thinking": False}})
    assert wire(V31, {"thinking": "true"})[0] is True  # the daemon may pass a boolean rule as text


def test_v31_with_tools_thinks_off_and_says_why():
    t = thinking_for(V31, {"thinking": True}, tools=True)
    assert (t.on, t.wire) == (False, {"chat_template_kwargs": {"thinking": False}})
    assert "call tools only without thinking" in t.note
    assert thinking_for(V32, {"thinking": True}, tools=True).on  # V3.2 thinks with tools
    assert thinking_for(V31, {"thinking": True}, tools=False).note is None


def test_speciale_is_always_told_to_think_and_r1_told_nothing():
    assert wire(SPECIALE, {"thinking": False}) == (True, {"chat_template_kwargs": {"thinking": True}})
    assert wire(R1, {"thinking": False}) == (True, {})
    assert wire(family_named("v3"), {"thinking": True}) == (False, {})


def test_bad_switch_values_are_clear_errors():
    with pytest.raises(BadRequestError, match="reasoning_effort 'xhigh' is not a level"):
        thinking_for(V4, {"reasoning_effort": "xhigh"}, tools=False)
    with pytest.raises(BadRequestError, match="thinking must be true or false"):
        thinking_for(V4, {"thinking": "maybe"}, tools=False)


def test_the_switch_never_goes_out_at_the_top_level_and_ocr_gets_its_fields():
    body = build_body("m", [{"role": "user", "content": "q"}], {"thinking": True, "reasoning_effort": "low",
                                                                 "temperature": 1.0},
                      family=V31, thinking=thinking_for(V31, {"thinking": True}, tools=False))
    assert "thinking" not in body and "reasoning_effort" not in body
    assert body["chat_template_kwargs"] == {"thinking": True} and body["temperature"] == 1.0
    ocr = family_named("ocr")
    body = build_body("m", [{"role": "user", "content": "Free OCR."}], {}, family=ocr)
    assert body["skip_special_tokens"] is False and body["vllm_xargs"]["whitelist_token_ids"] == [128821, 128822]
    body["vllm_xargs"]["ngram_size"] = 1
    assert ocr.extra_body["vllm_xargs"]["ngram_size"] == 30  # each body has its own copy


def _turn(reasoning, answer="", calls=False):
    m = {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"}
    if calls:
        m["tool_calls"] = [{"id": reasoning, "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    return m


HISTORY = [{"role": "user", "content": "q1"}, _turn("r1", "a1"),
           {"role": "user", "content": "q2"}, _turn("r2", calls=True),
           {"role": "tool", "tool_call_id": "r2", "content": "t"}, _turn("r3", calls=True),
           {"role": "tool", "tool_call_id": "r3", "content": "t"}]


def kept(rule, tools):
    return [m.get("reasoning_content") for m in clean_messages(HISTORY, rule, tools=tools)
            if m["role"] == "assistant"]


def test_reasoning_goes_back_by_the_family_s_rule():
    assert kept("strip", True) == [None, None, None]
    assert kept("since_last_user", True) == [None, "r2", "r3"]
    assert kept("tool_loop", False) == [None, "r2", "r3"]
    assert kept("tool_loop", True) == ["r1", "r2", "r3"]
    out = clean_messages(HISTORY, "tool_loop", tools=True)
    assert out[3] == {"role": "assistant", "content": None, "reasoning_content": "r2", "reasoning": "r2",
                      "tool_calls": HISTORY[3]["tool_calls"]}
    assert out[1]["content"] == "a1"  # the answer alone, in every case
    assert all("<think>" not in (m.get("content") or "") for m in out)


def test_reasoning_a_caller_sent_as_a_field_is_kept_by_the_same_rule():
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    assert clean_messages(history, "since_last_user")[1]["reasoning"] == "r"
    assert "reasoning" not in clean_messages(history, "strip")[1]
