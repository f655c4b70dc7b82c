import pytest

from deepseek_engine.discovery import pick_served_model
from deepseek_engine.errors import ModelNotFoundError, ServerError, StreamBrokenError
from deepseek_engine.protocol import MAX_TOKEN_COUNT, build_body, parse_chunk, parse_completion


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


def _tool(**fields) -> dict:
    call = {"index": 0, "id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return {"choices": [{"delta": {"tool_calls": [{**call, **fields}]}}]}


@pytest.mark.parametrize("obj,says", [
    ({"choices": 5}, "choices is int"),
    ({"choices": "abc"}, "choices is str"),
    ({"choices": [7]}, "choices[0] is int"),
    ({"choices": [{"delta": "hello"}]}, "choices[0].delta is str"),
    ({"choices": [{"delta": {"content": 5}}]}, "delta.content is int"),
    ({"choices": [{"delta": {"reasoning_content": ["r"]}}]}, "delta.reasoning_content is list"),
    ({"choices": [{"delta": {}, "finish_reason": {"why": "stop"}}]}, "finish_reason is dict"),
    ({"choices": [], "usage": "lots"}, "usage is str"),
    ({"choices": [], "usage": [5, 2]}, "usage is list"),
    ({"choices": [{"delta": {"tool_calls": {"index": 0}}}]}, "delta.tool_calls is dict"),
    ({"choices": [{"delta": {"tool_calls": ["call"]}}]}, "tool_calls[0] is str"),
    (_tool(index=[0]), "tool_calls[0].index is list"),
    (_tool(index=True), "tool_calls[0].index is bool"),
    (_tool(id=7), "tool_calls[0].id is int"),
    (_tool(function="f"), "tool_calls[0].function is str"),
    (_tool(function={"name": 5}), "tool_calls[0].function.name is int"),
    (_tool(function={"name": "f", "arguments": 5}), "tool_calls[0].function.arguments is int"),
])
def test_a_chunk_of_the_wrong_shape_is_a_stream_broken_error(obj, says):
    with pytest.raises(StreamBrokenError, match="malformed chunk") as e:
        parse_chunk(obj, "gpu-1")
    assert says in e.value.message and e.value.endpoint == "gpu-1"


@pytest.mark.parametrize("obj", [{"choices": 5}, {"choices": [{"message": "hello"}]},
                                 {"choices": [{"message": {"tool_calls": [{"function": {"name": 1}}]}}]},
                                 {"choices": [{"message": {}}], "usage": [1]}, [1, 2]])
def test_a_completion_of_the_wrong_shape_is_a_stream_broken_error(obj):
    with pytest.raises(StreamBrokenError, match="malformed"):
        parse_completion(obj, "gpu-1")


def test_the_shapes_servers_send_still_parse():
    d = parse_chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None,
                                                         "reasoning_content": None,
                                                         "tool_calls": [{"index": 0, "id": None, "type": None,
                                                                         "function": {"name": None,
                                                                                      "arguments": {"a": 1}}}]},
                                  "finish_reason": None, "logprobs": None}], "usage": None}, "e")
    assert d.tool_calls and d.finish_reason is None and d.usage is None
    d = parse_completion({"choices": [], "usage": {}}, "e")
    assert (d.content, d.usage) == ("", None)


@pytest.mark.parametrize("usage,kept", [
    ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "prompt_tokens_details": None},
     {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
    ({"prompt_tokens": -1, "completion_tokens": 4}, {"completion_tokens": 4}),
    ({"prompt_tokens": float("inf"), "completion_tokens": float("nan")}, None),
    ({"prompt_tokens": "3", "completion_tokens": None, "total_tokens": True}, None),
    ({"prompt_tokens": 3.0, "completion_tokens": 3.5}, {"prompt_tokens": 3}),
    ({"prompt_tokens": MAX_TOKEN_COUNT, "completion_tokens": MAX_TOKEN_COUNT + 1}, {"prompt_tokens": MAX_TOKEN_COUNT}),
])
def test_usage_keeps_only_counts_that_can_be_true(usage, kept, caplog):
    caplog.set_level("INFO")
    got = parse_chunk({"choices": [], "usage": usage}, "gpu-1").usage
    assert got == kept and all(type(v) is int for v in (got or {}).values())
    dropped = len([k for k in usage if k.endswith("_tokens")]) - len(kept or {})
    assert len([r for r in caplog.records if "gpu-1 sent an unusable" in r.getMessage()]) == dropped


def test_lone_surrogates_become_replacement_characters_and_pairs_stay():
    import json

    from deepseek_engine.protocol import without_lone_surrogates

    obj = json.loads('{"a": ["x\\ud800y", {"b": "\\ud83d\\ude00\\udfff"}], "n": 1}')
    clean = without_lone_surrogates(obj)
    assert clean == {"a": ["x\ufffdy", {"b": "\U0001f600\ufffd"}], "n": 1}
    json.dumps(clean, ensure_ascii=False).encode("utf-8")  # writable as UTF-8 now


@pytest.mark.parametrize("text", [
    '{"choices":[{"index":0,"delta":{"reasoning_content":" the"},"finish_reason":null}]}',
    '{"a": ["x\\ud800y", {"b": "\\ud83d\\ude00\\udfff"}]}',  # lone surrogates: cleaned
    '[NaN, -Infinity, 1e999]',  # the standard library's extensions: still read
    '{"a": 1, "a": 2, "n": 18446744073709551615, "f": 0.1, "e": "\\u00e9\\n"}',
])
def test_an_events_json_reads_as_the_standard_library_reads_it(text):
    """``events.loads`` (orjson, the standard library for what orjson refuses) gives what
    ``json.loads`` and ``without_lone_surrogates`` gave before it."""
    import json

    from deepseek_engine.events import loads
    from deepseek_engine.protocol import without_lone_surrogates

    assert repr(loads(text)) == repr(without_lone_surrogates(json.loads(text)))


def test_json_nested_past_the_limit_still_fails():
    from deepseek_engine.events import loads

    with pytest.raises(RecursionError):
        loads("[" * 100_000 + "]" * 100_000)
