"""Thinking on demand: what a request asks a hybrid DeepSeek model to do, and how it is sent.

vLLM and SGLang read the switch from ``chat_template_kwargs`` (``{"thinking": bool}``), never from
a top-level ``thinking``. Their defaults for an omitted switch differ between versions (V4: on in
current vLLM, off in older vLLM and SGLang; V3.2-Speciale: chat mode, wrong for that model), and a
server's template and reasoning parser can disagree about it, so a hybrid model is always told,
with the family's default when the workflow author set nothing (Dify's SDK fills no defaults).
The effort goes in both places servers read it: ``chat_template_kwargs.reasoning_effort`` (vLLM)
and the top-level ``reasoning_effort`` (SGLang's V4 path). Pure: a decision from the family, the
author's parameters and whether the request carries tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import BadRequestError
from .families import Family

__all__ = ["SWITCH_PARAMETERS", "Thinking", "thinking_for"]

# the author's parameters that are the switch: never sent as they are (top-level "thinking" is
# ignored by vLLM and SGLang; the effort is sent where each server reads it)
SWITCH_PARAMETERS = ("thinking", "reasoning_effort")


@dataclass(frozen=True, slots=True)
class Thinking:
    """``on``: whether the answer starts with reasoning (how it is shown). ``wire``: fields for
    the request body. ``note``: why the author's choice was not followed (for the log)."""
    on: bool
    wire: dict = field(default_factory=dict)
    note: str | None = None


def _switch(value: object) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text in ("true", "1", "on", "yes"):
        return True
    if text in ("false", "0", "off", "no"):
        return False
    raise BadRequestError(f"thinking must be true or false, got {str(value)[:20]!r}",
                          hint="set the Thinking switch on or off")


def thinking_for(family: Family, params: Mapping, *, tools: bool) -> Thinking:
    """What ``family`` does for a request with the author's ``params``, tools or not."""
    if family.thinking == "never":
        return Thinking(False)
    if family.thinking == "always":
        # R1 has no switch; Speciale's encoder needs to be told, or it renders chat mode
        return Thinking(True, {"chat_template_kwargs": {"thinking": True}} if family.thinking_fixed else {})
    asked = _switch(params.get("thinking"))
    on = family.thinking_default if asked is None else asked
    note = None
    if on and tools and not family.tools_with_thinking:
        on = False
        note = (f"thinking turned off for this request: {family.name} models call tools only without "
                "thinking (its chat template and tool parser support tools in non-thinking mode)")
    kwargs: dict = {"thinking": on}
    wire: dict = {"chat_template_kwargs": kwargs}
    if on and family.efforts:
        effort = params.get("reasoning_effort") or family.effort_default
        if effort not in family.efforts:
            raise BadRequestError(f"reasoning_effort {str(effort)[:20]!r} is not a level of this model",
                                  hint=f"use one of: {', '.join(family.efforts)}")
        kwargs["reasoning_effort"] = wire["reasoning_effort"] = effort
    return Thinking(on, wire, note)
