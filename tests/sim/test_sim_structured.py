"""The simulator's structured output: the answer matches the request's schema (after the
reasoning when the server parses reasoning), and the refusals of a server that cannot."""

import json

import httpx
import pytest

from deepseek_engine.structured import mismatch
from deepseek_sim.script import REASONING
from tests.sim.simtest_util import chunks_of, collect, stream_chat

SCHEMA = {"type": "object",
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "score": {"type": "number"},
                         "ok": {"type": "boolean"}, "color": {"type": "string", "enum": ["red", "green"]},
                         "tags": {"type": "array", "items": {"type": "string"}},
                         "inner": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
          "required": ["name", "age", "score", "ok", "color", "tags", "inner"], "additionalProperties": False}
ASK = {"response_format": {"type": "json_schema", "json_schema": {"name": "llm_response", "schema": SCHEMA}}}


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_reasons_first_then_answers_json_matching_the_schema(make_sim, flavor):
    sim = make_sim(flavor=flavor, shape="reasoning")
    with httpx.Client(base_url=sim.base_url) as c:
        r, datas, _ = stream_chat(c, ASK)
    got = collect(chunks_of(datas))
    assert r.status_code == 200 and got["reasoning"].strip() == REASONING
    value = json.loads(got["content"])
    assert mismatch(value, SCHEMA) is None and set(value) == set(SCHEMA["properties"])


def test_without_a_reasoning_parser_the_answer_is_the_json_alone(make_sim):
    sim = make_sim(shape="think_inline")
    with httpx.Client(base_url=sim.base_url) as c:
        body = {"model": "deepseek-r1", "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_object"}}
        r = c.post("/chat/completions", json=body)
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)


def test_vllm_refuses_a_key_xgrammar_lacks(make_sim):
    sim = make_sim()
    schema = {"type": "object", "properties": {"t": {"type": "array", "uniqueItems": True}}}
    with httpx.Client(base_url=sim.base_url) as c:
        r, _, _ = stream_chat(c, {"response_format": {"type": "json_schema",
                                                      "json_schema": {"name": "x", "schema": schema}}})
    assert r.status_code == 400
    with httpx.Client(base_url=sim.base_url) as c:
        r = c.post("/chat/completions", json={"model": "deepseek-r1", "messages": [{"role": "user", "content": "q"}],
                                              **{"response_format": {"type": "json_schema",
                                                                     "json_schema": {"name": "x", "schema": schema}}}})
    assert r.json()["error"]["message"] == 'Grammar error: Unimplemented keys: ["uniqueItems"]'


def test_a_server_without_a_grammar_backend_refuses_and_one_behind_a_dropping_proxy_ignores(make_sim):
    refusing, ignoring = make_sim(flavor="sglang", grammar_backend="none"), make_sim(grammar_backend="ignored")
    with httpx.Client(base_url=refusing.base_url) as c:
        r, _, _ = stream_chat(c, ASK)
    assert r.status_code == 400
    with httpx.Client(base_url=ignoring.base_url) as c:
        r, datas, _ = stream_chat(c, ASK)
    content = collect(chunks_of(datas))["content"]
    with pytest.raises(ValueError):
        json.loads(content)
