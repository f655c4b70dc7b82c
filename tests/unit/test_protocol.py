import pytest

from deepseek_engine.discovery import pick_served_model
from deepseek_engine.errors import ModelNotFoundError, ServerError
from deepseek_engine.protocol import build_body, parse_chunk, parse_completion


def test_body_always_streams_with_usage_and_strips_history():
    body = build_body("m", [{"role": "user", "content": "q"},
                            {"role": "assistant", "content": "<think>\nx\n</think>\n\nA", "reasoning_content": "x"},
                            {"role": "user", "content": "q2"}],
                      {"temperature": 0.6, "max_tokens": 5, "top_k": 0, "response_format": "json_object", "seed": None},
                      stop=["END"], user="u")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][1] == {"role": "assistant", "content": "A"}
    assert body["temperature"] == 0.6 and "top_k" not in body and "seed" not in body
    assert body["response_format"] == {"type": "json_object"} and body["stop"] == ["END"]


def test_tool_history_content_null_beside_calls():
    body = build_body("m", [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}], {},
                      tools=[{"type": "function", "function": {"name": "f"}}])
    assert body["messages"][0]["content"] is None and body["tool_choice"] == "auto"


def test_parse_chunk_shapes():
    d = parse_chunk({"choices": [{"delta": {"reasoning": "r", "content": None}, "finish_reason": None}]}, "e")
    assert (d.reasoning, d.content, d.has_output) == ("r", "", True)
    d = parse_chunk({"choices": [{"delta": {"reasoning_content": "r", "reasoning": "r"}}]}, "e")
    assert d.reasoning == "r"  # the alias is not added twice
    d = parse_chunk({"choices": [], "usage": {"prompt_tokens": 3}}, "e")
    assert d.usage == {"prompt_tokens": 3} and not d.has_output
    with pytest.raises(ServerError, match="failed while generating: boom"):
        parse_chunk({"error": {"message": "boom"}}, "e")


def test_parse_completion_keeps_reasoning():
    d = parse_completion({"choices": [{"message": {"content": "A", "reasoning": "R"}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 1}}, "e")
    assert (d.reasoning, d.content, d.finish_reason) == ("R", "A", "stop")


SERVED = [{"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "max_model_len": 4096}, {"id": "other"}]


def test_pick_served_model():
    m = pick_served_model(SERVED, wanted=None, catalogue="deepseek-r1-distill-qwen-7b", endpoint="e")
    assert m.id == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" and m.context_size == 4096
    assert pick_served_model(SERVED[:1], wanted=None, catalogue="deepseek-r1", endpoint="e").context_size == 4096
    with pytest.raises(ModelNotFoundError, match="serves: deepseek-ai/DeepSeek-R1-Distill-Qwen-7B, other"):
        pick_served_model(SERVED, wanted="nope", catalogue=None, endpoint="e")
    with pytest.raises(ModelNotFoundError, match="Set served_model_name"):
        pick_served_model(SERVED, wanted=None, catalogue="deepseek-v3", endpoint="e")


def test_coalesce_keeps_order_and_merges_what_arrived_together():
    from deepseek_engine.protocol import ChatDelta, coalesce

    got = coalesce([ChatDelta(reasoning="a"), ChatDelta(reasoning="b"), ChatDelta(content="c"),
                    ChatDelta(content="d"), ChatDelta(reasoning="late"),
                    ChatDelta(tool_calls=[{"index": 0}]), ChatDelta(tool_calls=[{"index": 0}]),
                    ChatDelta(finish_reason="stop"), ChatDelta(usage={"prompt_tokens": 1})])
    assert [(d.reasoning, d.content) for d in got] == [("ab", "cd"), ("late", "")]
    assert len(got[1].tool_calls) == 2 and got[1].finish_reason == "stop" and got[1].usage
    assert [d.events for d in got] == [4, 1]  # the events with text each merges (tokens, at least)
    assert coalesce([ChatDelta(usage={}), ChatDelta(content="a"), ChatDelta(content="b")])[0].events == 2
