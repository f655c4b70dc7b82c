"""Scripted chat behaviour of deepseek_sim: shapes, tools, usage, limits."""

import json
import re

import pytest

from deepseek_sim import count_tokens
from deepseek_sim.script import ANSWER, REASONING, TOOL_REASONING
from tests.sim.simtest_util import (
    HI,
    VLLM_ANSWER,
    VLLM_REASONING,
    VLLM_TOOL_REASONING,
    WEATHER_TOOL,
    chunks_of,
    collect,
    deltas_of,
    stream_chat,
)

PROMPT_HI = count_tokens("hi") + 4


def test_count_tokens():
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("  hello\n world  ") == 2
    assert count_tokens(REASONING) == len(REASONING.split())


EXPECTED = {
    # shape: (reasoning field or None, expected reasoning, expected content) on SGLang
    "reasoning": ("reasoning", REASONING, ANSWER),
    "reasoning_content": ("reasoning_content", REASONING, ANSWER),
    "think_inline": (None, "", "<think>\n" + REASONING + "\n</think>\n\n" + ANSWER),
    "think_close_only": (None, "", REASONING + "\n</think>\n\n" + ANSWER),
    "plain": (None, "", ANSWER),
}
SHAPE_FLAVORS = [(shape, flavor) for shape in EXPECTED for flavor in ("vllm", "sglang")]


def expected(shape: str, flavor: str) -> tuple:
    field, reasoning, content = EXPECTED[shape]
    if flavor == "vllm" and field:  # R1's whitespace around </think> stays on both sides of the cut
        return field, VLLM_REASONING, VLLM_ANSWER
    return field, reasoning, content


@pytest.mark.parametrize("shape,flavor", SHAPE_FLAVORS)
def test_shapes_stream(make_sim, shape, flavor):
    import httpx

    sim = make_sim(shape=shape, flavor=flavor)
    field, reasoning, content = expected(shape, flavor)
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
    deltas = deltas_of(chunks)
    empties = [i for i, d in enumerate(deltas[1:-1], 1) if d == {"content": ""}]
    if field and flavor == "sglang":
        # One empty content delta between reasoning and answer.
        assert len(empties) == 1
        i = empties[0]
        assert field in deltas[i - 1] and deltas[i + 1].get("content")
    else:
        # vLLM: the </think> token of a plain reply makes no event at all.
        assert empties == []
    # vLLM's finish delta: {} behind a reasoning parser, an empty content without one.
    assert deltas[-1] == ({} if field and flavor == "vllm" else {"content": ""})
    # Usage: the last chunk before [DONE] has no choices.
    assert chunks[-1]["choices"] == []
    n_pieces = sum(1 for d in deltas if d.get(field or "content") or d.get("content"))
    assert chunks[-1]["usage"] == {"prompt_tokens": PROMPT_HI, "completion_tokens": n_pieces,
                                   "total_tokens": PROMPT_HI + n_pieces}


@pytest.mark.parametrize("shape,flavor", SHAPE_FLAVORS)
def test_shapes_non_stream(make_sim, shape, flavor):
    import httpx

    sim = make_sim(shape=shape, flavor=flavor)
    field, reasoning, content = expected(shape, flavor)
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
    elif flavor == "vllm":
        assert msg["reasoning"] is None  # a server without a reasoning parser still has the field
    if flavor == "vllm":
        assert "tool_calls" not in msg  # vLLM leaves it out when there are none
        assert set(msg) == {"role", "content", "refusal", "annotations", "audio", "function_call",
                            field or "reasoning"}
    else:
        assert not ({"reasoning", "reasoning_content"} - {field}) & set(msg)
        assert msg["tool_calls"] == []
    assert data["choices"][0]["finish_reason"] == "stop"
    n = count_tokens(reasoning) + count_tokens(content)
    assert data["usage"] == {"prompt_tokens": PROMPT_HI, "completion_tokens": n, "total_tokens": PROMPT_HI + n}


