"""The OpenAI-compatible chat wire format as vLLM and SGLang speak it: pure transforms.

``build_body`` shapes a request; ``parse_chunk`` / ``parse_completion`` turn server JSON into
``ChatDelta``, the one shape the rest of the engine knows.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

from .errors import BadRequestError, ServerError, StreamBrokenError, structured_refusal
from .families import Family
from .reasoning import split_reasoning
from .structured import STRUCTURED_PARAMETERS, OutputFormat, output_format
from .thinking import SWITCH_PARAMETERS, Thinking

__all__ = ["ChatDelta", "parse_chunk", "parse_completion", "build_body", "clean_messages",
           "coalesce", "without_lone_surrogates", "checked_usage", "MAX_TOKEN_COUNT"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ChatDelta:
    reasoning: str = ""
    content: str = ""
    tool_calls: list | None = None  # raw OpenAI tool-call deltas
    finish_reason: str | None = None
    usage: dict | None = None
    # server events with text merged into this one (``coalesce``): vLLM and SGLang send a token
    # per event, so a lower bound on the tokens in it
    events: int = 1

    @property
    def has_output(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls or self.finish_reason)


def coalesce(deltas: list[ChatDelta]) -> list[ChatDelta]:
    """Deltas that arrived in one network read, merged: a person reading cannot tell 30 tokens
    that arrive together from one chunk of 30, but every chunk costs the plugin runtime. Order
    is kept (reasoning after content starts a new delta); nothing waits for more input."""
    if len(deltas) < 2:
        return deltas
    out: list[ChatDelta] = []
    cur: ChatDelta | None = None
    for d in deltas:
        if cur is None or (d.reasoning and cur.content) or (cur.tool_calls and (d.reasoning or d.content)):
            cur = ChatDelta(d.reasoning, d.content, list(d.tool_calls) if d.tool_calls else None,
                            d.finish_reason, d.usage, d.events if d.reasoning or d.content else 0)
            out.append(cur)
            continue
        if d.reasoning or d.content:
            cur.events += d.events
        cur.reasoning += d.reasoning
        cur.content += d.content
        if d.tool_calls:
            cur.tool_calls = (cur.tool_calls or []) + d.tool_calls
        cur.finish_reason = d.finish_reason or cur.finish_reason
        cur.usage = d.usage or cur.usage
    return out


class _Shape(ValueError):
    """A field of the wrong type: the stream is not the protocol (a broken server or proxy)."""


def _typed(obj: dict, key: str, kind: type, path: str):
    """``obj[key]`` if it is a ``kind`` or absent/null (None); else ``_Shape``. JSON gives exact
    types, so ``type() is`` suffices (and keeps a bool from passing as an int)."""
    value = obj.get(key)
    if value is None or type(value) is kind:
        return value
    raise _Shape(f"{path}{key} is {type(value).__name__}")


def _first_choice(obj: dict, part: str) -> tuple[dict, dict]:
    """The first choice and its ``part`` ("delta" or "message"); empty when there are none."""
    choices = _typed(obj, "choices", list, "")
    if not choices:
        return {}, {}
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _Shape(f"choices[0] is {type(choice).__name__}")
    return choice, _typed(choice, part, dict, "choices[0].") or {}


def _reasoning_of(d: dict, path: str) -> str:
    # vLLM sent both names for a while (an alias); never add them up
    r = _typed(d, "reasoning_content", str, path)
    if r is None:
        r = _typed(d, "reasoning", str, path)
    return r or ""


def _tool_calls(d: dict, path: str) -> list | None:
    """Tool calls (deltas or whole) whose fields have the types the accumulator relies on."""
    calls = d.get("tool_calls")
    if not calls:
        return None
    if type(calls) is not list:
        raise _Shape(f"{path}tool_calls is {type(calls).__name__}")
    for i, call in enumerate(calls):
        where = f"{path}tool_calls[{i}]"
        if not isinstance(call, dict):
            raise _Shape(f"{where} is {type(call).__name__}")
        _typed(call, "index", int, where + ".")
        _typed(call, "id", str, where + ".")
        fn = _typed(call, "function", dict, where + ".") or {}
        _typed(fn, "name", str, where + ".function.")
        if not isinstance(fn.get("arguments"), (str, dict, type(None))):  # a few send them parsed
            raise _Shape(f"{where}.function.arguments is {type(fn['arguments']).__name__}")
    return calls


# token counts no request reaches: beyond it a count is a broken server's (1e999, 2**63, ...)
MAX_TOKEN_COUNT = 100_000_000
_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")


def checked_usage(usage: dict | None, endpoint: str) -> dict | None:
    """The token counts of ``usage`` that can be true: integers from 0 to ``MAX_TOKEN_COUNT``.
    The others are left out and counted offline, as for a server that sends no usage: a negative
    or null count would reach Dify, which refuses the chunk."""
    if not usage:
        return None
    out: dict = {}
    for key in _COUNTS:
        value = usage.get(key)
        if type(value) is float and value.is_integer():
            value = int(value)
        if type(value) is int and 0 <= value <= MAX_TOKEN_COUNT:
            out[key] = value
        elif key in usage:
            log.info("%s sent an unusable %s (%.40r): counted here instead", endpoint, key, value)
    return out or None


def _check_error(obj: object, endpoint: str) -> dict:
    if not isinstance(obj, dict):
        raise StreamBrokenError(f"the server sent a malformed chunk, not a JSON object: {str(obj)[:80]}",
                                endpoint=endpoint)
    err = obj.get("error")
    if err and not obj.get("choices"):
        msg = err.get("message") if isinstance(err, dict) else str(err)
        hint = structured_refusal(str(msg))
        if hint:  # SGLang aborts a request its grammar backend cannot serve after the stream began
            raise BadRequestError(f"the server refused structured output: {str(msg)[:300]}", endpoint=endpoint,
                                  hint=hint.strip())
        # vLLM reports failures after the stream started in-band, with HTTP 200 already sent
        raise ServerError(f"the server failed while generating: {str(msg)[:300]}", endpoint=endpoint)
    return obj


def parse_chunk(obj: object, endpoint: str) -> ChatDelta:
    return _parse(obj, "delta", "chunk", endpoint)


def parse_completion(obj: object, endpoint: str) -> ChatDelta:
    """A non-streamed ``chat.completion`` as one delta (used by tools that don't stream)."""
    return _parse(obj, "message", "completion", endpoint)


def _parse(obj: object, part: str, kind: str, endpoint: str) -> ChatDelta:
    obj = _check_error(obj, endpoint)
    try:
        choice, d = _first_choice(obj, part)
        path = part + "."
        usage = _typed(obj, "usage", dict, "")
        return ChatDelta(_reasoning_of(d, path), _typed(d, "content", str, path) or "", _tool_calls(d, path),
                         _typed(choice, "finish_reason", str, "choices[0]."),
                         checked_usage(usage, endpoint) if usage else None)
    except _Shape as e:
        raise StreamBrokenError(f"the server sent a malformed {kind}: {e}", endpoint=endpoint) from None


def _reasoning_kept(messages: list[dict], rule: str, tools: bool) -> set[int]:
    """The assistant turns whose reasoning goes back to the server under the family's ``rule``
    (families.yaml ``reasoning_history``): none; those after the last user message (V3.2's
    encoder wants them in thinking mode); or, when the request has tools, every one (V4's
    encoder then keeps every turn's reasoning)."""
    if rule == "strip":
        return set()
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if rule == "tool_loop" and tools:
        return set(turns)
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return {i for i in turns if i > last_user}


def clean_messages(messages: list[dict], rule: str = "strip", *, tools: bool = False) -> list[dict]:
    """History as DeepSeek wants it: no empty assistant text, and no reasoning in an assistant
    turn's text. The turns ``rule`` keeps carry it as ``reasoning_content`` and ``reasoning``
    (SGLang reads the one, vLLM's encoders the other), recovered from the think block Dify keeps
    in the text; the others lose it (R1's and V3.1's templates drop it anyway)."""
    keep = _reasoning_kept(messages, rule, tools)
    out = []
    for i, m in enumerate(messages):
        if m.get("role") == "assistant":
            given = m.get("reasoning_content") or m.get("reasoning")
            m = {k: v for k, v in m.items() if k not in ("reasoning_content", "reasoning")}
            content = m.get("content")
            reasoning = ""
            if isinstance(content, str):
                reasoning, m["content"] = split_reasoning(content)
            reasoning = reasoning or (given if isinstance(given, str) else "")
            if i in keep and reasoning:
                m["reasoning_content"] = m["reasoning"] = reasoning
            if m.get("tool_calls") and not m.get("content"):
                m["content"] = None  # vLLM's DeepSeek templates expect null beside tool calls
        out.append(m)
    return out


# Dify parameter names that are not the wire names (everything else passes as is)
_RENAMES = {"max_tokens_to_sample": "max_tokens"}


def build_body(model: str, messages: list[dict], params: dict, *, tools: list[dict] | None = None,
               stop: list[str] | None = None, user: str | None = None, family: Family | None = None,
               thinking: Thinking | None = None, output: OutputFormat | None = None) -> dict:
    """The request body. ``family``: its history rule and extra fields (none: history stripped);
    ``thinking``: the switch as decided (``thinking.thinking_for``); ``output``: the answer's
    format as decided (``structured.output_format``; by default read from ``params``). The
    author's switch and format parameters never go out as they are."""
    rule = family.reasoning_history if family else "strip"
    body: dict = {"model": model, "messages": clean_messages(messages, rule, tools=bool(tools))}
    if family:
        body.update(copy.deepcopy(dict(family.extra_body)))  # the table's own values stay untouched
    for key, value in params.items():
        if value is None or key in SWITCH_PARAMETERS or key in STRUCTURED_PARAMETERS:
            continue
        key = _RENAMES.get(key, key)
        if key == "top_k" and value in (0,):
            continue  # 0 means "off" in Dify's UI; vLLM wants -1 or nothing
        body[key] = value
    if thinking:
        body.update(thinking.wire)
    body.update((output or output_format(params)).wire)
    if tools:
        body["tools"] = tools
        body["tool_choice"] = "auto"
    if stop:
        body["stop"] = stop
    if user:
        body["user"] = user
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


def without_lone_surrogates(obj: object) -> object:
    """Parsed JSON whose strings hold no lone UTF-16 surrogate (``"\\ud800"`` alone): JSON allows
    the escape, but such a string cannot be written as UTF-8, and Dify's daemon reads UTF-8. Each
    becomes U+FFFD; proper pairs (emoji) were already joined by the parser."""
    if isinstance(obj, str):
        return obj.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(obj, list):
        return [without_lone_surrogates(v) for v in obj]
    if isinstance(obj, dict):
        return {k: without_lone_surrogates(v) for k, v in obj.items()}
    return obj
