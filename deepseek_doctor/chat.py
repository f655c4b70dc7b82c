"""Chat requests as the plugin sends them: where reasoning arrives (``reasoning``), whether tool
calls come back (``tools``), time to first token and rate (``speed``), token usage on streams
(``usage``), and whether a cut stream can be continued (``continue``)."""

from __future__ import annotations

import statistics
import time

from deepseek_engine.errors import ConnectError, EngineError
from deepseek_engine.protocol import build_body
from deepseek_engine.thinking import thinking_for

from .flags import hint, markup_family
from .probe import FLAVOR_NAME, Probe, ms
from .report import FAIL, OK, WARN, Check
from .wire import Raw, raw_chat

__all__ = ["check_continue", "check_reasoning", "check_speed", "check_tools", "check_usage",
           "failed_outright", "plugin_body"]

# Raw probes stop reading as soon as they know the answer; these are upper bounds.
SHAPE_TOKENS = 512  # enough for R1 to finish thinking about "hello" and close </think>
TOOL_TOKENS = 512
SPEED_TOKENS = 64

_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}
# What a DeepSeek model writes when the server has no tool-call parser to turn it into tool_calls:
# its special tokens (V3, V3.1: <｜tool▁calls▁begin｜>…; V3.2, V4, V4.1: <｜DSML｜…), or (when the
# server strips special tokens) the bare name and JSON arguments
_TOOL_TEXT_MARKERS = ("tool▁call", "tool▁sep", "<|tool", "<｜tool", "｜DSML｜")

HELLO = [{"role": "user", "content": "Hello! Answer in one short sentence."}]


def plugin_body(p: Probe, messages: list[dict], params: dict, *, tools: list[dict] | None = None,
                thinking: bool | None = None) -> dict:
    """The body the plugin sends this model (the engine's own ``thinking_for`` and ``build_body``):
    ``thinking`` as a workflow author's switch (None: the family's default)."""
    family = p.family
    asked = {} if thinking is None else {"thinking": thinking}
    return build_body(p.model, messages, params, tools=tools, family=family,
                      thinking=thinking_for(family, asked, tools=bool(tools)))


def _shape_known(raw: Raw) -> bool:
    text = raw.content.lstrip()
    return bool(raw.fields) or text.startswith("<think>") or "</think>" in text \
        or bool(raw.tool_calls)


def check_reasoning(p: Probe) -> Check:
    """Where reasoning arrives, asked for (a hybrid model is sent thinking on): a reasoning field
    (a reasoning parser runs) or the text."""
    raw = raw_chat(p, plugin_body(p, HELLO, {"max_tokens": SHAPE_TOKENS, "temperature": 0.6},
                                  thinking=True), _shape_known)
    if raw.error is not None:
        return Check("reasoning", FAIL, f"the chat request failed: {raw.error.message}",
                     {"status": raw.status})
    family = p.family
    p.thinks = raw.reasoned
    fix = hint(family.name, p.flavor, "reasoning") or "add the server's DeepSeek reasoning parser"
    text = raw.content.lstrip()
    data: dict = {"fields": sorted(raw.fields)}
    if raw.fields:
        if "reasoning" in raw.fields:
            p.shape = "reasoning"
            where = "`reasoning` (vLLM with a reasoning parser)"
            if "reasoning_content" in raw.fields:
                where += ", with the older `reasoning_content` alias"
        else:
            p.shape = "reasoning_content"
            where = "`reasoning_content` (SGLang, or vLLM before 0.11, with a reasoning parser)"
        return Check("reasoning", OK, f"reasoning arrives in {where}", {**data, "shape": p.shape})
    if text.startswith("<think>"):
        p.shape = "think_inline"
        return Check("reasoning", WARN, f"reasoning arrives inline as <think>…</think> in the "
                     f"answer text: {FLAVOR_NAME[p.flavor]} runs without a reasoning parser. The "
                     f"plugin still shows it correctly; to fix it at the source, {fix}",
                     {**data, "shape": p.shape})
    if "</think>" in text:
        p.shape = "think_close_only"
        return Check("reasoning", WARN, f"reasoning arrives in the answer text, closed by a bare "
                     f"</think> (the chat template opened <think>): {FLAVOR_NAME[p.flavor]} runs "
                     f"without a reasoning parser. The plugin still shows it correctly; to fix it "
                     f"at the source, {fix}", {**data, "shape": p.shape})
    p.shape = "none"
    data["shape"] = "none"
    if raw.finish_reason == "length" and not raw.content.strip():
        return Check("reasoning", WARN, f"no answer text within {SHAPE_TOKENS} tokens: cannot tell "
                     "where reasoning goes", data)
    if family.hybrid:
        return Check("reasoning", WARN, f"asked to think, {p.model} answered without reasoning, so "
                     "whether a reasoning parser runs cannot be told (see the thinking check)", data)
    if family.thinking == "always":
        if raw.finish_reason == "length":
            return Check("reasoning", WARN, f"no reasoning markers within {SHAPE_TOKENS} tokens; "
                         f"a reasoning model normally closes </think> by then. If reasoning shows "
                         f"up in answers, {fix}", data)
        return Check("reasoning", WARN, f"{p.model} looks like a reasoning model ({family.name}) but "
                     "answered without reasoning: is the model the one you think it is?", data)
    return Check("reasoning", OK, "no reasoning (a chat model)", data)


