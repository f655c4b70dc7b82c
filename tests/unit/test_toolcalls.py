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
