"""The OpenAI-compatible chat wire format as vLLM and SGLang speak it: pure transforms.

``build_body`` shapes a request; ``parse_chunk`` / ``parse_completion`` turn server JSON into
``ChatDelta``, the one shape the rest of the engine knows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ServerError, StreamBrokenError
from .reasoning import strip_reasoning

__all__ = ["ChatDelta", "parse_chunk", "parse_completion", "build_body", "clean_messages",
           "coalesce"]


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


def _reasoning_of(d: dict) -> str:
    # vLLM sent both names for a while (an alias); never add them up
    r = d.get("reasoning_content")
    if r is None:
        r = d.get("reasoning")
    return r if isinstance(r, str) else ""


def _check_error(obj: object, endpoint: str) -> dict:
    if not isinstance(obj, dict):
        raise StreamBrokenError(f"the server sent a chunk that is not a JSON object: {str(obj)[:80]}",
                                endpoint=endpoint)
    err = obj.get("error")
    if err and not obj.get("choices"):
        msg = err.get("message") if isinstance(err, dict) else str(err)
        # vLLM reports failures after the stream started in-band, with HTTP 200 already sent
        raise ServerError(f"the server failed while generating: {str(msg)[:300]}", endpoint=endpoint)
    return obj


def parse_chunk(obj: object, endpoint: str) -> ChatDelta:
    obj = _check_error(obj, endpoint)
    out = ChatDelta(usage=obj.get("usage") or None)
    choices = obj.get("choices")
    if choices:
        choice = choices[0]
        delta = choice.get("delta") or {}
        out.reasoning = _reasoning_of(delta)
        content = delta.get("content")
        out.content = content if isinstance(content, str) else ""
        out.tool_calls = delta.get("tool_calls") or None
        out.finish_reason = choice.get("finish_reason")
    return out


def parse_completion(obj: object, endpoint: str) -> ChatDelta:
    """A non-streamed ``chat.completion`` as one delta (used by tools that don't stream)."""
    obj = _check_error(obj, endpoint)
    choices = obj.get("choices") or [{}]
    msg = choices[0].get("message") or {}
    content = msg.get("content")
    return ChatDelta(reasoning=_reasoning_of(msg), content=content if isinstance(content, str) else "",
                     tool_calls=msg.get("tool_calls") or None,
                     finish_reason=choices[0].get("finish_reason"), usage=obj.get("usage") or None)


def clean_messages(messages: list[dict]) -> list[dict]:
    """History as DeepSeek wants it: no reasoning in assistant turns, no empty assistant text."""
    out = []
    for m in messages:
        if m.get("role") == "assistant":
            m = {k: v for k, v in m.items() if k not in ("reasoning_content", "reasoning")}
            content = m.get("content")
            if isinstance(content, str):
                m["content"] = strip_reasoning(content)
            if m.get("tool_calls") and not m.get("content"):
                m["content"] = None  # vLLM's DeepSeek templates expect null beside tool calls
        out.append(m)
    return out


# Dify parameter names that are not the wire names (everything else passes as is)
_RENAMES = {"max_tokens_to_sample": "max_tokens"}


def build_body(model: str, messages: list[dict], params: dict, *, tools: list[dict] | None = None,
               stop: list[str] | None = None, user: str | None = None) -> dict:
    body: dict = {"model": model, "messages": clean_messages(messages)}
    for key, value in params.items():
        if value is None:
            continue
        key = _RENAMES.get(key, key)
        if key == "response_format":
            if value in ("json_object", "text"):
                body["response_format"] = {"type": value}
            continue
        if key == "top_k" and value in (0,):
            continue  # 0 means "off" in Dify's UI; vLLM wants -1 or nothing
        body[key] = value
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
