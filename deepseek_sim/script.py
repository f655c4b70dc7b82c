"""The scripted "model": a toy tokenizer and the deterministic replies.

The reply is a lazy sequence of *pieces*; each piece is one completion token.
The same sequence feeds the streaming and the non-streaming paths, so both
always agree on text, token counts and finish_reason.
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

from .images import seen
from .structured import answer_text

_TOKEN_RE = re.compile(r"\s*\S+")

REASONING = "Okay, the user sent me a message. I should reply with a short, friendly greeting."
ANSWER = "Hello! I am a simulated DeepSeek model. How can I help you today?"
TOOL_REASONING = "The user wants the weather. I should call the tool."
TOOL_NAME = "get_weather"
SHAPES = ("reasoning", "reasoning_content", "think_inline", "think_close_only", "plain")

# Piece kinds (tuples keep per-token overhead low):
#   ("r", text)                 reasoning text
#   ("c", text)                 content text
#   ("th", index, id, name)     start of a tool call (name, empty arguments)
#   ("ta", index, text)         a slice of a tool call's arguments
Piece = tuple


def count_tokens(text: str) -> int:
    """Tokens of ``text``: every ``\\s*\\S+`` match is one token (" world" is one)."""
    return len(_TOKEN_RE.findall(text))


def split_pieces(text: str) -> list[str]:
    """Split ``text`` into token pieces whose concatenation is exactly ``text``.

    Trailing whitespace (which the regex does not match) rides on the last piece,
    so echoed text and ``</think>\\n\\n`` survive verbatim.
    """
    pieces = _TOKEN_RE.findall(text)
    rest = text[sum(map(len, pieces)):]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces.append(rest)
    return pieces


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string or a list of ``{"type":"text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, str):
                out.append(part)
        return "".join(out)
    return str(content)


def prompt_tokens(messages: list) -> int:
    """Prompt size: tokens of every message's content plus 4 per message (template overhead)."""
    total = 0
    for m in messages:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list):
            total += sum(count_tokens(content_text([p])) for p in c)
        else:
            total += count_tokens(content_text(c))
        total += 4
    return total


def token_ids_for_text(text: str) -> list[int]:
    # Stable fake ids: enough for /tokenize callers that only look at the count.
    return [1000 + zlib.crc32(p.encode()) % 100000 for p in _TOKEN_RE.findall(text)]


def token_ids_for_messages(messages: list) -> list[int]:
    ids: list[int] = []
    for m in messages:
        ids.extend((1, 2, 3, 4))  # the 4 "template" tokens of prompt_tokens()
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list):
            for p in c:
                ids.extend(token_ids_for_text(content_text([p])))
        else:
            ids.extend(token_ids_for_text(content_text(c)))
    return ids


def _last_user_text(messages: list) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def _last_tool_text(messages: list) -> str | None:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "tool":
            return content_text(m.get("content"))
    return None


def _lorem() -> Iterator[str]:
    while True:
        yield " lorem"
        yield " ipsum"


def _tool_args_pieces(args: str) -> list[str]:
    # Split after whitespace ('{"location": ' then '"Paris"}') like vLLM's
    # deepseek_v3 parser streams argument fragments.
    return re.findall(r"\S+\s*", args) or [args]


_ROUNDS = re.compile(r"\[\[(\d+) rounds\]\]")


def _results_since_user(messages: list) -> int:
    """Tool results after the last user message: the rounds of an agent loop done so far."""
    n = 0
    for m in reversed(messages):
        if not isinstance(m, dict) or m.get("role") == "user":
            break
        n += m.get("role") == "tool"
    return n


def wants_tools(body: dict) -> bool:
    """The scripted model calls a tool: tools offered, not refused, no tool result yet (with
    ``[[N rounds]]`` in the user's text: fewer than N results since it, an agent loop)."""
    messages = body.get("messages") or []
    if not body.get("tools") or body.get("tool_choice") == "none":
        return False
    rounds = _ROUNDS.search(_last_user_text(messages))
    if rounds:
        return _results_since_user(messages) < int(rounds.group(1))
    return _last_tool_text(messages) is None


def tool_reasoning(done: int) -> str:
    """The reasoning before a tool call, after ``done`` rounds of the loop (each one its own)."""
    return TOOL_REASONING if done == 0 else f"I have {done} result(s); I should call the tool again."


