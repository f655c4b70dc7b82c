import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepseek_engine import ConfigError, parse_settings
from deepseek_engine.reasoning import ReasoningFormatter, looks_like_reasoner, strip_reasoning

R = "Okay, the user sent me a message. I should reply."
A = "Hello! How can I help?"
WANT = f"<think>\n{R}\n</think>\n\n{A}"


def run(expect, pieces):
    f = ReasoningFormatter(expect)
    return "".join(f.feed(r, c) for r, c in pieces) + f.finish()


def test_reasoning_field_then_content():  # vLLM `reasoning`, SGLang `reasoning_content`
    pieces = [(None, ""), ("Okay, the user", None), (" sent me a message. I should reply.", None),
              (None, ""), (None, "\n\nHello!"), (None, " How can I help?")]
    assert run(True, pieces) == WANT


def test_inline_think_tags():
    assert run(True, [(None, f"<think>\n{R}\n</think>\n\n{A}")]) == WANT
    assert run(False, [(None, f"<think>\n{R}\n</think>\n\n{A}")]) == WANT


def test_a_model_written_open_tag_in_the_reasoning_field_is_dropped():
    # vLLM 0.32's R1 parser: <think> alone in a delta is dropped, merged with the next tokens it is kept
    merged = [("<think>\nOkay, the user", None), (" sent me a message. I should reply.\n", None), (None, f"\n\n{A}")]
    alone = [("<think>", None), ("\n", None), (R, None), (None, f"\n\n{A}")]
    assert run(True, merged) == run(True, alone) == WANT


def test_bare_close_tag_for_a_reasoner():
    assert run(True, [(None, f"{R}\n</think>\n\n{A}")]) == WANT


def test_plain_answer_untouched_for_chat_models():
    assert run(False, [(None, "  Hello"), (None, " <b>world</b> </think> x")]) == "  Hello <b>world</b> </think> x"


def test_unclosed_reasoning_is_closed_at_the_end():
    assert run(True, [("thinking", None)]) == "<think>\nthinking\n</think>\n\n"


def test_partial_open_tag_that_is_not_a_tag_is_released():
    assert run(False, [(None, "<thi"), (None, "s is html")]) == "<this is html"
    assert run(False, [(None, "<th")]) == "<th"


def test_tool_call_closes_the_block():
    f = ReasoningFormatter(True)
    out = f.feed("Need the weather.", None) + f.close_block()
    assert out == "<think>\nNeed the weather.\n</think>\n\n"


@given(st.lists(st.integers(min_value=0, max_value=len(WANT)), max_size=10),
       st.sampled_from(["inline", "bare"]))
def test_tags_split_anywhere_give_one_block(cuts, shape):
    text = f"<think>\n{R}\n</think>\n\n{A}" if shape == "inline" else f"{R}\n</think>\n\n{A}"
    cuts = sorted({c for c in cuts if c <= len(text)})
    pieces = [(None, text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert run(True, pieces) == WANT


def test_strip_reasoning_from_history():
    assert strip_reasoning(WANT) == A
    assert strip_reasoning(f"{R}</think>\n\n{A}") == A
    assert strip_reasoning("no reasoning here") == "no reasoning here"
    assert strip_reasoning("<think>a</think>x <think>b</think>y") == "x y"


@pytest.mark.parametrize("name,reasons", [
    ("deepseek-r1", True), ("deepseek-ai/DeepSeek-R1-0528", True), ("DeepSeek-R1-Distill-Qwen-7B", True),
    ("r1-1776", True), ("team_r1", True), ("deepseek-reasoner", True), ("qwen3-32b-reasoning", True),
    ("my-distill-32b", True), ("deepseek-v3", False), ("deepseek-ai/DeepSeek-V3-0324", False),
    ("qwen2.5-72b-instruct", False), ("llama-3.1-r10", False), ("gpt-oss-20b", False),
])
def test_model_kind_from_the_name(name, reasons):
    assert looks_like_reasoner(name) is reasons


@pytest.mark.parametrize("raw,kind", [(None, None), ("", None), ("reasoning", "reasoning"), ("none", "none"),
                                      ("hybrid", "hybrid")])
def test_model_kind_field_blank_means_from_the_name(raw, kind):
    creds = {"endpoint_urls": "http://gpu-1:8000/v1", **({} if raw is None else {"reasoning": raw})}
    assert parse_settings(creds).reasoning == kind


def test_an_unknown_model_kind_names_the_choices():
    with pytest.raises(ConfigError, match="must be one of none, reasoning, hybrid or blank"):
        parse_settings({"endpoint_urls": "http://gpu-1:8000/v1", "reasoning": "sometimes"})


def test_split_reasoning_recovers_what_dify_keeps_in_the_history():
    from deepseek_engine.reasoning import split_reasoning

    assert split_reasoning(WANT) == (R, A)
    assert split_reasoning(f"{R}\n</think>\n\n{A}") == (R, A)  # the template opened <think>
    assert split_reasoning(A) == ("", A)
    assert split_reasoning("<think>a</think>x <think>b</think>y") == ("a\n\nb", "x y")
    assert split_reasoning("<think>\n\n</think>\n\ncall") == ("", "call")