def test_vllm_non_stream_extra_fields(client):
    data = client.post("/chat/completions", json={"messages": HI}).json()
    choice = data["choices"][0]
    assert choice["stop_reason"] is None and choice["token_ids"] is None and choice["routed_experts"] is None
    for key in ("service_tier", "prompt_logprobs", "prompt_token_ids", "prompt_text", "kv_transfer_params",
                "ec_transfer_params", "metrics"):
        assert key in data and data[key] is None, key


def test_vllm_stream_extra_fields(client):
    _, datas, _ = stream_chat(client, {"stream_options": {"include_usage": True}})
    chunks = chunks_of(datas)
    role, rest, usage = chunks[0], chunks[1:-1], chunks[-1]
    assert role["prompt_token_ids"] is None and role["prompt_text"] is None
    assert "token_ids" not in role["choices"][0]
    assert all(c["choices"][0]["token_ids"] is None for c in rest)
    assert all("prompt_token_ids" not in c and "system_fingerprint" not in c for c in rest)
    assert usage["choices"] == [] and usage["system_fingerprint"].startswith("vllm-0.32.0-")
    # Without include_usage the fingerprint rides on the finish chunk.
    chunks = chunks_of(stream_chat(client, {})[1])
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["system_fingerprint"] == usage["system_fingerprint"]


def _tool_deltas(chunks):
    return [d["tool_calls"][0] for d in deltas_of(chunks) if "tool_calls" in d]


@pytest.mark.parametrize("two", [False, True])
@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_tool_calls_stream(make_sim, flavor, two):
    import httpx

    sim = make_sim(flavor=flavor)
    text = "weather please [[two tools]]" if two else "weather please"
    with httpx.Client(base_url=sim.base_url) as client:
        r, datas, _ = stream_chat(client, {"messages": [{"role": "user", "content": text}], "tools": WEATHER_TOOL})
    chunks = chunks_of(datas)
    got = collect(chunks)
    vllm = flavor == "vllm"
    assert got["reasoning"] == (VLLM_TOOL_REASONING if vllm else TOOL_REASONING)
    assert got["content"] == ("\n\n" if vllm else "")  # R1 writes "\n\n" before the call
    assert got["finish_reason"] == "tool_calls"
    cities = ["Paris", "London"] if two else ["Paris"]
    assert sorted(got["tool_calls"]) == list(range(len(cities)))
    for i, city in enumerate(cities):
        call = got["tool_calls"][i]
        assert call["name"] == "get_weather"
        assert call["id"].startswith("chatcmpl-tool-")
        assert json.loads(call["arguments"]) == {"location": city}
    # A name delta with id/type/name, then argument-only deltas.
    tc_deltas = _tool_deltas(chunks)
    first = tc_deltas[0]
    assert first["type"] == "function" and first["index"] == 0
    if vllm:  # vLLM: no "arguments" key beside the name; 16 hex digits in the id
        assert first["function"] == {"name": "get_weather"}
        assert re.fullmatch(r"chatcmpl-tool-[0-9a-f]{16}", first["id"])
    else:
        assert first["function"] == {"name": "get_weather", "arguments": ""}
        assert re.fullmatch(r"chatcmpl-tool-[0-9a-f]{32}", first["id"])
    assert tc_deltas[1] == {"index": 0, "function": {"arguments": '{"location": '}}
    assert len(tc_deltas) > 2 * len(cities)
    assert deltas_of(chunks)[-1] == ({"content": ""} if vllm else {})


