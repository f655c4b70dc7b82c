"""Structured output: Dify's parameters as vLLM's and SGLang's request field, the refusals' words,
and the check that a constrained answer is what was asked for."""

import json

import pytest

from deepseek_engine.errors import BadRequestError, ServerError, error_from_response
from deepseek_engine.protocol import build_body, parse_chunk
from deepseek_engine.structured import OutputFormat, mismatch, output_format

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "color": {"enum": ["red", "green"]},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age"], "additionalProperties": False}
DIFY = json.dumps({"schema": SCHEMA, "name": "llm_response"})  # what Dify's node sends


def test_dify_schema_becomes_the_openai_response_format():
    body = build_body("m", [{"role": "user", "content": "q"}],
                      {"response_format": "json_schema", "json_schema": DIFY, "temperature": 0.1})
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "llm_response", "schema": SCHEMA}}
    assert "json_schema" not in body and body["temperature"] == 0.1


def test_a_bare_schema_is_wrapped_and_strict_passes():
    assert output_format({"json_schema": json.dumps(SCHEMA)}).spec == {"name": "llm_response", "schema": SCHEMA}
    spec = output_format({"response_format": "json_schema",
                          "json_schema": json.dumps({"name": "x", "schema": SCHEMA, "strict": True, "junk": 1})}).spec
    assert spec == {"name": "x", "schema": SCHEMA, "strict": True}


def test_json_object_and_text():
    assert build_body("m", [], {"response_format": "json_object"})["response_format"] == {"type": "json_object"}
    assert "response_format" not in build_body("m", [], {"response_format": "text"})
    assert not output_format({}).constrained


@pytest.mark.parametrize("params, words", [
    ({"response_format": "json_schema"}, "no JSON schema was given"),
    ({"response_format": "json_schema", "json_schema": "{not json"}, "not valid JSON"),
    ({"response_format": "json_schema", "json_schema": "[1]"}, "not an object"),
    ({"response_format": "json_schema", "json_schema": '{"schema": 3}'}, "\"schema\" is empty"),
    ({"response_format": "text", "json_schema": DIFY}, "Response Format is text"),
    ({"response_format": "yaml"}, "is not one of"),
])
def test_bad_parameters_say_what_to_change(params, words):
    with pytest.raises(BadRequestError) as e:
        output_format(params)
    assert words in str(e.value) and e.value.hint


def test_vllm_schema_refusal_names_the_fix():
    body = json.dumps({"error": {"message": 'Grammar error: Unimplemented keys: ["uniqueItems"]',
                                 "type": "BadRequestError", "param": None, "code": 400}})
    e = error_from_response(400, body, "gpu1")
    assert isinstance(e, BadRequestError) and "uniqueItems" in str(e) and "simplify it" in str(e)


def test_sglang_without_grammar_backend_names_the_flag():
    msg = ("Grammar-based generation (json_schema, regex, ebnf, structural_tag) is not supported when the "
           "server is launched with --grammar-backend none")
    with pytest.raises(BadRequestError) as e:  # in-band, after the stream began
        parse_chunk({"error": {"message": msg, "code": 400}}, "gpu1")
    assert "without --grammar-backend none" in str(e.value)
    assert "without --grammar-backend none" in str(error_from_response(400, json.dumps({"message": msg}), "g"))


def test_mismatch_reads_the_common_keywords():
    good = {"name": "a", "age": 3, "color": "red", "tags": ["x"]}
    assert mismatch(good, SCHEMA) is None
    assert "age is missing" in mismatch({"name": "a"}, SCHEMA)
    assert "not integer" in mismatch({"name": "a", "age": 1.5}, SCHEMA)
    assert "not integer" in mismatch({"name": "a", "age": True}, SCHEMA)
    assert "enum" in mismatch({**good, "color": "blue"}, SCHEMA)
    assert "tags[0]" in mismatch({**good, "tags": [1]}, SCHEMA)
    assert "not a property" in mismatch({**good, "x": 1}, SCHEMA)
    assert mismatch("anything", {"type": "string", "format": "weird-unknown"}) is None


def test_check_refuses_what_is_not_the_constrained_answer():
    fmt = output_format({"response_format": "json_schema", "json_schema": DIFY})
    fmt.check(' {"name": "a", "age": 1}\n', "stop", "e")  # whitespace around JSON is JSON
    with pytest.raises(ServerError, match="not JSON"):
        fmt.check('Sure! {"name": "a", "age": 1}', "stop", "e")
    with pytest.raises(ServerError, match="does not match"):
        fmt.check('{"name": "a"}', "stop", "e")
    with pytest.raises(BadRequestError, match="cut off at max_tokens"):
        fmt.check('{"name": "a", "ag', "length", "e")
    fmt.check('{"name": "a", "age": 1}', "length", "e")  # whole at the very last token
    fmt.check("", "tool_calls", "e")  # a tool call answers instead
    with pytest.raises(ServerError, match="not a JSON object"):
        OutputFormat("json_object").check("[1]", "stop", "e")
    OutputFormat().check("free text", "stop", "e")


def test_the_customizable_models_switch_is_on_unless_turned_off():
    from deepseek_engine.errors import ConfigError
    from deepseek_engine.settings import parse_settings

    base = {"endpoint_urls": "http://gpu:8000/v1"}
    assert parse_settings(base).structured_output is True  # vLLM and SGLang constrain by default
    assert parse_settings({**base, "structured_output_support": "no_support"}).structured_output is False
    with pytest.raises(ConfigError, match="structured_output_support must be support or no_support"):
        parse_settings({**base, "structured_output_support": "maybe"})
