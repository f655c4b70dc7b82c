"""Whether the server honours the thinking switch of a hybrid model (V3.1, V3.2, V4, V4.1):
``chat_template_kwargs.thinking`` on gives reasoning, off a direct answer. The plugin sends the
switch on every request, so what the server does when it is omitted is reported, not judged."""

from __future__ import annotations

from deepseek_engine.protocol import build_body

from .chat import HELLO, SHAPE_TOKENS, failed_outright, plugin_body
from .flags import hint
from .probe import Probe
from .report import FAIL, OK, WARN, Check
from .wire import Raw, raw_chat

__all__ = ["check_thinking"]

_PARAMS = {"max_tokens": SHAPE_TOKENS, "temperature": 0.6}


def _decided(p: Probe):
    """When a reply has said whether it reasons: with a reasoning parser, at its first text
    (reasoning comes first); without one, at ``</think>`` or the end."""
    parsed = p.shape in ("reasoning", "reasoning_content")

    def done(raw: Raw) -> bool:
        return raw.reasoned or (parsed and bool(raw.content.strip()))
    return done


def _said(on: bool | None) -> str:
    return {True: "reasoning", False: "a direct answer", None: "no answer"}[on]


def check_thinking(p: Probe) -> Check:
    family = p.family
    if not family.hybrid:
        what = {"always": "always reason", "never": "do not reason"}[family.thinking]
        fixed = (" (the plugin sends them thinking=true, without which the server renders chat "
                 "mode)" if family.thinking_fixed else "")
        return Check("thinking", OK, f"no thinking switch to check: {family.name} models {what}{fixed}",
                     {"switch": False, "family": family.name})
    off = raw_chat(p, plugin_body(p, HELLO, _PARAMS, thinking=False), _decided(p))
    if off.error is not None:
        status = FAIL if failed_outright(off) else WARN
        return Check("thinking", status, f"the request with thinking off failed: {off.error.message}",
                     {"status": off.status})
    omitted = raw_chat(p, build_body(p.model, HELLO, _PARAMS, family=family), _decided(p))
    default = None if omitted.error is not None else omitted.reasoned
    on = p.thinks
    data = {"switch": True, "family": family.name, "on": on, "off": off.reasoned, "omitted": default}
    template = hint(family.name, p.flavor, "template")
    serve = f"; serve it with its own chat template ({template})" if template else ""
    if default is None:
        note = ""
    else:
        own = "on" if family.thinking_default else "off"
        note = (f". A request without the switch gets {_said(default)} here ({family.name}'s own "
                f"default is {own}; the plugin always sends the switch)")
    if on and not off.reasoned:
        return Check("thinking", OK, "the server honours the thinking switch "
                     "(chat_template_kwargs.thinking): on gives reasoning, off a direct answer" + note,
                     data)
    if on:
        return Check("thinking", WARN, "thinking cannot be turned off: with thinking off the model "
                     "still reasons, so the chat template ignores chat_template_kwargs.thinking"
                     f"{serve}" + note, data)
    if off.reasoned:
        return Check("thinking", WARN, "the switch works backwards: thinking on gave a direct answer "
                     f"and off gave reasoning{serve}", data)
    return Check("thinking", WARN, f"thinking on gave no reasoning: the server ignores "
                 f"chat_template_kwargs.thinking (a chat template without the switch?){serve}. The "
                 "plugin's Thinking switch then changes nothing" + note, data)
