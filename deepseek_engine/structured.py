"""Structured output: Dify's ``response_format`` and ``json_schema`` parameters as the request
field vLLM and SGLang constrain decoding with, and the check of what came back. Pure.

Dify's structured-output node sends ``json_schema`` as a JSON string of ``{"name": ..., "schema":
...}`` and ``response_format`` ``json_schema`` (docs/structured_output.md). Both servers read the
OpenAI shape ``response_format: {"type": "json_schema", "json_schema": {"name", "schema",
"strict"}}`` (vLLM since it dropped ``guided_json`` in 0.12) and ``{"type": "json_object"}`` for
JSON mode; with a reasoning parser on, both apply the grammar after the reasoning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import BadRequestError, ServerError

__all__ = ["STRUCTURED_PARAMETERS", "OutputFormat", "output_format", "mismatch"]

# Dify's parameters that become ``response_format``: never sent as they are
STRUCTURED_PARAMETERS = ("response_format", "json_schema")
FORMATS = ("text", "json_object", "json_schema")
DEFAULT_NAME = "llm_response"  # the name Dify gives its schemas; vLLM and SGLang require one
_WRAPPER_KEYS = ("name", "schema", "strict", "description")
_FIX = ("set Response Format to text, or give a JSON schema as Dify's structured output writes it: "
        '{"name": "llm_response", "schema": {"type": "object", ...}}')


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What the answer must be: ``kind`` one of ``FORMATS``; ``spec`` the ``json_schema`` object
    sent (name, schema, strict) for ``json_schema``."""
    kind: str = "text"
    spec: dict = field(default_factory=dict)

    @property
    def wire(self) -> dict:
        """Fields for the request body (none for free text)."""
        if self.kind == "json_schema":
            return {"response_format": {"type": "json_schema", "json_schema": dict(self.spec)}}
        if self.kind == "json_object":
            return {"response_format": {"type": "json_object"}}
        return {}

    @property
    def constrained(self) -> bool:
        return self.kind != "text"

    def check(self, answer: str, finish_reason: str | None, endpoint: str | None) -> None:
        """Raise when the answer is not what the server was asked to constrain it to: a server
        (or a proxy before it) that dropped ``response_format`` must not pass an unconstrained
        answer off as constrained."""
        if not self.constrained or finish_reason == "tool_calls":  # a call is the answer, not JSON text
            return
        try:
            value = json.loads(answer)
        except ValueError:
            if finish_reason == "length":
                raise BadRequestError("the structured answer was cut off at max_tokens before its JSON was "
                                      "complete", endpoint=endpoint, hint="raise max_tokens (for a reasoning "
                                      "model it also counts the reasoning), or ask for a smaller JSON") from None
            raise ServerError(
                "the server was asked for JSON (response_format) but answered text that is not JSON, so it "
                "does not constrain its output", endpoint=endpoint,
                hint="check that nothing between Dify and vLLM/SGLang drops response_format, or turn "
                     "Structured output off for this model") from None
        wrong = mismatch(value, self.spec.get("schema")) if self.kind == "json_schema" else (
            None if isinstance(value, dict) else "the answer is not a JSON object")
        if wrong:
            raise ServerError(f"the server's JSON does not match the schema it was given ({wrong}), so it "
                              "does not constrain its output to the schema", endpoint=endpoint,
                              hint="check that nothing between Dify and vLLM/SGLang drops response_format")


def _parsed(raw: object) -> dict:
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        raise BadRequestError(f"the JSON Schema parameter is {type(raw).__name__}, not JSON text", hint=_FIX)
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise BadRequestError(f"the JSON Schema parameter is not valid JSON ({e})", hint=_FIX) from None
    if not isinstance(value, dict):
        raise BadRequestError(f"the JSON Schema parameter is a JSON {type(value).__name__}, not an object",
                              hint=_FIX)
    return value


def _spec(raw: object) -> dict:
    """The ``json_schema`` object to send: Dify's wrapper as it is (its known keys), or a bare
    schema (what an author may paste) wrapped under Dify's name."""
    value = _parsed(raw)
    if "schema" in value:
        spec = {k: value[k] for k in _WRAPPER_KEYS if k in value}
    else:
        spec = {"name": DEFAULT_NAME, "schema": value}
    schema = spec["schema"]
    if not isinstance(schema, dict) or not schema:
        raise BadRequestError("the JSON Schema parameter's \"schema\" is empty or not an object", hint=_FIX)
    name = spec.get("name") or DEFAULT_NAME
    if not isinstance(name, str):
        raise BadRequestError("the JSON Schema parameter's \"name\" is not text", hint=_FIX)
    spec["name"] = name
    return spec


def output_format(params: Mapping) -> OutputFormat:
    """The output the author's parameters ask for; BadRequestError naming what to change when
    they contradict each other or the schema is not one."""
    kind = params.get("response_format") or None
    raw = params.get("json_schema")
    has_schema = raw is not None and raw != ""
    if kind is not None and kind not in FORMATS:
        raise BadRequestError(f"Response Format {str(kind)[:40]!r} is not one of {', '.join(FORMATS)}",
                              hint="choose one of them in the model's parameters")
    if kind == "json_schema" and not has_schema:
        raise BadRequestError("Response Format is json_schema but no JSON schema was given",
                              hint="turn on Structured output in the LLM node and define its fields, or set "
                                   "Response Format to json_object or text")
    if has_schema and kind in ("text", "json_object"):
        raise BadRequestError(f"a JSON schema was given but Response Format is {kind}, which ignores it",
                              hint="set Response Format to json_schema, or clear the JSON Schema parameter")
    if has_schema:
        return OutputFormat("json_schema", _spec(raw))
    return OutputFormat(kind or "text")


_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,),
                                       "boolean": (bool,), "null": (type(None),),
                                       "integer": (int,), "number": (int, float)}


def _is(value: object, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(kind, (object,)))


def mismatch(value: object, schema: object, path: str = "$") -> str | None:
    """Where ``value`` breaks ``schema``, or None. The keywords every backend enforces (type,
    enum, const, properties, required, items, additionalProperties false); others are not
    judged here, so a value is never refused for a keyword this check does not know."""
    if not isinstance(schema, dict):
        return None
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    if kinds and not any(_is(value, k) for k in kinds):
        return f"{path} is {type(value).__name__}, not {'/'.join(kinds)}"
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        return f"{path} is {str(value)[:40]!r}, not one of the enum"
    if "const" in schema and value != schema["const"]:
        return f"{path} is not the const"
    if isinstance(value, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        for key in schema.get("required") or ():
            if key not in value:
                return f"{path}.{key} is missing"
        for key, item in value.items():
            if key in props:
                wrong = mismatch(item, props[key], f"{path}.{key}")
                if wrong:
                    return wrong
            elif schema.get("additionalProperties") is False:
                return f"{path}.{key} is not a property of the schema"
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            wrong = mismatch(item, schema["items"], f"{path}[{i}]")
            if wrong:
                return wrong
    return None
