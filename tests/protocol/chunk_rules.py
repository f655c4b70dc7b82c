"""What the daemon and Dify accept from a model plugin, as checks over harness results.

Every ``check_*`` function returns a list of human-readable violations (empty = OK), so a test can
``assert not check_llm_chunk(c), ...`` and see all problems at once.

Sources of the rules
--------------------
* Daemon (Go) ``pkg/entities/model_entities/llm.go``: ``LLMResultChunk{model required,
  system_fingerprint, delta required}``, ``LLMResultChunkDelta{index *int required, message
  required, usage *LLMUsage, finish_reason *string}``, ``PromptMessage{role in
  system|user|assistant|tool, content string or []PromptMessageContent, tool_calls
  []{id,type,function{name,arguments string}}}``, ``LLMUsage`` = 12 required fields (token counts
  ``*int``, prices ``decimal.Decimal``, ``currency *string``, ``latency *float64``).
  ``content: null`` is rejected by the daemon snapshot studied in sdk.md ("content field is
  required", daemon issue #640) and older daemons; newer ones tolerate it. We treat it as a
  violation: always send ``""``.
* Daemon ``internal/core/local_runtime/instance.go``: stdout is read by ``bufio.Scanner`` with a
  5 MiB max token; a longer line kills the instance. Non-JSON lines are logged as errors.
* SDK ``core/server/io_server.py``: every request ends with exactly one ``end`` (also after an
  ``error``); errors are ``{"error_type", "message", "args"}``.

How Dify consumes tool calls (checked against langgenius/dify ``api/core`` and
langgenius/dify-official-plugins)
----------------------------------------------------------------------------------------------
1. **Streaming (``stream=True``) is NOT merged by Dify.** ``LargeLanguageModel._invoke_result_generator``
   (``api/core/model_runtime/model_providers/__base/large_language_model.py``) passes chunks through
   unchanged. The consumers that use streamed tool calls -- ``api/core/agent/fc_agent_runner.py``
   (Agent apps; streams only when the model declares ``stream-tool-call``) and the official agent
   strategy plugin ``agent-strategies/cot_agent/strategies/function_calling.py`` (same condition) --
   run, for *every chunk* that has ``delta.message.tool_calls``,
   ``args = json.loads(tc.function.arguments) if tc.function.arguments != "" else {}`` and append
   ``(tc.id, tc.function.name, args)`` to the list of calls to execute. So each tool call in a chunk
   is taken as a **complete, separate call**: OpenAI-style fragments (id+name first, then
   argument pieces with an empty id) raise ``JSONDecodeError`` or produce bogus calls with empty
   names, and a call repeated in two chunks is executed twice.
2. **Non-stream (``stream=False``) uses only the first chunk.** The daemon still streams; Dify's
   ``_build_llm_result_from_first_chunk`` (older releases: a ``for chunk in result: ...; break``
   loop) takes content, tool calls, usage and system_fingerprint from the **first** chunk and
   drains and discards the rest. Tool calls inside that one chunk are merged with
   ``_increase_tool_call``. So for ``stream=False`` the plugin must send one chunk with everything
   (``_invoke`` returning ``LLMResult`` makes the SDK do exactly that).
3. ``_increase_tool_call`` (the only merge Dify has) processes deltas in order: a delta with a name
   but no id gets a fresh id ``chatcmpl-tool-<uuid hex>``; a delta with an empty id applies to the
   **last** call (``ValueError`` if there is none); otherwise the call with that id is found or a
   new ``{id, type:"function", name:"", arguments:""}`` is appended; then non-empty id/type/name
   overwrite and arguments are **appended**.

=> What the plugin must emit: every tool call exactly once, whole, in one chunk: non-empty id
unique within the response, ``type: "function"``, non-empty name, ``arguments`` a complete JSON
object string (or ``""``), with ``content: ""`` on that chunk. Buffer upstream argument deltas
(vLLM/SGLang stream them like OpenAI) and emit each call when it is complete (when the next tool
index starts, or at finish). That shape is also correct under ``_increase_tool_call`` (each id
appears once, so merging is the identity). :func:`check_tool_call_chunks` enforces it;
:func:`tool_calls` reproduces ``_increase_tool_call`` over the whole stream; :func:`agent_tool_calls`
reproduces what the agents extract.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_LINE_BYTES = 5 * 1024 * 1024

SESSION_TYPES = {"stream", "error", "end", "invoke"}
ROLES = {"system", "user", "assistant", "tool"}
CONTENT_TYPES = {"text", "image", "audio", "video", "document"}
USAGE_INT_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")
USAGE_DECIMAL_FIELDS = (
    "prompt_unit_price",
    "prompt_price_unit",
    "prompt_price",
    "completion_unit_price",
    "completion_price_unit",
    "completion_price",
    "total_price",
)
USAGE_FIELDS = (*USAGE_INT_FIELDS, *USAGE_DECIMAL_FIELDS, "currency", "latency")  # the 12 fields


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _decimal_ok(v: Any) -> bool:
    # Go's shopspring decimal accepts JSON strings ("6E-7") and numbers.
    if isinstance(v, bool) or v is None:
        return False
    if _is_number(v):
        return True
    if isinstance(v, str):
        try:
            d = Decimal(v)
        except InvalidOperation:
            return False
        return d.is_finite()
    return False


# --------------------------------------------------------------------------------------------
# one invoke_llm stream payload
# --------------------------------------------------------------------------------------------
def check_usage(usage: Any, where: str = "usage") -> list[str]:
    if usage is None:
        return []
    if not isinstance(usage, dict):
        return [f"{where} must be an object or null, got {type(usage).__name__}"]
    v: list[str] = []
    for f in USAGE_FIELDS:
        if f not in usage or usage[f] is None:
            v.append(f"{where}.{f} missing or null")
    for f in USAGE_INT_FIELDS:
        x = usage.get(f)
        if x is not None and (not _is_int(x) or x < 0):
            v.append(f"{where}.{f} must be a non-negative int, got {x!r}")
    for f in USAGE_DECIMAL_FIELDS:
        x = usage.get(f)
        if x is not None and not _decimal_ok(x):
            v.append(f"{where}.{f} must be a decimal (string or number), got {x!r}")
    if usage.get("currency") is not None and not isinstance(usage["currency"], str):
        v.append(f"{where}.currency must be a string")
    if usage.get("latency") is not None and not _is_number(usage["latency"]):
        v.append(f"{where}.latency must be a number")
    p, c, t = (usage.get(k) for k in USAGE_INT_FIELDS)
    if _is_int(p) and _is_int(c) and _is_int(t) and p + c != t:
        # not a daemon rule, but Dify bills/quotas on these numbers
        v.append(f"{where}.total_tokens {t} != prompt_tokens {p} + completion_tokens {c}")
    return v


def check_tool_call_shape(tc: Any, where: str) -> list[str]:
    if not isinstance(tc, dict):
        return [f"{where} must be an object"]
    v: list[str] = []
    if not isinstance(tc.get("id"), str):
        v.append(f"{where}.id must be a string")
    if tc.get("type") != "function":
        v.append(f"{where}.type must be 'function', got {tc.get('type')!r}")
    fn = tc.get("function")
    if not isinstance(fn, dict):
        v.append(f"{where}.function must be an object")
    else:
        if not isinstance(fn.get("name"), str):
            v.append(f"{where}.function.name must be a string")
        if not isinstance(fn.get("arguments"), str):
            v.append(f"{where}.function.arguments must be a string, got {type(fn.get('arguments')).__name__}")
    return v


def check_llm_chunk(payload: Any) -> list[str]:
    """Violations of the daemon's rules for one ``invoke_llm`` stream payload (LLMResultChunk)."""
    if not isinstance(payload, dict):
        return [f"chunk must be an object, got {type(payload).__name__}"]
    v: list[str] = []
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        v.append(f"model must be a non-empty string, got {model!r}")
    sf = payload.get("system_fingerprint")
    if sf is not None and not isinstance(sf, str):
        v.append("system_fingerprint must be a string or null")
    if "prompt_messages" in payload and not isinstance(payload["prompt_messages"], list):
        v.append("prompt_messages must be a list when present")
    delta = payload.get("delta")
    if not isinstance(delta, dict):
        return [*v, "delta must be an object"]
    idx = delta.get("index")
    if not _is_int(idx) or idx < 0:
        v.append(f"delta.index must be a non-negative int, got {idx!r}")
    msg = delta.get("message")
    if not isinstance(msg, dict):
        v.append("delta.message must be an object")
    else:
        role = msg.get("role")
        if role not in ROLES:
            v.append(f"delta.message.role must be one of {sorted(ROLES)}, got {role!r}")
        elif role != "assistant":
            v.append(f"delta.message.role should be 'assistant', got {role!r}")
        if "content" not in msg or msg["content"] is None:
            v.append("delta.message.content is null/missing (daemon: 'content field is required'); send \"\"")
        elif isinstance(msg["content"], list):
            for i, part in enumerate(msg["content"]):
                if not isinstance(part, dict) or part.get("type") not in CONTENT_TYPES:
                    v.append(f"delta.message.content[{i}] must be an object with type in {sorted(CONTENT_TYPES)}")
        elif not isinstance(msg["content"], str):
            v.append(f"delta.message.content must be a string or list, got {type(msg['content']).__name__}")
        tcs = msg.get("tool_calls")
        if not isinstance(tcs, list):
            v.append(f"delta.message.tool_calls must be a list, got {type(tcs).__name__}")
        else:
            for i, tc in enumerate(tcs):
                v.extend(check_tool_call_shape(tc, f"delta.message.tool_calls[{i}]"))
    v.extend(check_usage(delta.get("usage"), "delta.usage"))
    fr = delta.get("finish_reason")
    if fr is not None and not isinstance(fr, str):
        v.append(f"delta.finish_reason must be a string or null, got {fr!r}")
    return v


