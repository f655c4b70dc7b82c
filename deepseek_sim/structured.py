"""Structured output as vLLM and SGLang serve it: ``response_format`` json_schema / json_object
constrains the answer (after the reasoning, when the server runs a reasoning parser; from the
first token when it runs none); a schema the grammar backend cannot take, or a server without
one, is refused. Real vLLM 0.32's words and shapes: docs/structured_output.md."""

from __future__ import annotations

import json
from typing import Any

# keys vLLM's xgrammar path refuses (its has_xgrammar_unsupported_json_features), as the 400
# real vLLM 0.32 sent for uniqueItems: 'Grammar error: Unimplemented keys: ["uniqueItems"]'
UNSUPPORTED_KEYS = ("uniqueItems", "contains", "minContains", "maxContains", "patternProperties")
# SGLang started with --grammar-backend none (its grammar manager's words)
SGLANG_NO_BACKEND = ("Grammar-based generation (json_schema, regex, ebnf, structural_tag) is not supported "
                     "when the server is launched with --grammar-backend none")
GRAMMAR_BACKENDS = ("xgrammar", "none", "ignored")


def wanted(body: dict) -> dict | None:
    """The request's constraint: ``{"type": "json_object"}`` or the json_schema object; None for text."""
    rf = body.get("response_format")
    if not isinstance(rf, dict) or rf.get("type") in (None, "text"):
        return None
    if rf.get("type") == "json_schema":
        return rf.get("json_schema") if isinstance(rf.get("json_schema"), dict) else {}
    return {"type": rf.get("type")}


def _keys(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        return set(schema) | {k for v in schema.values() for k in _keys(v)}
    if isinstance(schema, list):
        return {k for v in schema for k in _keys(v)}
    return set()


def refusal(body: dict, backend: str, flavor: str) -> str | None:
    """Why the server refuses the request's constraint (a 400's message), or None."""
    spec = wanted(body)
    if spec is None or backend == "ignored":
        return None
    if backend == "none":
        return SGLANG_NO_BACKEND
    if flavor == "vllm" and spec.get("type") != "json_object":
        if "schema" not in spec:
            return "When response_format type is 'json_schema', the 'json_schema' field must be provided."
        bad = sorted(_keys(spec["schema"]) & set(UNSUPPORTED_KEYS))
        if bad:
            return "Grammar error: Unimplemented keys: " + json.dumps(bad)
    return None


def sample(schema: Any) -> Any:
    """A value that matches ``schema`` (objects, strings, numbers, integers, booleans, null,
    enums, consts, arrays; every property, so every required one)."""
    if not isinstance(schema, dict):
        return {}
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or kind is None and "properties" in schema:
        return {k: sample(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [sample(schema.get("items"))] * max(1, int(schema.get("minItems") or 1))
    return {"string": "simulated", "integer": 7, "number": 1.5, "boolean": True, "null": None}.get(kind, {})


def answer_text(body: dict) -> str | None:
    """The constrained answer for the request, or None when it asks for free text."""
    spec = wanted(body)
    if spec is None:
        return None
    if spec.get("type") == "json_object":
        return json.dumps({"answer": "simulated"})
    return json.dumps(sample(spec.get("schema")), ensure_ascii=False)