def _tool_as_text(content: str) -> bool:
    return any(m in content for m in _TOOL_TEXT_MARKERS) or (
        _TOOL["function"]["name"] in content and '"location"' in content)


def _tool_done(raw: Raw) -> bool:
    """A parsed call, or markup far enough to name its family (the argument follows the name)."""
    return bool(raw.tool_calls) or '"location"' in raw.content + raw.reasoning


def failed_outright(raw: Raw) -> bool:
    """No answer, or the server's own failure: not a refusal of what was asked."""
    return isinstance(raw.error, ConnectError) or raw.status is None or raw.status >= 500


def check_tools(p: Probe) -> Check:
    """A tool offered, as the plugin sends it (a V3.1 request with tools goes out thinking off):
    ``tool_calls`` back means the tool-call parser runs; the family's markup in the text means it
    does not, and which markup names the parser to add."""
    body = plugin_body(p, [{"role": "user", "content": "What is the weather in Paris right now? "
                                                       "Use the get_weather tool."}],
                       {"max_tokens": TOOL_TOKENS, "temperature": 0.6}, tools=[_TOOL])
    raw = raw_chat(p, body, _tool_done)
    if raw.error is None and not raw.tool_calls and not _tool_as_text(raw.content + raw.reasoning):
        # neither a call nor markup: vLLM's streamed tool parser now and then drops a call it
        # parsed (seen on real vLLM under load), so one answer does not settle it; a second does
        raw = raw_chat(p, body, _tool_done)
    family = p.family
    fix = hint(family.name, p.flavor, "tools") or "add the server's DeepSeek tool-call parser"
    untrained = ("" if family.tools else f" ({p.model}: {family.name} models are not trained for "
                 "tool calls; agents want V3, V3.1, V3.2 or V4)")
    if raw.error is not None:
        msg = raw.error.message
        if raw.status == 400 and "tool" in msg.lower():
            return Check("tools", WARN, f"the server rejects tool calls ({msg[:200]}): {fix}{untrained}",
                         {"status": 400, "parser": False})
        if failed_outright(raw):
            return Check("tools", FAIL, f"the request with a tool failed: {msg}",
                         {"status": raw.status})
        return Check("tools", WARN, f"the request with a tool was refused: {msg}. {fix}{untrained}",
                     {"status": raw.status, "parser": False})
    if raw.tool_calls:
        names = sorted({str((c.get("function") or {}).get("name")) for c in raw.tool_calls
                        if isinstance(c, dict) and (c.get("function") or {}).get("name")})
        return Check("tools", OK, f"tool calls work: the tool-call parser returned "
                     f"{', '.join(names) or 'a call'}", {"parser": True, "called": names})
    written = raw.content + raw.reasoning
    if _tool_as_text(written):
        seen = markup_family(written, family.name)
        if seen and seen != family.name:  # the markup knows better than the name
            fix = hint(seen, p.flavor, "tools") or fix
        markup = f"{seen} tool-call markup" if seen else "its tool call as plain text"
        where = "reasoning" if _tool_as_text(raw.reasoning) else "answer"
        return Check("tools", WARN, f"the model wrote {markup} in the {where}: the server has no "
                     f"tool-call parser; {fix}. (The plugin still turns DeepSeek's markup into "
                     "tool calls, but a parser on the server is the reliable way)",
                     {"parser": False, "text_call": True, "markup": seen})
    return Check("tools", WARN, "the model answered in text instead of calling the offered tool: "
                 f"either the server has no tool-call parser ({fix}) or the model does not call "
                 f"tools{untrained}", {"parser": None})