def test_vllm_tool_stream_has_the_special_tokens_empty_deltas(client):
    _, datas, _ = stream_chat(client, {"messages": [{"role": "user", "content": "weather"}], "tools": WEATHER_TOOL})
    deltas = deltas_of(chunks_of(datas))[1:]  # after the role chunk
    kinds = ["r" if "reasoning" in d else "t" if "tool_calls" in d else repr(d.get("content")) for d in deltas]
    n_reason = count_tokens(TOOL_REASONING)
    n_args = len(_tool_deltas(chunks_of(datas))) - 1
    # </think>, "\n\n", <｜tool▁calls▁begin｜>, name, args…, the tokens after the arguments, finish.
    assert kinds == ["r"] * n_reason + ["''", "'\\n\\n'", "''"] + ["t"] * (1 + n_args) + ["''", "''"]
    assert chunks_of(datas)[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("two", [False, True])
@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_tool_calls_non_stream(make_sim, flavor, two):
    import httpx

    sim = make_sim(flavor=flavor)
    text = "weather [[two tools]]" if two else "weather"
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": text}],
                                                             "tools": WEATHER_TOOL})
    data = r.json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["content"] is None  # vLLM: null even though the stream had "\n\n"
    assert msg["reasoning"] == (VLLM_TOOL_REASONING if flavor == "vllm" else TOOL_REASONING)
    calls = msg["tool_calls"]
    assert [json.loads(c["function"]["arguments"])["location"] for c in calls] == (
        ["Paris", "London"] if two else ["Paris"])
    assert all(c["type"] == "function" and c["function"]["name"] == "get_weather" for c in calls)
    assert len({c["id"] for c in calls}) == len(calls)


def test_tool_choice_none_gives_plain_answer(client):
    r = client.post("/chat/completions", json={"messages": HI, "tools": WEATHER_TOOL, "tool_choice": "none"})
    assert r.json()["choices"][0]["message"]["content"] == VLLM_ANSWER


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
    assert msg["content"] == "\n\nAccording to the tool, it is sunny in Paris."
    # No generation prompt after a tool result: R1 opens <think> itself, so its reasoning starts with "\n".
    assert msg["reasoning"] == "\n" + VLLM_REASONING
    assert "tool_calls" not in msg
    _, datas, _ = stream_chat(client, body)
    got = collect(chunks_of(datas))
    assert got["content"] == msg["content"] and got["reasoning"] == msg["reasoning"]
    assert got["finish_reason"] == "stop"


def test_long_honours_max_tokens(client):
    body = {"messages": [{"role": "user", "content": "go [[long]]"}], "max_tokens": 40}
    data = client.post("/chat/completions", json=body).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 40
    n_reason = count_tokens(REASONING)
    expected = "\n\n" + "".join((" lorem", " ipsum")[i % 2] for i in range(40 - n_reason))
    assert data["choices"][0]["message"]["content"] == expected
    _, datas, _ = stream_chat(client, {**body, "stream_options": {"include_usage": True}})
    chunks = chunks_of(datas)
    got = collect(chunks)
    assert got["finish_reason"] == "length"
    assert got["usage"]["completion_tokens"] == 40
    assert got["content"] == data["choices"][0]["message"]["content"]
    # vLLM: "length" rides on the chunk of the last token; no finish chunk of its own.
    last = [c for c in chunks if c["choices"]][-1]["choices"][0]
    assert last["finish_reason"] == "length" and last["delta"] == {"content": expected[-6:]}


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
    assert client.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"] == "\n\n" + text
    _, datas, _ = stream_chat(client, body)
    assert collect(chunks_of(datas))["content"] == "\n\n" + text


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


def test_chunk_tokens_groups_pieces_of_one_kind_on_sglang(make_sim):
    import httpx

    sim = make_sim(chunk_tokens=4, flavor="sglang")
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


