"""Whether the server constrains output to a JSON schema, as Dify's structured output asks it
through the plugin (``response_format`` json_schema), and, where the server says, with which
grammar backend (SGLang's /get_server_info; vLLM's API does not tell, it picks per request)."""

from __future__ import annotations

import json

import httpx

from deepseek_engine.errors import structured_refusal
from deepseek_engine.reasoning import split_reasoning
from deepseek_engine.structured import mismatch

from .chat import HELLO, SHAPE_TOKENS, failed_outright, plugin_body
from .probe import Probe
from .report import FAIL, OK, WARN, Check
from .wire import Raw, get, raw_chat

__all__ = ["check_structured"]

# an answer no model gives unconstrained: only a grammar makes it this exact object
SCHEMA = {"type": "object", "properties": {"doctor_probe": {"type": "string", "enum": ["constrained"]}},
          "required": ["doctor_probe"], "additionalProperties": False}
_PARAMS = {"max_tokens": SHAPE_TOKENS, "temperature": 0.6, "response_format": "json_schema",
           "json_schema": json.dumps({"name": "llm_response", "schema": SCHEMA})}
_OFF = ("; until then, turn Structured output off for a customizable model (Dify then puts the schema in the "
        "prompt)")


def _answered(raw: Raw) -> bool:
    return "}" in split_reasoning(raw.content)[1]


def _backend(p: Probe) -> str | None:
    """The grammar backend the server names (SGLang's server info), else None."""
    if p.flavor != "sglang":
        return None
    try:
        r = get(p, "/get_server_info")
        value = r.json().get("grammar_backend") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def check_structured(p: Probe) -> Check:
    raw = raw_chat(p, plugin_body(p, HELLO, _PARAMS), _answered)
    if raw.error is not None:
        msg = raw.error.message
        if failed_outright(raw):
            return Check("structured", FAIL, f"the structured-output request failed: {msg}", {"status": raw.status})
        fix = structured_refusal(msg).strip() or "check the server's structured-output settings"
        return Check("structured", WARN, f"the server refuses structured output ({msg[:200]}). {fix}{_OFF}",
                     {"status": raw.status, "constrained": False})
    backend = _backend(p) or ("chosen per request by vLLM (xgrammar, guidance for what it lacks)"
                              if p.flavor == "vllm" else "not named by the server")
    answer = split_reasoning(raw.content)[1].strip()
    try:
        value = json.loads(answer)
    except ValueError:
        value = None
    data = {"constrained": value is not None and mismatch(value, SCHEMA) is None, "backend": backend}
    if data["constrained"]:
        after = " after its reasoning" if raw.reasoned else ""
        return Check("structured", OK, f"the server constrains output to a JSON schema{after} (Dify's "
                     f"structured output is enforced); grammar backend: {backend}", data)
    return Check("structured", WARN, f"asked for JSON matching a schema, the server answered {answer[:80]!r}: "
                 "it ignores response_format (a proxy dropping it, or a server without guided decoding)"
                 f"{_OFF}", data)
