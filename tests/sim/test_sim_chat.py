"""Scripted chat behaviour of deepseek_sim: shapes, tools, usage, limits."""

import json

import pytest
from simtest_util import HI, WEATHER_TOOL, chunks_of, collect, stream_chat

from deepseek_sim import count_tokens
from deepseek_sim.script import ANSWER, REASONING, TOOL_REASONING

PROMPT_HI = count_tokens("hi") + 4


def test_count_tokens():
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("  hello\n world  ") == 2
    assert count_tokens(REASONING) == len(REASONING.split())


EXPECTED = {
    # shape: (reasoning field or None, expected reasoning, expected content)
    "reasoning": ("reasoning", REASONING, ANSWER),
    "reasoning_content": ("reasoning_content", REASONING, ANSWER),
    "think_inline": (None, "", "<think>\n" + REASONING + "\n</think>\n\n" + ANSWER),
    "think_close_only": (None, "", REASONING + "\n</think>\n\n" + ANSWER),
    "plain": (None, "", ANSWER),
}


@pytest.mark.parametrize("shape", list(EXPECTED))
def test_shapes_stream(make_sim, shape):
    import httpx

    sim = make_sim(shape=shape)
    field, reasoning, content = EXPECTED[shape]
    with httpx.Client(base_url=sim.base_url) as c:
        r, datas, comments = stream_chat(c, {"stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    assert comments == 0
    assert datas[-1] == "[DONE]"
    chunks = chunks_of(datas)
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "deepseek-r1" for c in chunks)
    assert all(isinstance(c["created"], int) for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    got = collect(chunks, field or "reasoning")
    assert got["reasoning"] == reasoning
    assert got["content"] == content
    assert got["finish_reason"] == "stop"
    other = {"reasoning", "reasoning_content"} - {field}
    for ch in chunks:
        for choice in ch["choices"]:
            assert not other & set(choice["delta"]), "wrong reasoning field for the shape"
    # One empty content delta between reasoning and answer, as vLLM does.
    deltas = [ch["choices"][0]["delta"] for ch in chunks if ch["choices"]]
    empties = [i for i, d in enumerate(deltas[1:-1], 1) if d == {"content": ""}]
    if field:
        assert len(empties) == 1
        i = empties[0]
        assert field in deltas[i - 1] and deltas[i + 1].get("content")
    else:
        assert empties == []
    # Usage: the last chunk before [DONE] has no choices.
    assert chunks[-1]["choices"] == []
    n_pieces = sum(1 for d in deltas if d.get(field or "content") or d.get("content"))
    assert chunks[-1]["usage"] == {"prompt_tokens": PROMPT_HI, "completion_tokens": n_pieces,
                                   "total_tokens": PROMPT_HI + n_pieces}


@pytest.mark.parametrize("shape", list(EXPECTED))
def test_shapes_non_stream(make_sim, shape):
    import httpx

    sim = make_sim(shape=shape)
    field, reasoning, content = EXPECTED[shape]
    r = httpx.post(sim.base_url + "/chat/completions", json={"model": "deepseek-r1", "messages": HI})
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    data = r.json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    msg = data["choices"][0]["message"]
    assert msg["role"] == "assistant"
    assert msg["content"] == content
    if field:
        assert msg[field] == reasoning
    assert not ({"reasoning", "reasoning_content"} - {field}) & set(msg)
    assert data["choices"][0]["finish_reason"] == "stop"
    n = count_tokens(reasoning) + count_tokens(content)
    assert data["usage"] == {"prompt_tokens": PROMPT_HI, "completion_tokens": n, "total_tokens": PROMPT_HI + n}


@pytest.mark.parametrize("two", [False, True])
def test_tool_calls_stream(client, two):
    text = "weather please [[two tools]]" if two else "weather please"
    r, datas, _ = stream_chat(client, {"messages": [{"role": "user", "content": text}], "tools": WEATHER_TOOL})
    chunks = chunks_of(datas)
    got = collect(chunks)
    assert got["reasoning"] == TOOL_REASONING
    assert got["content"] == ""
    assert got["finish_reason"] == "tool_calls"
    cities = ["Paris", "London"] if two else ["Paris"]
    assert sorted(got["tool_calls"]) == list(range(len(cities)))
    for i, city in enumerate(cities):
        call = got["tool_calls"][i]
        assert call["name"] == "get_weather"
        assert call["id"].startswith("chatcmpl-tool-")
        assert json.loads(call["arguments"]) == {"location": city}
    # vLLM shape: a header delta with id/type/name and empty arguments, then argument-only deltas.
    tc_deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks
                 if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    first = tc_deltas[0]
    assert first["type"] == "function" and first["index"] == 0
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert tc_deltas[1] == {"index": 0, "function": {"arguments": '{"location": '}}
    assert len(tc_deltas) > 2 * len(cities)


@pytest.mark.parametrize("two", [False, True])
def test_tool_calls_non_stream(client, two):
    text = "weather [[two tools]]" if two else "weather"
    r = client.post("/chat/completions", json={"messages": [{"role": "user", "content": text}],
                                               "tools": WEATHER_TOOL})
    data = r.json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] is None
    assert msg["reasoning"] == TOOL_REASONING
    calls = msg["tool_calls"]
    assert [json.loads(c["function"]["arguments"])["location"] for c in calls] == (
        ["Paris", "London"] if two else ["Paris"])
    assert all(c["type"] == "function" and c["function"]["name"] == "get_weather" for c in calls)
    assert len({c["id"] for c in calls}) == len(calls)


def test_tool_choice_none_gives_plain_answer(client):
    r = client.post("/chat/completions", json={"messages": HI, "tools": WEATHER_TOOL, "tool_choice": "none"})
    assert r.json()["choices"][0]["message"]["content"] == ANSWER


@pytest.mark.parametrize("shape", ["think_inline", "think_close_only"])
def test_tool_calls_think_shapes_reasoning_in_content(make_sim, shape):
    import httpx

    sim = make_sim(shape=shape)
    with httpx.Client(base_url=sim.base_url) as c:
        r = c.post("/chat/completions", json={"messages": HI, "tools": WEATHER_TOOL})
        msg = r.json()["choices"][0]["message"]
        assert msg["content"].endswith(TOOL_REASONING + "\n</think>\n\n")
        assert msg["content"].startswith("<think>\n") == (shape == "think_inline")
        assert msg["tool_calls"][0]["function"]["name"] == "get_weather"
        _, datas, _ = stream_chat(c, {"tools": WEATHER_TOOL})
        got = collect(chunks_of(datas))
        assert got["content"] == msg["content"]
        assert got["finish_reason"] == "tool_calls"


def test_tool_result_answer(client):
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                                                               "function": {"name": "get_weather",
                                                                            "arguments": '{"location": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "it is sunny in Paris"},
    ]
    body = {"messages": messages, "tools": WEATHER_TOOL}
    r = client.post("/chat/completions", json=body)
    msg = r.json()["choices"][0]["message"]
    assert msg["content"] == "According to the tool, it is sunny in Paris."
    assert msg["tool_calls"] == []
    _, datas, _ = stream_chat(client, body)
    got = collect(chunks_of(datas))
    assert got["content"] == "According to the tool, it is sunny in Paris."
    assert got["finish_reason"] == "stop"


def test_long_honours_max_tokens(client):
    body = {"messages": [{"role": "user", "content": "go [[long]]"}], "max_tokens": 40}
    data = client.post("/chat/completions", json=body).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 40
    n_reason = count_tokens(REASONING)
    expected = "".join((" lorem", " ipsum")[i % 2] for i in range(40 - n_reason))
    assert data["choices"][0]["message"]["content"] == expected
    _, datas, _ = stream_chat(client, {**body, "stream_options": {"include_usage": True}})
    chunks = chunks_of(datas)
    got = collect(chunks)
    assert got["finish_reason"] == "length"
    assert got["usage"]["completion_tokens"] == 40
    assert got["content"] == data["choices"][0]["message"]["content"]


def test_long_without_max_tokens_fills_context(make_sim):
    import httpx

    sim = make_sim(max_model_len=200)
    body = {"messages": [{"role": "user", "content": "[[long]]"}]}
    data = httpx.post(sim.base_url + "/chat/completions", json=body).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["total_tokens"] == 200


def test_max_tokens_counts_reasoning(client):
    data = client.post("/chat/completions", json={"messages": HI, "max_tokens": 3}).json()
    msg = data["choices"][0]["message"]
    assert msg["reasoning"] == "Okay, the user"
    assert msg["content"] is None
    assert data["choices"][0]["finish_reason"] == "length"
    # max_completion_tokens is the newer name of the same limit.
    data = client.post("/chat/completions", json={"messages": HI, "max_completion_tokens": 2}).json()
    assert data["usage"]["completion_tokens"] == 2


def test_echo(client):
    text = "  please [[echo]] this:\n  ünïcode ✓ text  "
    body = {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": text}]}
    assert client.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"] == text
    _, datas, _ = stream_chat(client, body)
    assert collect(chunks_of(datas))["content"] == text


def test_list_content_parts_count_as_prompt(client):
    messages = [{"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]}]
    data = client.post("/chat/completions", json={"messages": messages}).json()
    assert data["usage"]["prompt_tokens"] == 3 + 4


@pytest.mark.parametrize(
    "mode,include,where",
    [
        ("on_request", True, "usage_chunk"),
        ("on_request", False, None),
        ("never", True, None),
        ("always_on_finish", False, "finish_chunk"),
        ("always_on_finish", True, "finish_chunk"),
    ],
)
def test_usage_modes(make_sim, mode, include, where):
    import httpx

    sim = make_sim(usage=mode)
    body = {"stream_options": {"include_usage": include}}
    with httpx.Client(base_url=sim.base_url) as c:
        _, datas, _ = stream_chat(c, body)
    chunks = chunks_of(datas)
    with_usage = [c for c in chunks if c.get("usage")]
    if where is None:
        assert with_usage == []
        assert all(c["choices"] for c in chunks)
    else:
        assert len(with_usage) == 1
        u = with_usage[0]
        if where == "usage_chunk":
            assert u is chunks[-1] and u["choices"] == []
        else:
            assert u["choices"][0]["finish_reason"] == "stop"
        assert u["usage"]["prompt_tokens"] == PROMPT_HI
        assert u["usage"]["total_tokens"] == PROMPT_HI + u["usage"]["completion_tokens"]


def test_send_done_off(make_sim):
    import httpx

    sim = make_sim(send_done=False, usage="always_on_finish")
    with httpx.Client(base_url=sim.base_url) as c:
        _, datas, _ = stream_chat(c, {})
        assert "[DONE]" not in datas
        assert chunks_of(datas)[-1]["choices"][0]["finish_reason"] == "stop"
        # The connection is still reusable after a stream without [DONE].
        assert c.get("/models").status_code == 200
    assert sim.connections_opened == 1


def test_chunk_tokens_groups_pieces(make_sim):
    import httpx

    sim = make_sim(chunk_tokens=4)
    with httpx.Client(base_url=sim.base_url) as c:
        _, datas, _ = stream_chat(c, {"stream_options": {"include_usage": True}})
    chunks = chunks_of(datas)
    got = collect(chunks)
    assert got["reasoning"] == REASONING and got["content"] == ANSWER
    n_tokens = count_tokens(REASONING) + count_tokens(ANSWER)
    assert got["usage"]["completion_tokens"] == n_tokens
    text_events = [c for c in chunks if c["choices"] and (c["choices"][0]["delta"].get("reasoning")
                                                          or c["choices"][0]["delta"].get("content"))]
    assert len(text_events) == -(-count_tokens(REASONING) // 4) + -(-count_tokens(ANSWER) // 4)
