"""The pure parts of one request (deepseek_engine/completion.py): pieces cut to the caller's
message size, arrived tokens batched, whether a model reasons, which model id is served."""

import time

import pytest

from deepseek_engine import Piece, parse_settings
from deepseek_engine.completion import Batch, family_for, sized
from deepseek_engine.discovery import DIRECTORY, endpoint_set, served_model
from deepseek_engine.errors import BadRequestError
from deepseek_engine.settings import parse_endpoints


def call(name: str, arguments: str) -> dict:
    return {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": arguments}}


# -- sized ---------------------------------------------------------------------------------------
def test_a_piece_within_the_limit_is_itself():
    p = Piece("hello", [call("f", "{}")])
    assert sized(p, 100) == [p] and sized(p, 100)[0] is p
    assert sized(Piece("x" * 1000, []), None)[0].text == "x" * 1000  # no limit: never cut


def test_long_text_is_cut_into_pieces_of_the_limit():
    out = sized(Piece("abcdefghij", []), 4)
    assert [p.text for p in out] == ["abcd", "efgh", "ij"] and all(p.tool_calls == [] for p in out)


def test_calls_are_packed_whole_after_the_text():
    a, b, c = call("a", "x" * 10), call("b", "y" * 10), call("c", "z" * 30)  # 17, 17, 37 characters
    out = sized(Piece("t" * 45, [a, b, c]), 40)
    assert "".join(p.text for p in out) == "t" * 45
    assert [p.tool_calls for p in out if p.tool_calls] == [[a, b], [c]]  # never cut, order kept
    assert all(len(p.text) + sum(len(x["id"]) + len(x["function"]["name"]) + len(x["function"]["arguments"])
                                 for x in p.tool_calls) <= 40 for p in out)


def test_a_call_larger_than_the_limit_is_refused():
    with pytest.raises(BadRequestError, match="tool call 'big' is 56 characters"):
        sized(Piece("", [call("big", "x" * 45)]), 40)


# -- batching ------------------------------------------------------------------------------------
def test_a_paced_token_goes_out_at_once():
    b = Batch()
    assert not b.due(more_ready=False)  # nothing held
    b.add(Piece("a", []))
    assert b.due(more_ready=False)


def test_a_backlog_is_held_while_more_is_ready_but_never_past_max_hold():
    b = Batch(max_hold=0.05)
    b.add(Piece("a", []))
    b.add(Piece("b", [call("f", "{}")]))
    assert not b.due(more_ready=True)
    time.sleep(0.06)
    assert b.due(more_ready=True)  # held long enough: out, even with more in hand
    out = b.take()
    assert out.text == "ab" and [c["id"] for c in out.tool_calls] == ["call_f"]
    assert not b and not b.due(more_ready=False)


# -- model resolution ----------------------------------------------------------------------------
def settings(**creds):
    return parse_settings({"endpoint_urls": "http://gpu-1:8000/v1", **creds})


@pytest.mark.parametrize("model,family", [("deepseek-r1", "r1"), ("deepseek-r1-distill-qwen-7b", "r1"),
                                          ("deepseek-v3", "v3"), ("deepseek-v2.5", "v3"),
                                          ("deepseek-v3.1-terminus", "v3.1"), ("deepseek-v4-pro", "v4")])
def test_a_catalogue_model_is_of_its_family_whatever_the_kind_field_says(model, family):
    assert family_for(model, settings(reasoning="none"), catalogue=True).name == family
    assert family_for(model, settings(reasoning="hybrid"), catalogue=True).name == family


def test_a_customizable_model_is_the_kind_the_operator_chose_else_by_its_names():
    assert family_for("my-model", settings(reasoning="reasoning"), catalogue=False).thinking == "always"
    assert family_for("deepseek-r1-custom", settings(reasoning="none"), catalogue=False).thinking == "never"
    assert family_for("my-hybrid", settings(reasoning="hybrid"), catalogue=False).hybrid
    assert family_for("DeepSeek-R1-Distill-Qwen-7B", settings(), catalogue=False).thinking == "always"
    assert family_for("llama-3", settings(), catalogue=False).thinking == "never"
    assert family_for("x", settings(served_model_name="deepseek-r1"), catalogue=False).thinking == "always"
    assert family_for("ds", settings(served_model_name="DeepSeek-V3.2"), catalogue=False).name == "v3.2"


def test_the_served_id_is_the_named_one_else_the_typed_one_else_discovered():
    assert served_model("deepseek-r1", settings(served_model_name="r1"), catalogue=True) == "r1"
    assert served_model("my-r1", settings(), catalogue=False) == "my-r1"  # customizable: typed
    s = settings(api_key="sk-unit-completion")
    ep = parse_endpoints("http://gpu-1:8000/v1")[0]
    served = [{"id": "deepseek-ai/DeepSeek-R1", "max_model_len": 4096}, {"id": "other"}]
    DIRECTORY.get(endpoint_set(s), lambda: (ep, served))  # what /v1/models answered, cached
    assert served_model("deepseek-r1", s, catalogue=True) == "deepseek-ai/DeepSeek-R1"