def check_speed(p: Probe) -> Check:
    body = plugin_body(p, [{"role": "user", "content": "Count from 1 to 30, separated by spaces."}],
                       {"max_tokens": SPEED_TOKENS, "temperature": 0.6})
    ttfts, rates, usage_seen = [], [], []
    for _ in range(max(1, p.opts.requests)):
        began = time.monotonic()
        first = last = None
        pieces = 0
        usage = None
        try:
            for delta in p.client.stream(body):
                if delta.usage:
                    usage = delta.usage
                if delta.reasoning or delta.content or delta.tool_calls:
                    last = time.monotonic()
                    first = first or last
                    pieces += 1
        except EngineError as e:
            p.usage_seen = None
            return Check("speed", FAIL, f"a short request failed: {e.message}",
                         {"completed": len(ttfts)})
        usage_seen.append(usage is not None)
        if first is None:
            continue
        ttfts.append(first - began)
        tokens = (usage or {}).get("completion_tokens") or pieces
        if last > first and tokens > 1:
            rates.append((tokens - 1) / (last - first))
    p.usage_seen = any(usage_seen)
    if not ttfts:
        return Check("speed", FAIL, "the server answered without any token")
    ttft = statistics.median(ttfts)
    rate = statistics.median(rates) if rates else None
    data = {"requests": len(ttfts), "ttft_ms_median": round(ttft * 1000, 1),
            "ttft_ms_max": round(max(ttfts) * 1000, 1),
            "tokens_per_s_median": round(rate, 1) if rate else None}
    detail = (f"time to first token {ms(ttft)} (median of {len(ttfts)}, max {ms(max(ttfts))}), "
              + (f"{rate:.0f} tokens/s" if rate else "tokens/s not measurable (one chunk)"))
    if ttft > 2.0:
        return Check("speed", WARN, detail + ": slow for a short prompt: the server is busy "
                     "(see metrics: waiting) or cold", data)
    return Check("speed", OK, detail, data)


def check_usage(p: Probe) -> Check:
    if p.usage_seen:
        return Check("usage", OK, "token usage reported on streams (stream_options.include_usage "
                     "honoured)", {"usage": True})
    return Check("usage", WARN, "the server sent no token usage although the requests asked for "
                 "it (stream_options.include_usage): the plugin then counts tokens offline with "
                 "DeepSeek's tokenizer, which can differ from the model's own (R1 distills use "
                 "Qwen/Llama tokenizers). Upgrade the server or the gateway that drops it",
                 {"usage": False})


def check_continue(p: Probe) -> Check:
    """Whether a stream cut after its first tokens can be continued (``continue_final_message``,
    what the plugin sends to recover one) rather than ending in an error."""
    body = plugin_body(p, [{"role": "user", "content": "Say hello."},
                           {"role": "assistant", "content": "Hello"}],
                       {"max_tokens": 4, "temperature": 0.6})
    body.update(continue_final_message=True, add_generation_prompt=False)
    raw = raw_chat(p, body, lambda r: bool(r.content or r.finish_reason))
    if raw.error is None:
        return Check("continue", OK, "a stream cut mid-answer can be continued from its last token "
                     "(continue_final_message accepted)", {"continue": True})
    if failed_outright(raw):
        return Check("continue", FAIL, f"the continuation request failed: {raw.error.message}",
                     {"status": raw.status})
    return Check("continue", WARN, f"the server refuses continue_final_message ({raw.error.message[:200]}): "
                 "a stream cut after its first tokens (a GPU node dying, a proxy timing out) reaches "
                 "users as an error instead of being continued. vLLM and SGLang accept it; check the "
                 "server's version, or the gateway in front that drops unknown fields",
                 {"continue": False, "status": raw.status})
