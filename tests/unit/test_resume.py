"""Continuing a stream cut after its first tokens: what is asked, and how the rest is shown."""

import pytest

from deepseek_engine.errors import IdleTimeout, StreamBrokenError
from deepseek_engine.protocol import ChatDelta
from deepseek_engine.resume import (
    Progress,
    StartedOver,
    budget_spent,
    continuation_body,
    continuation_timeouts,
    continue_on,
    relabel,
    unless_started_over,
)
from deepseek_engine.settings import Timeouts, parse_endpoints

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "stream": True}


def progress(*deltas: ChatDelta) -> Progress:
    p = Progress()
    for d in deltas:
        p.record(d)
    return p


def test_reasoning_from_a_parser_goes_back_inside_think():
    p = progress(ChatDelta(reasoning="Okay,"), ChatDelta(reasoning=" the user"))
    assert p.generated() == "<think>\nOkay, the user" and not p.answering
    p.record(ChatDelta(content="\n\nHello!"))
    assert p.generated() == "\n\nHello!" and p.answering  # what R1's template keeps of it


def test_inline_think_tags_are_kept_as_sent():
    p = progress(ChatDelta(content="<think>\nOkay,"), ChatDelta(content=" the user"))
    assert p.generated() == "<think>\nOkay, the user"
    p.record(ChatDelta(content="</think>\n\nHello!"))
    assert p.generated() == "\n\nHello!"


def test_the_continuation_asks_to_go_on_from_what_was_shown():
    body = continuation_body(BODY, progress(ChatDelta(reasoning="Okay,"), ChatDelta(reasoning=" the"),
                                            ChatDelta(reasoning=" user"), ChatDelta(usage={"x": 1})))
    assert body["messages"] == [*BODY["messages"], {"role": "assistant", "content": "<think>\nOkay, the user"}]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["max_tokens"] == 97 and body["stream"] is True
    assert BODY["messages"] == [{"role": "user", "content": "hi"}]  # the original is untouched


def test_no_continuation_when_it_cannot_be_one():
    assert continuation_body(BODY, Progress()) is None  # nothing shown: a plain retry instead
    assert continuation_body(BODY, progress(ChatDelta(content="a", finish_reason="stop"))) is None
    assert continuation_body(BODY, progress(ChatDelta(tool_calls=[{"index": 0}]))) is None
    # the budget is spent (by a lower bound): the cut was the end, one more token too many
    for used in (100, 120):
        spent = progress(*[ChatDelta(content="a")] * used)
        assert budget_spent(BODY, spent) and continuation_body(BODY, spent) is None
    one_left = progress(*[ChatDelta(content="a")] * 99)
    assert not budget_spent(BODY, one_left) and continuation_body(BODY, one_left)["max_tokens"] == 1
    merged = progress(ChatDelta(content="Hello world, how", events=4))  # one network read, 4 tokens
    assert continuation_body(BODY, merged)["max_tokens"] == 96
    unlimited = {k: v for k, v in BODY.items() if k != "max_tokens"}
    assert "max_tokens" not in continuation_body(unlimited, progress(ChatDelta(content="a")))
    assert not budget_spent(unlimited, progress(*[ChatDelta(content="a")] * 10**4))


def test_a_continued_answer_labelled_reasoning_is_shown_as_answer():
    answering = progress(ChatDelta(reasoning="R"), ChatDelta(content="Hello"))
    d = relabel(ChatDelta(reasoning=" world", usage={"prompt_tokens": 9}), answering)
    assert (d.reasoning, d.content, d.usage) == ("", " world", None)
    reasoning = progress(ChatDelta(reasoning="Okay,"))
    d = relabel(ChatDelta(reasoning=" the user"), reasoning)  # still reasoning: stays reasoning
    assert (d.reasoning, d.content) == (" the user", "")


def _judged(shown: str, *texts: str, label: str = "reasoning") -> list[str]:
    """What a continuation of ``shown`` that sends ``texts`` delivers; raises StartedOver."""
    deltas = [ChatDelta(**{label: t}) for t in texts]
    return [d.reasoning + d.content for d in unless_started_over(iter(deltas), shown)]


def test_a_fresh_start_is_told_from_a_continuation():
    shown = "Okay, the user sent"
    for fresh in (["Okay,", " the user"], ["Okay, the user sent me"], ["Oka", "y", ", t", "he"]):
        with pytest.raises(StartedOver):
            _judged(shown, *fresh, " more")  # the answer from the top again, however merged
    with pytest.raises(StartedOver):
        _judged(shown, "Okay,", " the user", label="content")  # whatever the label
    assert _judged(shown, " me", " a message.") == [" me", " a message."]  # a continuation
    assert _judged(shown, "Okay") == ["Okay"]  # ended before it could be told: it continued
    # the first text shown was short: a fresh start is still caught, over all of what was shown
    with pytest.raises(StartedOver):
        _judged("I", "I", " am")
    assert _judged("I", " am", " here") == [" am", " here"]
    assert _judged("\n", "\n", "Hello") == ["\n", "Hello"]  # blank: nothing to tell by


def test_repeated_text_is_held_until_it_can_be_told():
    seen = []

    def sent():
        for t in ("Okay", ", t", " cat"):  # repeats "Okay, t" (6 non-blank), then differs
            seen.append(t)
            yield ChatDelta(reasoning=t)

    out = unless_started_over(sent(), "Okay, the user")
    assert next(out).reasoning == "Okay" and seen == ["Okay", ", t", " cat"]  # held till told
    assert [d.reasoning for d in out] == [", t", " cat"]


def test_a_stall_is_continued_elsewhere_only_and_a_cut_anywhere():
    a, b, c = parse_endpoints("http://gpu-a:8000/v1, http://gpu-b:8000/v1, http://gpu-c:8000/v1")
    stalled, cut = IdleTimeout("stalled", endpoint="gpu-b"), StreamBrokenError("cut", endpoint="gpu-b")
    assert continue_on(stalled, b, [a, b, c]) == [a, c]
    assert continue_on(stalled, b, [b]) == []  # a lone endpoint that stalled: the error stands
    assert continue_on(cut, b, [b, a, c]) == [a, c, b]  # the others first, the cut one last


def test_a_continuation_must_start_within_idle():
    assert continuation_timeouts(Timeouts(first_token=300, idle=60)) == Timeouts(first_token=60, idle=60)
    assert continuation_timeouts(Timeouts(first_token=5, idle=60)).first_token == 5


def test_a_continuation_keeps_the_conversation_s_images():
    turn = {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}
    body = {**BODY, "messages": [turn]}
    out = continuation_body(body, progress(ChatDelta(content="It is")))
    assert out["messages"] == [turn, {"role": "assistant", "content": "It is"}]