def generate(body: dict, shape: str, vllm: bool = False) -> Iterator[Piece]:
    """The scripted reply, or with ``continue_final_message`` the rest of it after the final
    assistant message (a model continues its own text from any token).

    vLLM's ``deepseek_r1`` parser, seeing no ``</think>`` in what it generates, labels a
    continued answer as reasoning (R1's template drops everything up to ``</think>`` from the
    assistant message); SGLang's detectors are told the previous content and label it right."""
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if not (body.get("continue_final_message") and last.get("role") == "assistant"):
        yield from _reply(body, shape, vllm)
        return
    prefix = content_text(last.get("content"))
    raw = "<think>\n" if shape in ("reasoning", "reasoning_content") else ""
    in_reasoning = False
    pieces = _reply({**body, "messages": messages[:-1]}, shape, vllm)
    for piece in pieces:  # what the model wrote, until it matches what was already shown
        if piece[0] == "r":
            in_reasoning = True
        elif in_reasoning and piece[0] == "c":
            raw, in_reasoning = raw + "</think>", False
        raw += piece[1] if piece[0] in ("r", "c") else ""
        if raw.rsplit("</think>", 1)[-1] == prefix:  # R1's template keeps only what follows </think>
            break
    else:
        return  # not this model's text: nothing to continue
    mislabel = vllm and shape in ("reasoning", "reasoning_content") and "</think>" in raw
    for piece in pieces:
        yield ("r", piece[1]) if mislabel and piece[0] == "c" else piece


def _reply(body: dict, shape: str, vllm: bool) -> Iterator[Piece]:
    """Yield the scripted reply for a chat request ``body`` as token pieces.

    ``vllm``: the text as vLLM's reasoning parser cuts R1's ``…\n</think>\n\n…``: reasoning ends
    with "\n" (and starts with one when the model opened ``<think>`` itself, after a tool result),
    the answer starts with "\n\n", and so does the text before a tool call.
    """
    messages = body.get("messages") or []
    tool_result = _last_tool_text(messages)
    user = _last_user_text(messages)
    constrained = answer_text(body)

    if constrained is not None and not wants_tools(body):
        # the grammar holds from the reasoning's end (a reasoning parser finds it), else from the
        # first token: a model whose server parses no reasoning answers with the JSON alone
        if shape in ("reasoning", "reasoning_content"):
            for p in split_pieces(REASONING + ("\n" if vllm else "")):
                yield ("r", p)
        for p in split_pieces(constrained):
            yield ("c", p)
        return

    if wants_tools(body):
        reasoning, answer = tool_reasoning(_results_since_user(messages)), None
    elif tool_result is not None:
        reasoning, answer = REASONING, iter(split_pieces("According to the tool, " + tool_result + "."))
    elif "[[long]]" in user:
        reasoning, answer = REASONING, _lorem()
    elif "[[echo]]" in user:
        reasoning, answer = REASONING, iter(split_pieces(user))
    else:
        reasoning, answer = REASONING, iter(split_pieces(seen(messages) + ANSWER))

    # Reasoning placement depends on how the server is configured (see SHAPES).
    lead = ""  # what R1 writes after </think>, when a parser cut it off the reasoning
    if shape in ("reasoning", "reasoning_content"):
        if vllm:
            reasoning = ("\n" if tool_result is not None else "") + reasoning + "\n"
            lead = "\n\n"
        for p in split_pieces(reasoning):
            yield ("r", p)
    elif shape == "think_inline":
        for p in split_pieces("<think>\n" + reasoning + "\n</think>\n\n"):
            yield ("c", p)
    elif shape == "think_close_only":
        for p in split_pieces(reasoning + "\n</think>\n\n"):
            yield ("c", p)
    # shape "plain": no reasoning at all

    if answer is not None:
        if lead:
            yield ("c", lead + next(answer))
        for p in answer:
            yield ("c", p)
        return

    if lead:
        yield ("c", lead)
    calls = [("Paris", 0)]
    if "[[two tools]]" in user:
        calls.append(("London", 1))
    for city, idx in calls:
        # vLLM: chatcmpl-tool-<16 hex>
        yield ("th", idx, "chatcmpl-tool-" + (uuid.uuid4().hex[:16] if vllm else uuid.uuid4().hex), TOOL_NAME)
        for p in _tool_args_pieces('{"location": "%s"}' % city):
            yield ("ta", idx, p)