# --------------------------------------------------------------------------------------------
# a whole session
# --------------------------------------------------------------------------------------------
def check_error_payload(err: Any, where: str = "error") -> list[str]:
    if not isinstance(err, dict):
        return [f"{where} must be an object"]
    v = []
    if not isinstance(err.get("error_type"), str) or not err.get("error_type"):
        v.append(f"{where}.error_type must be a non-empty string")
    if not isinstance(err.get("message"), str):
        v.append(f"{where}.message must be a string")
    args = err.get("args")
    if args is not None and not isinstance(args, dict):
        v.append(f"{where}.args must be an object or null")
    elif isinstance(args, dict) and len(args) > 10:
        v.append(f"{where}.args has {len(args)} keys (daemon: max 10)")
    return v


def check_session(result: Any) -> list[str]:
    """Session-level protocol rules over a harness ``SessionResult``.

    Exactly one ``end``, it is the last message, nothing after it (``late_messages``), known
    message types, an ``error`` is followed only by ``end``, well-formed error payloads, every
    stdout line of the session < 5 MiB, no non-JSON stdout lines while the session ran, and no
    top-level ``{"event":"error"}`` naming the session.
    """
    v: list[str] = []
    msgs = list(result.messages)
    types = [m.get("type") for m in msgs]
    if not result.ended:
        v.append(f"session did not end ({getattr(result, 'failure', None) or 'no end message'})")
    n_end = types.count("end")
    if n_end != 1:
        v.append(f"expected exactly one 'end', got {n_end}")
    if types and types[-1] != "end":
        v.append(f"last message is {types[-1]!r}, not 'end'")
    late = list(getattr(result, "late_messages", []) or [])
    if late:
        v.append(f"{len(late)} message(s) after 'end': {[m.get('type') for m in late]}")
    for i, t in enumerate(types):
        if t not in SESSION_TYPES:
            v.append(f"message {i} has unknown type {t!r}")
        if t == "error":
            if i + 1 < len(types) and types[i + 1] != "end":
                v.append(f"message {i} is 'error' but is followed by {types[i + 1]!r}, not 'end'")
            v.extend(check_error_payload(msgs[i].get("data"), f"message {i} error"))
    for i, n in enumerate(result.line_lengths):
        if n + 1 > MAX_LINE_BYTES:
            v.append(f"stdout line {i} of the session is {n} bytes (+\\n > {MAX_LINE_BYTES}: daemon kills the plugin)")
    non_json = list(getattr(result, "stdout_non_json", []) or [])
    if non_json:
        v.append(f"{len(non_json)} non-JSON stdout line(s) during the session, e.g. {non_json[0][:120]!r}")
    pe = list(getattr(result, "plugin_errors", []) or [])
    if pe:
        v.append(f"{len(pe)} top-level error event(s) for this session: {pe[0].get('data')!r}"[:300])
    return v


