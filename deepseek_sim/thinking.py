"""Hybrid thinking: whether a request to a thinking-on-demand model (V3.1, V3.2, V4, V4.1) thinks.

The switch is ``chat_template_kwargs.thinking`` (vLLM also reads ``enable_thinking``; V4's
``reasoning_effort: "none"`` turns it off). Omitted, each server renders its own default, which is
not always DeepSeek's (issue14-facts section 1): V3.1 and V3.2 chat; V4 and V4.1 thinking on
current vLLM but chat on SGLang (``SGLANG_DEFAULT_THINKING`` unset); V3.2-Speciale chat, which is
wrong for that model, so a client must send ``thinking: true``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HYBRID_DEFAULTS", "shape_for", "thinks"]

# family -> (vLLM's default, SGLang's default) when the request omits the switch
HYBRID_DEFAULTS: dict[str, tuple[bool, bool]] = {
    "v3.1": (False, False),
    "v3.2": (False, False),
    "v3.2-speciale": (False, False),
    "v4": (True, False),
    "v4.1": (True, False),
}


def thinks(body: dict, hybrid: str | None, flavor: str) -> bool:
    """Whether the reply reasons: always for a model that is not hybrid (``hybrid`` None: the
    reply's shape decides), else as the request's switch says or the server's default."""
    if hybrid is None:
        return True
    vllm = flavor == "vllm"
    kwargs: Any = body.get("chat_template_kwargs")
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    if vllm and hybrid in ("v4", "v4.1") and kwargs.get("reasoning_effort") == "none":
        return False
    if "thinking" in kwargs:
        return bool(kwargs["thinking"])
    if vllm and "enable_thinking" in kwargs:
        return bool(kwargs["enable_thinking"])
    return HYBRID_DEFAULTS[hybrid][0 if vllm else 1]


def shape_for(body: dict, shape: str, hybrid: str | None, flavor: str) -> str:
    """The reply's shape for this request: ``shape`` when it thinks, else a plain answer (with or
    without a reasoning parser, a model that does not think writes only its answer)."""
    return shape if thinks(body, hybrid, flavor) else "plain"
