"""Tool calls the model wrote as text (no tool parser on the server), read back into calls."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepseek_engine.answer import AnswerAssembler
from deepseek_engine.errors import BadRequestError, StreamBrokenError
from deepseek_engine.protocol import ChatDelta
from deepseek_engine.toolmarkup import BadMarkup, CutMarkup, ToolMarkup, parser_flags

CALLS = [("get_weather", {"location": "杭州", "days": 3}),
         ("search", {"query": "天气 \"today\"\nline two", "filters": {"lang": ["zh", "en"]}, "exact": False})]


def v3(calls, join=""):
    return ("<｜tool▁calls▁begin｜>" + join.join(
        f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{json.dumps(args, ensure_ascii=False)}\n```"
        "<｜tool▁call▁end｜>" for name, args in calls) + "<｜tool▁calls▁end｜>")


def v31(calls):
    return ("<｜tool▁calls▁begin｜>" + "".join(
        f"<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{json.dumps(args, ensure_ascii=False)}<｜tool▁call▁end｜>"
        for name, args in calls) + "<｜tool▁calls▁end｜>")


def dsml(calls, block="tool_calls", space=""):
    tag, close = "<｜DSML｜" + space, "</｜DSML｜" + space
    out = f"\n\n{tag}{block}>\n"
    for name, args in calls:
        out += f'{tag}invoke name="{name}">\n'
        for k, v in args.items():
            text, kind = (v, "true") if isinstance(v, str) else (json.dumps(v, ensure_ascii=False), "false")
            out += f'{tag}parameter name="{k}" string="{kind}">{text}{close}parameter>\n'
        out += f"{close}invoke>\n"
    return out + f"{close}{block}>"


FAMILIES = {
    "v3": v3(CALLS),
    "v3-r1": v3(CALLS, join="\n"),
    "v31": v31(CALLS),
    "v32": dsml(CALLS, "function_calls"),
    "v4": dsml(CALLS),
    "v41": dsml(CALLS, "calls", " "),
}
BEFORE = "好的，我来查一下。"
AFTER = " Done."


def run(chunks, in_reasoning=lambda: False):
    """Text and calls out of ``chunks`` fed one by one, then finished."""
    m = ToolMarkup()
    text, calls = [], []
    for c in chunks:
        for part in m.feed(c, in_reasoning):
            (text if isinstance(part, str) else calls).append(part)
    text.append(m.finish())
    return "".join(text), calls, m


def plain(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_split_at_every_position(family):
    whole = BEFORE + FAMILIES[family] + AFTER
    for i in range(len(whole) + 1):
        text, calls, _ = run([whole[:i], whole[i:]])
        assert text == BEFORE + AFTER.lstrip(), i
        assert plain(calls) == CALLS, i
        assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
        assert len({c["id"] for c in calls}) == 2


@settings(max_examples=60, deadline=None)
@given(family=st.sampled_from(sorted(FAMILIES)), cuts=st.lists(st.integers(0, 600), max_size=40))
def test_every_family_in_any_pieces(family, cuts):
    whole = BEFORE + FAMILIES[family] + AFTER
    points = sorted({min(c, len(whole)) for c in cuts})
    chunks = [whole[a:b] for a, b in zip([0, *points], [*points, len(whole)], strict=True)]
    text, calls, _ = run(chunks)
    assert text == BEFORE + AFTER.lstrip() and plain(calls) == CALLS


def test_text_before_the_markup_passes_at_once_and_a_possible_marker_is_held_only_while_it_may_be_one():
    m = ToolMarkup()
    assert list(m.feed("Hello there")) == ["Hello there"]
    assert list(m.feed(" and <｜DSML｜tool")) == [" and"]  # the blank waits with the marker
    assert m.holding
    assert list(m.feed("s and more")) == [" <｜DSML｜tools and more"]  # not a marker after all
    assert not m.holding
    assert list(m.feed("<")) == [] and list(m.feed("b>")) == ["<b>"]
    assert list(m.feed("x\n\n")) == ["x"] and list(m.feed("<")) == []
    assert m.finish() == "\n\n<"  # a lone "<" at the end is text


def test_each_call_comes_out_as_soon_as_it_is_whole():
    m = ToolMarkup()
    block = FAMILIES["v4"]
    first_end = block.index("</｜DSML｜invoke>") + len("</｜DSML｜invoke>")
    out = list(m.feed(block[:first_end]))
    assert plain(out) == CALLS[:1]
    assert plain(list(m.feed(block[first_end:]))) == CALLS[1:]


def test_two_blocks_and_text_between_them():
    whole = "A" + v31(CALLS[:1]) + "\nB " + FAMILIES["v4"] + "\nC"
    text, calls, m = run([whole])
    assert text == "ABC" and plain(calls)  # the blanks around a block are dropped == CALLS[:1] + CALLS
    assert m.family == "v4"


def test_dsml_values_string_true_verbatim_string_false_json():
    block = ('<｜DSML｜function_calls>\n<｜DSML｜invoke name="f">\n'
             '<｜DSML｜parameter name="s" string="true">3</｜DSML｜parameter>\n'
             '<｜DSML｜parameter name="n" string="false">3.5</｜DSML｜parameter>\n'
             '<｜DSML｜parameter name="b" string="false">true</｜DSML｜parameter>\n'
             '<｜DSML｜parameter name="o" string="false">{"a": [1, null]}</｜DSML｜parameter>\n'
             '<｜DSML｜parameter name="raw" string="false">not json</｜DSML｜parameter>\n'
             '<｜DSML｜parameter name="z" string="true"> 北京\n</｜DSML｜parameter>\n'
             '</｜DSML｜invoke>\n</｜DSML｜function_calls>')
    _, calls, m = run([block])
    # like vLLM, a string="false" value that is not JSON stays the string
    assert plain(calls) == [("f", {"s": "3", "n": 3.5, "b": True, "o": {"a": [1, None]}, "raw": "not json",
                                   "z": " 北京\n"})]
    assert calls[0]["function"]["arguments"].startswith('{"s": "3"')  # a JSON object, in order
    assert m.family == "v32"


def test_a_call_without_parameters_has_empty_arguments():
    _, calls, _ = run(['<｜DSML｜ calls>\n<｜DSML｜ invoke name="now">\n</｜DSML｜ invoke>\n</｜DSML｜ calls>'])
    assert plain(calls) == [("now", {})]


def test_a_call_the_block_end_closes_is_read_as_vllm_reads_it():
    block = FAMILIES["v4"].replace("</｜DSML｜invoke>\n</｜DSML｜tool_calls>", "</｜DSML｜tool_calls>")
    _, calls, _ = run([block])
    assert plain(calls) == CALLS


def test_the_end_of_reasoning_is_cut_markup_only_where_a_block_may_begin():
    m = ToolMarkup()
    assert list(m.feed("I think <｜tool▁calls", lambda: True)) == ["I think"]
    assert m.finish(in_reasoning=True) == " <｜tool▁calls"  # V3's marker is reasoning there
    m = ToolMarkup()
    list(m.feed("I think <｜DSML｜tool", lambda: True))
    with pytest.raises(CutMarkup) as e:
        m.finish(in_reasoning=True)
    assert e.value.family == "v4"


def test_v3_and_v31_told_apart_by_what_follows_the_separator():
    _, calls, m = run([v31([("function", {"a": 1})])])  # a V3.1 tool named "function"
    assert plain(calls) == [("function", {"a": 1})] and m.family == "v31"
    _, calls, m = run([v3([("lookup", {"a": 1})])])
    assert plain(calls) == [("lookup", {"a": 1})] and m.family == "v3"


@pytest.mark.parametrize("markup", [
    v3(CALLS).replace('{"location"', '{location'),  # arguments not JSON
    v31([("f", {"a": 1})]).replace('{"a": 1}', "[1]"),  # not an object
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f {}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",  # no separator
    "<｜tool▁calls▁begin｜>chatter<｜tool▁calls▁end｜>",
    dsml(CALLS).replace('invoke name="get_weather"', "invoke"),
    dsml(CALLS).replace('string="false">3', 'string="maybe">3'),
    dsml(CALLS).replace("</｜DSML｜invoke>\n<｜DSML｜invoke", "</｜DSML｜invoke>\nstray<｜DSML｜invoke"),
])
def test_malformed_markup_is_refused(markup):
    with pytest.raises(BadMarkup):
        run([markup])


@pytest.mark.parametrize("markup,cut_at,family,name", [
    (FAMILIES["v4"], "tool_calls>", "any", ""),  # the text ended in "<｜DSML｜"
    (FAMILIES["v4"], "ls>", "v4", ""),
    (FAMILIES["v3"], "ls▁begin", "v3/v31", ""),
    (FAMILIES["v4"], "杭州", "v4", "get_weather"),
    (FAMILIES["v41"], "search", "v41", ""),
    (FAMILIES["v41"], "天气", "v41", "search"),
    (FAMILIES["v3"], "杭州", "v3", "get_weather"),
    (FAMILIES["v31"], "杭州", "v31", "get_weather"),
    (FAMILIES["v3"], "<｜tool▁sep｜>", "v3/v31", ""),
    (FAMILIES["v32"], "</｜DSML｜function_calls>", "v32", ""),
])
def test_markup_cut_short_is_named_at_the_end(markup, cut_at, family, name):
    text = markup[:markup.index(cut_at)]
    m = ToolMarkup()
    list(m.feed(text))
    with pytest.raises(CutMarkup) as e:
        m.finish()
    assert e.value.family == family and e.value.name == name


def test_markup_inside_reasoning_is_reasoning_except_a_v4_block():
    for family in ("v3", "v31", "v32"):
        text, calls, _ = run(["thinking about " + FAMILIES[family]], in_reasoning=lambda: True)
        assert calls == [] and text == "thinking about " + FAMILIES[family]
    for family in ("v4", "v41"):  # vLLM's V4 parser: the block may begin inside <think>
        text, calls, _ = run(["thinking" + FAMILIES[family]], in_reasoning=lambda: True)
        assert text == "thinking" and plain(calls) == CALLS


def test_parser_flags_name_each_family_for_vllm_and_sglang():
    assert parser_flags("v4") == ("start vLLM with --enable-auto-tool-choice --tool-call-parser deepseek_v4, "
                                  "or SGLang with --tool-call-parser deepseekv4")
    assert "deepseek_v31" in parser_flags("v31") and "deepseekv32" in parser_flags("v32")
    assert "deepseek_v3 (V3, R1) or deepseek_v31 (V3.1)" in parser_flags("v3/v31")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([*"ab <>｜/\n", "<｜", "<｜DSML｜", "<｜tool▁calls", "<｜DSML｜ call"]), max_size=30)
       .map("".join))
def test_text_without_a_whole_marker_comes_out_unchanged(text):
    text += "."  # not ending in a marker's start (that is cut markup)
    if any(s in text for s in ("<｜tool▁calls▁begin｜>", "<｜DSML｜tool_calls>", "<｜DSML｜ calls>")):
        return
    out, calls, _ = run(list(text))
    assert out == text and calls == []


# -- the answer path ----------------------------------------------------------------------------
def assemble(deltas, *, tools=True, expect_reasoning=False):
    a = AnswerAssembler(expect_reasoning, tool_markup=tools)
    text, calls = [], []
    for d in deltas:
        if p := a.feed(d):
            text.append(p.text)
            calls += p.tool_calls
    last = a.finish()
    return "".join(text) + last.text, calls + last.tool_calls, a


def content(text, size=3, finish="stop"):
    out = [ChatDelta(content=text[i:i + size]) for i in range(0, len(text), size)]
    out[-1].finish_reason = finish
    return out


def test_without_tools_markup_is_left_as_text():
    text, calls, a = assemble(content("see " + FAMILIES["v4"]), tools=False)
    assert text == "see " + FAMILIES["v4"] and calls == [] and a.finish_reason == "stop"


@pytest.mark.parametrize("family", FAMILIES)
def test_with_tools_the_answer_carries_calls_and_finish_reason_tool_calls(family):
    text, calls, a = assemble(content(BEFORE + FAMILIES[family]))
    assert text == BEFORE and plain(calls) == CALLS and a.finish_reason == "tool_calls"
    assert "".join(a.produced) == BEFORE + FAMILIES[family]  # counted once, as the model wrote it


def test_reasoning_field_then_markup_in_content():
    deltas = [ChatDelta(reasoning="Need the weather.\n"), ChatDelta(content="\n\n<"),
              *content("｜" + FAMILIES["v3"][2:])]
    text, calls, _ = assemble(deltas, expect_reasoning=True)
    assert text == "<think>\nNeed the weather.\n</think>\n\n" and plain(calls) == CALLS


def test_a_possible_marker_held_at_the_end_of_the_reasoning_field_is_reasoning():
    deltas = [ChatDelta(reasoning="Hmm <｜"), ChatDelta(content="Hi" + FAMILIES["v4"], finish_reason="stop")]
    text, calls, _ = assemble(deltas, expect_reasoning=True)
    assert text == "<think>\nHmm <｜\n</think>\n\nHi" and plain(calls) == CALLS


@pytest.mark.parametrize("expect_reasoning", [False, True])
def test_text_held_at_the_end_of_the_reasoning_field_stays_in_its_block_when_a_parsed_call_follows(
        expect_reasoning):
    # vLLM's own parser sent the call: the blank the markup reader held (a block may have begun
    # there) is reasoning, not a second, empty think block after the call (seen on real vLLM)
    deltas = [ChatDelta(reasoning="Need the weather."), ChatDelta(reasoning=" I will call it.\n"),
              ChatDelta(tool_calls=[{"index": 0, "id": "c1", "type": "function", "function": {"name": "get_weather"}}]),
              ChatDelta(tool_calls=[{"index": 0, "function": {"arguments": '{"location": "Paris"}'}}]),
              ChatDelta(finish_reason="tool_calls")]
    text, calls, _ = assemble(deltas, expect_reasoning=expect_reasoning)
    plain_text, plain_calls, _ = assemble(deltas, tools=False, expect_reasoning=expect_reasoning)
    assert text == plain_text == "<think>\nNeed the weather. I will call it.\n</think>\n\n"
    assert calls == plain_calls and [c["function"]["name"] for c in calls] == ["get_weather"]


def test_a_v4_block_inside_the_reasoning_field_ends_the_reasoning():
    deltas = [ChatDelta(reasoning=c.content) for c in content("Need the weather." + FAMILIES["v4"])]
    text, calls, a = assemble(deltas + [ChatDelta(finish_reason="stop")], expect_reasoning=True)
    assert text == "<think>\nNeed the weather.\n</think>\n\n" and plain(calls) == CALLS
    assert a.finish_reason == "tool_calls"


def test_inline_reasoning_keeps_v3_markup_as_reasoning_but_a_v4_block_ends_it():
    thought = "I could write " + v31(CALLS[:1]) + " later."
    text, calls, _ = assemble(content(thought + "</think>\n\nok" + FAMILIES["v32"]), expect_reasoning=True)
    assert text == f"<think>\n{thought}\n</think>\n\nok" and plain(calls) == CALLS
    text, calls, _ = assemble(content("<think>\nHmm." + FAMILIES["v41"]))
    assert text == "<think>\nHmm.\n</think>\n\n" and plain(calls) == CALLS


def test_markup_cut_at_max_tokens_is_a_bad_request_naming_the_flags():
    block = FAMILIES["v4"]
    with pytest.raises(BadRequestError) as e:
        assemble(content(block[:block.index("天气")], finish="length"))
    msg = str(e.value)
    assert "'search' was cut off at max_tokens" in msg and "raise max_tokens" in msg
    assert "--enable-auto-tool-choice --tool-call-parser deepseek_v4" in msg and "｜" not in msg


def test_markup_cut_by_the_stream_ending_is_a_broken_stream():
    block = FAMILIES["v31"]
    deltas = [ChatDelta(content=block[:block.index("杭州")])]
    with pytest.raises(StreamBrokenError) as e:
        assemble(deltas)
    assert "'get_weather'" in str(e.value) and "--tool-call-parser deepseek_v31" in str(e.value)


def test_malformed_markup_is_a_broken_stream_naming_the_flags():
    with pytest.raises(StreamBrokenError) as e:
        assemble(content(dsml(CALLS, "function_calls").replace('string="false">3', 'string="?">3')))
    assert "--tool-call-parser deepseek_v32" in str(e.value) and "｜" not in str(e.value)