def check_llm_stream(result: Any, *, require_usage: bool = True, require_finish_reason: bool = False) -> list[str]:
    """:func:`check_session` + :func:`check_llm_chunk` on every chunk + stream-level expectations.

    When the session has no error: at least one chunk, and (``require_usage``) the last chunk
    carries usage -- Dify keeps the last non-null usage it sees, and without one it records zero
    tokens. Also enforces :func:`check_tool_call_chunks`.
    """
    v = check_session(result)
    for i, c in enumerate(result.chunks):
        v.extend(f"chunk {i}: {x}" for x in check_llm_chunk(c))
    if result.error is None:
        if not result.chunks:
            v.append("no stream chunks")
        else:
            last = result.chunks[-1] if isinstance(result.chunks[-1], dict) else {}
            delta = last.get("delta") or {}
            if require_usage and not delta.get("usage"):
                v.append("last chunk has no usage")
            if require_finish_reason and not delta.get("finish_reason"):
                v.append("last chunk has no finish_reason")
    v.extend(check_tool_call_chunks(result))
    return v


def check_non_stream(result: Any) -> list[str]:
    """For ``stream=False``: Dify reads only the first chunk, so everything must be in it."""
    v = check_llm_stream(result, require_usage=True)
    if result.error is None and len(result.chunks) != 1:
        v.append(f"stream=False answered with {len(result.chunks)} chunks; Dify only reads the first")
    return v


