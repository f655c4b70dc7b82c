"""R1 reasoning, from whatever shape the server sends, as the one shape Dify shows.

Servers disagree on where reasoning goes: ``reasoning_content`` (SGLang, older vLLM), ``reasoning``
(vLLM since early 2026), inline ``<think>…</think>`` in ``content`` (no reasoning parser), or a bare
``</think>`` whose opening tag the chat template injected. Dify splits reasoning out of the text by
``<think>\\n…\\n</think>`` tags, so every shape becomes ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``.

Pure state machine: tags cut across chunks are held back only while they could still be a tag.
"""

from __future__ import annotations

import re

__all__ = ["ReasoningFormatter", "split_reasoning", "strip_reasoning", "looks_like_reasoner", "OPEN", "CLOSE"]

OPEN = "<think>"
CLOSE = "</think>"
_WS = " \t\r\n"

# states
_START, _THINK_FIELD, _THINK_INLINE, _ANSWER = range(4)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ReasoningFormatter:
    """``feed(reasoning, content) -> text`` for Dify; ``finish()`` flushes and closes.

    ``expect_reasoning``: the model is an R1-style reasoner, so content that arrives before any
    tag is reasoning whose ``<think>`` the chat template swallowed (closed by a bare ``</think>``).
    """

    __slots__ = ("expect_reasoning", "_state", "_held", "_ws", "_block_start", "_answer_start")

    def __init__(self, expect_reasoning: bool) -> None:
        self.expect_reasoning = expect_reasoning
        self._state = _START
        self._held = ""  # content that might still be (part of) a tag
        self._ws = ""  # trailing whitespace of reasoning: emitted only if more reasoning follows
        self._block_start = False  # inside <think> before any non-blank reasoning
        self._answer_start = False  # just after </think>: the answer's leading blanks are dropped

    @property
    def in_reasoning(self) -> bool:
        return self._state in (_THINK_FIELD, _THINK_INLINE)

    @property
    def content_is_reasoning(self) -> bool:
        """Whether content arriving now is reasoning: inside ``<think>`` written in the text (after
        a reasoning field, content is the answer)."""
        return self._state == _THINK_INLINE

    def feed(self, reasoning: str | None, content: str | None) -> str:
        out = ""
        if reasoning:
            out = self._reasoning_field(reasoning)
        if content:
            out += self._content(content)
        return out

    def close_block(self) -> str:
        """Something other than text (a tool call, the end) follows: flush and end a think block."""
        held, self._held = self._held, ""
        if self._state == _THINK_INLINE:
            return self._think_text(held) + self._close()
        if self._state == _THINK_FIELD:
            return self._close()
        if self._state == _START:
            self._state = _ANSWER
        return held

    def finish(self) -> str:
        return self.close_block()

    def _open(self, state: int) -> str:
        self._state = state
        self._block_start = True
        self._ws = ""
        return OPEN

    def _close(self) -> str:
        self._state = _ANSWER
        self._ws = ""
        self._answer_start = True
        return "\n" + CLOSE + "\n\n"

    def _reasoning_field(self, text: str) -> str:
        if self._state == _THINK_FIELD or self._state == _THINK_INLINE:
            return self._think_text(text)
        # START, or reasoning again after the answer began (interleaved thinking): a new block
        held, self._held = self._held, ""  # a held "<thi" that never became a tag is content
        return held + self._open(_THINK_FIELD) + self._think_text(text)

    def _content(self, text: str) -> str:
        state = self._state
        if state == _ANSWER:
            return self._answer_text(text)
        if state == _THINK_FIELD:  # the server's parser moved on to the answer
            return self._close() + self._answer_text(text)
        if state == _THINK_INLINE:
            return self._inline(text)
        buf = self._held + text  # _START
        stripped = buf.lstrip(_WS)
        if not stripped or (OPEN.startswith(stripped) and stripped != OPEN):
            self._held = buf  # blanks, or "<thi": wait for the rest
            return ""
        self._held = ""
        if stripped.startswith(OPEN):
            return self._open(_THINK_INLINE) + self._inline(stripped[len(OPEN):])
        if self.expect_reasoning:  # template-injected <think>: reasoning until a bare </think>
            return self._open(_THINK_INLINE) + self._inline(stripped)
        self._state = _ANSWER
        return buf

    def _inline(self, text: str) -> str:
        buf = self._held + text if self._held else text
        idx = buf.find(CLOSE)
        if idx < 0:
            keep = _partial_suffix(buf, CLOSE)
            self._held = buf[len(buf) - keep:] if keep else ""
            return self._think_text(buf[: len(buf) - keep])
        self._held = ""
        return self._think_text(buf[:idx]) + self._close() + self._answer_text(buf[idx + len(CLOSE):])

    def _answer_text(self, text: str) -> str:
        if self._answer_start:
            text = text.lstrip(_WS)
            if not text:
                return ""
            self._answer_start = False
        return text

    def _think_text(self, text: str) -> str:
        if not text:
            return ""
        if self._block_start:
            text = text.lstrip(_WS)
            if text.startswith(OPEN):  # vLLM's parser keeps a model-written <think> merged into one delta
                text = text[len(OPEN):].lstrip(_WS)
            if not text:
                return ""
            self._block_start = False
            lead = "\n"
        else:
            lead = self._ws
        body = text.rstrip(_WS)
        if not body:
            self._ws = lead + text
            return ""
        self._ws = text[len(body):]
        return lead + body if lead else body


# R1 and its distills (DeepSeek-R1-0528, r1-distill-qwen-7b, deepseek-reasoner, ...-reasoning)
_REASONER_NAME = re.compile(r"(?<![a-z0-9])r1(?![0-9])|reason|distill", re.IGNORECASE)


def looks_like_reasoner(name: str) -> bool:
    """Whether a model's name says it reasons: the kind of a customizable model whose operator
    left it blank. A chat model taken for a reasoner would show its whole answer as reasoning."""
    return bool(_REASONER_NAME.search(name))


_THINK_BLOCK = re.compile(r"<think>(.*?)</think>\s*", re.DOTALL)


def split_reasoning(text: str) -> tuple[str, str]:
    """``(reasoning, answer)`` of an assistant message as Dify keeps it in the history: the think
    blocks (and text before a bare ``</think>``, reasoning whose ``<think>`` the template opened)
    are the reasoning, joined by a blank line; the rest is the answer."""
    if CLOSE not in text:
        return "", text
    parts: list[str] = []

    def take(m: re.Match) -> str:
        parts.append(m.group(1).strip(_WS))
        return ""

    text = _THINK_BLOCK.sub(take, text)
    if CLOSE in text:  # a bare close: everything before it was template-opened reasoning
        before, text = text.rsplit(CLOSE, 1)
        parts.insert(0, before.strip(_WS))
        text = text.lstrip(_WS)
    return "\n\n".join(p for p in parts if p), text


def strip_reasoning(text: str) -> str:
    """Assistant history without reasoning: what R1's and V3.1's templates keep anyway."""
    return split_reasoning(text)[1]