N_REASON, N_ANSWER = count_tokens(REASONING), count_tokens(ANSWER)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("shape", ["reasoning", "reasoning_content"])
def test_vllm_chunk_tokens_merges_any_kind(make_sim, shape, n):
    import httpx

    sim = make_sim(chunk_tokens=n, shape=shape)
    with httpx.Client(base_url=sim.base_url) as c:
        _, datas, _ = stream_chat(c, {"stream_options": {"include_usage": True}})
    chunks = chunks_of(datas)
    got = collect(chunks, shape)
    assert got["reasoning"] == VLLM_REASONING and got["content"] == VLLM_ANSWER
    assert got["usage"]["completion_tokens"] == N_REASON + N_ANSWER
    deltas = deltas_of(chunks)[1:]
    assert all(count_tokens(d.get(shape, "") + d.get("content", "")) <= n for d in deltas)
    # Every group but the last is full, whatever the kinds in it: one delta may hold both fields.
    both = [d for d in deltas if d.get(shape) and d.get("content")]
    if N_REASON % n:
        assert both == [{"content": "\n\n" + " ".join(ANSWER.split()[:n - N_REASON % n]),
                         shape: " ".join(REASONING.split()[-(N_REASON % n):]).join(" \n")}]
        assert list(both[0]) == ["content", shape]  # vLLM's key order
    else:
        assert both == []
    assert [d for d in deltas if d == {"content": ""}] == []
    # The end-of-sentence token takes the last group's free slot: the finish chunk carries its text.
    finish = [c for c in chunks if c["choices"]][-1]["choices"][0]
    assert finish["finish_reason"] == "stop"
    tail = (N_REASON + N_ANSWER) % n
    if tail:
        assert finish["delta"] == {"content": " " + " ".join(ANSWER.split()[-tail:])}
    else:
        assert finish["delta"] == {}


def test_vllm_length_rides_on_the_last_token(make_sim):
    import httpx

    sim = make_sim()
    with httpx.Client(base_url=sim.base_url) as c:
        _, datas, _ = stream_chat(c, {"max_tokens": 3})
    choices = [ch["choices"][0] for ch in chunks_of(datas) if ch["choices"]]
    assert [ch["delta"] for ch in choices[1:]] == [{"reasoning": "Okay,"}, {"reasoning": " the"},
                                                  {"reasoning": " user"}]
    assert [ch["finish_reason"] for ch in choices] == [None, None, None, "length"]


@pytest.mark.parametrize("shape,tools,delta", [
    ("reasoning", False, {}),  # parsed, plain: the end-of-sentence token has no text
    ("reasoning", True, {"content": ""}),  # parsed, tool call
    ("think_inline", False, {"content": ""}),  # raw server, plain
    ("think_close_only", False, {"content": ""}),
    ("plain", False, {"content": ""}),
])
def test_vllm_finish_delta(make_sim, shape, tools, delta):
    import httpx

    sim = make_sim(shape=shape)
    with httpx.Client(base_url=sim.base_url) as c:
        _, datas, _ = stream_chat(c, {"tools": WEATHER_TOOL} if tools else {})
    finish = chunks_of(datas)[-1]["choices"][0]
    assert finish["finish_reason"] == ("tool_calls" if tools else "stop")
    assert finish["delta"] == delta


@pytest.mark.parametrize("n", [2, 3, 4])
def test_vllm_chunk_tokens_tool_call_still_complete(make_sim, n):
    import httpx

    sim = make_sim(chunk_tokens=n)
    with httpx.Client(base_url=sim.base_url) as c:
        _, datas, _ = stream_chat(c, {"messages": [{"role": "user", "content": "w"}], "tools": WEATHER_TOOL})
    chunks = chunks_of(datas)
    got = collect(chunks)
    assert got["reasoning"] == VLLM_TOOL_REASONING and got["content"] == "\n\n"
    assert json.loads(got["tool_calls"][0]["arguments"]) == {"location": "Paris"}
    tc = _tool_deltas(chunks)
    assert tc[0]["function"] == {"name": "get_weather"}  # the name delta is never merged
    assert len(tc) == 1 + -(-2 // n)
    assert [d for d in deltas_of(chunks)[1:-1] if d == {"content": ""}] == []  # merged into neighbours
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
