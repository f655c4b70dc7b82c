"""What each server refuses before generating: a missing API key, and a chat body that fails
vLLM's request model (pydantic, then vLLM's own checks) or SGLang's."""

from __future__ import annotations

from typing import Any

from .config import SimConfig
from .httpio import Request

_FLOAT_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT_FIELDS = ("max_tokens", "max_completion_tokens")
RequestError = tuple  # (status, message, keyword arguments of errors.error_body)


def authorized(cfg: SimConfig, req: Request) -> bool:
    key = cfg.api_key
    return not key or req.headers.get("authorization", "") == f"Bearer {key}"


def max_tokens_of(body: dict) -> int | None:
    """The output limit of a request that passed validation (max_completion_tokens is the new name)."""
    v = body.get("max_completion_tokens")
    v = body.get("max_tokens") if v is None else v
    return None if v is None else int(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pydantic_error(type_: str, loc: str, msg: str, value: Any, ctx: dict | None = None) -> RequestError:
    """FastAPI's 400 for a body that fails the request model, as vLLM words it."""
    err: dict[str, Any] = {"type": type_, "loc": loc, "msg": msg, "input": value}
    if ctx:
        err["ctx"] = ctx
    return 400, "1 validation error:\n  " + repr(err), {"type_": "Bad Request", "param": loc}


def vllm_request_error(body: Any, cfg: SimConfig) -> RequestError | None:
    """What vLLM 0.32 answers to a bad chat request: pydantic's checks first, then its own."""
    if isinstance(body, ValueError):
        return _pydantic_error("json_invalid", f"body.{getattr(body, 'pos', 0)}", "JSON decode error", {},
                               {"error": getattr(body, "msg", str(body))})
    if body is None:
        return _pydantic_error("missing", "body", "Field required", None)
    if not isinstance(body, dict):
        return _pydantic_error("model_attributes_type", "body",
                               "Input should be a valid dictionary or object to extract fields from", body)
    if "messages" not in body:
        return _pydantic_error("missing", "body.messages", "Field required", body)
    messages = body["messages"]
    if not isinstance(messages, list):
        return _pydantic_error("list_type", "body.messages", "Input should be a valid list", messages)
    if not messages or not all(isinstance(m, dict) for m in messages):
        return 400, "messages: Field required", {"param": "messages"}
    for name in _FLOAT_FIELDS:
        v = body.get(name)
        if v is None or isinstance(v, (int, float)):
            continue
        if isinstance(v, str):
            try:
                float(v)
                continue
            except ValueError:
                return _pydantic_error("float_parsing", "body." + name,
                                       "Input should be a valid number, unable to parse string as a number", v)
        return _pydantic_error("float_type", "body." + name, "Input should be a valid number", v)
    for name in _INT_FIELDS:
        v = body.get(name)
        if v is None or _is_int(v):
            continue
        if isinstance(v, float) and v.is_integer():
            continue  # pydantic's lax mode; max_tokens_of makes it an int
        if isinstance(v, str):
            return _pydantic_error("int_parsing", "body." + name,
                                   "Input should be a valid integer, unable to parse string as an integer", v)
        if isinstance(v, float):
            return _pydantic_error("int_from_float", "body." + name,
                                   "Input should be a valid integer, got a number with a fractional part", v)
        return _pydantic_error("int_type", "body." + name, "Input should be a valid integer", v)
    model = body.get("model")
    if model is not None and model != cfg.served_model:
        return 404, vllm_no_model(model, cfg), {"param": "model"}
    max_tokens = max_tokens_of(body)
    if max_tokens is not None and max_tokens < 1:
        return 400, (f"max_tokens must be at least 1, got {max_tokens}. "
                     f"(parameter=max_tokens, value={max_tokens})"), {"param": "max_tokens"}
    if not cfg.tool_parser and body.get("tools") and body.get("tool_choice") in (None, "auto"):
        return 400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set', {}
    if max_tokens is not None and max_tokens > cfg.max_model_len:
        return 400, (f"max_tokens={max_tokens} cannot be greater than max_model_len={cfg.max_model_len}. "
                     f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})"), \
            {"param": "max_tokens"}
    if body.get("continue_final_message") and body.get("add_generation_prompt", True):
        return 400, ("Cannot set both `add_generation_prompt` and `continue_final_message` to True."), {}
    final = messages[-1].get("content") if body.get("continue_final_message") else None
    if isinstance(final, str) and "</think>" in final:  # R1's template drops up to </think>
        return 400, ("continue_final_message is set but the final message does not appear in the chat after "
                     "applying the chat template! This can happen if the chat template deletes portions of "
                     "the final message. Please verify the chat template and final message in your chat to "
                     f"ensure they are compatible.Final message to continue: {final}"), {}
    return None


def vllm_no_model(model: Any, cfg: SimConfig) -> str:
    return f"The model `{model}` does not exist. Valid aliases: {cfg.served_model}."


def sglang_request_error(body: Any, cfg: SimConfig) -> RequestError | None:
    if not isinstance(body, dict):
        return 400, "JSON decode error: request body is not a JSON object", {}
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return 400, "messages: Field required", {"param": "messages"}
    model = body.get("model")
    if model is not None and model != cfg.served_model:
        return 404, f"The model `{model}` does not exist.", {}
    v = body.get("max_completion_tokens")
    v = body.get("max_tokens") if v is None else v
    if v is not None and (not _is_int(v) or v < 1):
        return 400, f"max_tokens must be at least 1, got {v}.", {"param": "max_tokens"}
    return None
