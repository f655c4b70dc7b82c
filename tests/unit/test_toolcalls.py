import pytest

from deepseek_engine.errors import BadRequestError, StreamBrokenError
from deepseek_engine.toolcalls import ToolCallAccumulator


def test_vllm_style_deltas_merge_by_index():
    acc = ToolCallAccumulator()
    assert acc.feed([{"id": "t1", "type": "function", "index": 0,
                      "function": {"name": "get_weather", "arguments": ""}}]) == []
    assert acc.feed([{"index": 0, "function": {"arguments": '{"location": '}}]) == []
    assert acc.feed([{"index": 0, "function": {"arguments": '"Paris"}'}}]) == []
    done = acc.feed([{"id": "t2", "index": 1, "function": {"name": "get_weather", "arguments": "{}"}}])
    assert done == [{"id": "t1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]
    rest = acc.finish()
    assert [c["id"] for c in rest] == ["t2"] and acc.count == 2


def test_whole_call_without_index_and_generated_id():
    acc = ToolCallAccumulator()
    acc.feed([{"function": {"name": "f", "arguments": {"a": 1}}}])
    (call,) = acc.finish()
    assert call["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert call["id"].startswith("call_")


def test_assembler_reasoning_then_tool_call_then_usage():
    from deepseek_engine.answer import AnswerAssembler
    from deepseek_engine.protocol import ChatDelta

    a = AnswerAssembler(expect_reasoning=True)
    pieces = [a.feed(d) for d in [
        ChatDelta(reasoning="Need weather."),
        ChatDelta(tool_calls=[{"id": "c1", "index": 0, "function": {"name": "get_weather", "arguments": ""}}]),
        ChatDelta(tool_calls=[{"index": 0, "function": {"arguments": '{"location": "Paris"}'}}]),
        ChatDelta(finish_reason="tool_calls"),
        ChatDelta(usage={"prompt_tokens": 9, "completion_tokens": 4}),
    ]]
    last = a.finish()
    text = "".join(p.text for p in pieces if p) + last.text
    assert text == "<think>\nNeed weather.\n</think>\n\n"
    assert [c["function"]["arguments"] for c in last.tool_calls] == ['{"location": "Paris"}']
    assert a.finish_reason == "tool_calls" and a.usage["completion_tokens"] == 4


def _assembled(*deltas):
    from deepseek_engine.answer import AnswerAssembler
    from deepseek_engine.protocol import ChatDelta

    a = AnswerAssembler(expect_reasoning=False)
    calls = []
    for d in deltas:
        if p := a.feed(ChatDelta(**d)):
            calls += p.tool_calls
    return calls + a.finish().tool_calls, a


CALL = {"id": "c1", "index": 0, "function": {"name": "get_weather", "arguments": ""}}
CUT = {"index": 0, "function": {"arguments": '{"location": "Par'}}


@pytest.mark.parametrize("finish,exc,says", [("length", BadRequestError, "raise max_tokens"),
                                             (None, StreamBrokenError, "stream ended before")])
def test_a_tool_call_cut_off_is_an_error_not_a_call(finish, exc, says):
    with pytest.raises(exc, match="'get_weather'.*cut off") as e:
        _assembled({"tool_calls": [CALL]}, {"tool_calls": [CUT]}, {"finish_reason": finish})
    assert says in str(e.value)
    with pytest.raises(exc):  # a name and no arguments at all is cut too
        _assembled({"tool_calls": [CALL]}, {"finish_reason": finish})


def test_whole_calls_pass_whatever_the_finish_reason():
    whole = {"index": 0, "function": {"arguments": '{"location": "Paris"}'}}
    for finish in ("length", None, "tool_calls", "stop"):
        calls, _ = _assembled({"tool_calls": [CALL]}, {"tool_calls": [whole]}, {"finish_reason": finish})
        assert [c["function"]["arguments"] for c in calls] == ['{"location": "Paris"}']
    # a call the model ended itself is the model's, even if its JSON is off (not cut)
    calls, a = _assembled({"tool_calls": [CALL]}, {"tool_calls": [CUT]}, {"finish_reason": "tool_calls"})
    assert calls[0]["function"]["arguments"] == '{"location": "Par' and a.finish_reason == "tool_calls"
    # the calls before the last ended when the next began: never judged cut
    second = {"id": "c2", "index": 1, "function": {"name": "get_time", "arguments": "{}"}}
    calls, _ = _assembled({"tool_calls": [CALL]}, {"tool_calls": [CUT]}, {"tool_calls": [second]},
                          {"finish_reason": "length"})
    assert [c["id"] for c in calls] == ["c1", "c2"]


def test_many_argument_pieces_join_into_one_string():
    acc = ToolCallAccumulator()
    acc.feed([{"index": 0, "id": "t", "function": {"name": "f", "arguments": "["}}])
    for _ in range(10_000):
        acc.feed([{"index": 0, "function": {"arguments": "1,"}}])
    acc.feed([{"index": 0, "function": {"arguments": "1]"}}])
    (call,) = acc.finish()
    assert call["function"]["arguments"] == "[" + "1," * 10_000 + "1]"