def check_tool_call_chunks(result: Any) -> list[str]:
    """Every tool call must be whole in one chunk and appear once (see the module docstring)."""
    v: list[str] = []
    seen: dict[str, int] = {}
    for ci, c in enumerate(result.chunks):
        delta = c.get("delta") if isinstance(c, dict) else None
        msg = (delta.get("message") if isinstance(delta, dict) else None) or {}
        for ti, tc in enumerate(msg.get("tool_calls") or []):
            if not isinstance(tc, dict):
                continue
            where = f"chunk {ci} tool_calls[{ti}]"
            tid = tc.get("id")
            fn = tc.get("function") or {}
            if not tid:
                v.append(f"{where}: empty id (a fragment; Dify's agents treat each entry as a whole call)")
            elif tid in seen:
                v.append(f"{where}: id {tid!r} already sent in chunk {seen[tid]} (agents would run it twice)")
            else:
                seen[tid] = ci
            if not fn.get("name"):
                v.append(f"{where}: empty function name")
            args = fn.get("arguments")
            if isinstance(args, str) and args != "":
                try:
                    parsed = json.loads(args)
                except ValueError:
                    v.append(f"{where}: arguments are not complete JSON: {args[:80]!r}")
                else:
                    if not isinstance(parsed, dict):
                        v.append(f"{where}: arguments JSON is not an object")
    return v


# --------------------------------------------------------------------------------------------
# extraction helpers
# --------------------------------------------------------------------------------------------
def _deltas(result: Any):
    for c in result.chunks:
        if isinstance(c, dict) and isinstance(c.get("delta"), dict):
            yield c["delta"]


def collect_text(result: Any) -> str:
    """Concatenated content: strings as-is; for list content, the ``data`` of text parts."""
    out: list[str] = []
    for d in _deltas(result):
        content = (d.get("message") or {}).get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out.extend(p.get("data") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "".join(out)


def final_usage(result: Any) -> dict | None:
    """The last non-null usage in the stream (what Dify keeps)."""
    usage = None
    for d in _deltas(result):
        if d.get("usage"):
            usage = d["usage"]
    return usage


def finish_reason(result: Any) -> str | None:
    fr = None
    for d in _deltas(result):
        if d.get("finish_reason"):
            fr = d["finish_reason"]
    return fr


def tool_calls(result: Any) -> list[dict]:
    """Tool calls merged over the whole stream with Dify's ``_increase_tool_call`` rules.

    Generated ids (name without id) are ``generated-<n>`` instead of a random uuid. Raises
    ``ValueError`` for an empty-id delta with no prior call, as Dify does.
    """
    merged: list[dict] = []
    gen = 0
    for d in _deltas(result):
        for tc in (d.get("message") or {}).get("tool_calls") or []:
            fn = tc.get("function") or {}
            tid = tc.get("id") or ""
            name = fn.get("name") or ""
            if name and not tid:
                gen += 1
                tid = f"generated-{gen}"
            if not tid:
                if not merged:
                    raise ValueError("tool_call_id is empty but no existing tool call is available to apply the delta")
                cur = merged[-1]
            else:
                cur = next((m for m in merged if m["id"] == tid), None)
                if cur is None:
                    cur = {"id": tid, "type": "function", "function": {"name": "", "arguments": ""}}
                    merged.append(cur)
            if tid:
                cur["id"] = tid
            if tc.get("type"):
                cur["type"] = tc["type"]
            if name:
                cur["function"]["name"] = name
            if fn.get("arguments"):
                cur["function"]["arguments"] += fn["arguments"]
    return merged


def agent_tool_calls(result: Any) -> list[tuple[str, str, dict]]:
    """What Dify's function-calling agents extract from a stream: per chunk, no merging.

    Returns ``[(id, name, args_dict)]``; raises ``json.JSONDecodeError`` exactly where the agent
    would (a chunk carrying partial argument JSON).
    """
    out: list[tuple[str, str, dict]] = []
    for d in _deltas(result):
        for tc in (d.get("message") or {}).get("tool_calls") or []:
            fn = tc.get("function") or {}
            args = fn.get("arguments") or ""
            out.append((tc.get("id") or "", fn.get("name") or "", json.loads(args) if args != "" else {}))
    return out
