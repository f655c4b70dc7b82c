"""A stream of ``ChatDelta`` turned into what Dify shows: text pieces, whole tool calls, usage."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .errors import BadRequestError, EngineError, StreamBrokenError
from .protocol import ChatDelta
from .reasoning import ReasoningFormatter
from .toolcalls import ToolCallAccumulator, arguments_complete
from .toolmarkup import BadMarkup, CutMarkup, ToolMarkup, parser_flags

__all__ = ["Piece", "AnswerAssembler"]

log = logging.getLogger(__name__)
_TOLD: set[str] = set()  # markup families the operator was told about (once per process)


@dataclass(slots=True)
class Piece:
    text: str = ""
    tool_calls: list = field(default_factory=list)


class AnswerAssembler:
    """Feed deltas, get pieces; ``finish()`` gives the last piece. Keeps usage, finish reason and
    everything the model produced (for offline token counting when the server sends no usage).
    ``tool_markup``: the request offered tools, so calls the model wrote as text (its server
    parses none) are read into calls (``toolmarkup``)."""

    def __init__(self, expect_reasoning: bool, *, tool_markup: bool = False) -> None:
        self._fmt = ReasoningFormatter(expect_reasoning)
        self._tools = ToolCallAccumulator()
        # the reasoning field's markup and the content's, each with its own held text
        self._markup = (ToolMarkup(), ToolMarkup()) if tool_markup else None
        self._markup_calls = 0
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.produced: list[str] = []  # raw model output, for counting completion tokens

    def feed(self, d: ChatDelta) -> Piece | None:
        if d.usage:
            self.usage = d.usage
        if d.finish_reason:
            self.finish_reason = d.finish_reason
        text, calls = "", []
        if d.reasoning or d.content:
            if d.reasoning:
                self.produced.append(d.reasoning)
            if d.content:
                self.produced.append(d.content)
            if self._markup is None:
                text = self._fmt.feed(d.reasoning, d.content)
            else:
                text, calls = self._read_markup(d.reasoning, d.content)
        if d.tool_calls:
            if self._markup is not None:  # the server parsed a call: what the reader held was text
                text += self._release_markup()
            text += self._fmt.close_block()
            parsed = self._tools.feed(d.tool_calls)
            for c in parsed:
                self.produced.append(c["function"]["name"] + c["function"]["arguments"])
            calls += parsed
        if text or calls:
            return Piece(text, calls)
        return None

    def finish(self) -> Piece:
        text = self._markup_finish() if self._markup else ""
        text += self._fmt.finish()
        calls = self._tools.finish()
        if self.finish_reason in (None, "length"):  # the answer may have stopped mid-call
            for c in calls:  # the newest call only: the others ended when the next began
                if not arguments_complete(c):
                    raise _cut_off(c["function"]["name"], self.finish_reason)
        for c in calls:
            self.produced.append(c["function"]["name"] + c["function"]["arguments"])
        if (calls or self._markup_calls) and self.finish_reason in (None, "stop"):
            self.finish_reason = "tool_calls"
        return Piece(text, calls)

    def _read_markup(self, reasoning: str, content: str) -> tuple[str, list]:
        thought, said = self._markup
        out: list[str] = []
        calls: list = []
        try:
            if reasoning:  # the reasoning field: only a V4 block may begin in it
                self._take(thought.feed(reasoning, lambda: True), out, calls, reasoning=True)
            if content:
                if thought.holding:
                    out.append(self._fmt.feed(thought.release(), None))
                self._take(said.feed(content, lambda: self._fmt.content_is_reasoning), out, calls, reasoning=False)
        except BadMarkup as e:
            raise _unreadable(e) from None
        return "".join(out), calls

    def _take(self, parts, out: list[str], calls: list, *, reasoning: bool) -> None:
        for part in parts:
            if isinstance(part, str):
                out.append(self._fmt.feed(part, None) if reasoning else self._fmt.feed(None, part))
            else:  # a call ends the reasoning it began in (V4), as a parsed call does
                out.append(self._fmt.close_block())
                calls.append(part)
                self._markup_calls += 1

    def _release_markup(self) -> str:
        thought, said = self._markup
        return self._fmt.feed(thought.release(), said.release())

    def _markup_finish(self) -> str:
        out = []
        for markup, reasoning in zip(self._markup, (True, False), strict=True):
            try:
                held = markup.finish(reasoning or self._fmt.content_is_reasoning)
            except CutMarkup as e:
                raise _cut_off(e.name, self.finish_reason,
                               f"; to have the server read its calls, {parser_flags(e.family)}") from None
            if held:
                out.append(self._fmt.feed(held, None) if reasoning else self._fmt.feed(None, held))
            if markup.family and self._markup_calls and markup.family not in _TOLD:
                _TOLD.add(markup.family)
                log.warning("tool calls arrived as the model's own markup in its text (the server parses "
                            "none); the plugin read them. %s", parser_flags(markup.family))
        return "".join(out)


def _cut_off(name: str, finish_reason: str | None, more: str = "") -> EngineError:
    """The error for a tool call whose arguments were cut off: never delivered as a whole call
    (an agent would run it with half its arguments, or fail parsing them). ``more``: added to
    the hint."""
    call = f"tool call {name!r}" if name else "tool call"
    if finish_reason == "length":
        return BadRequestError(f"the model's {call} was cut off at max_tokens: its arguments "
                               "are incomplete", hint="raise max_tokens" + more)
    return StreamBrokenError(f"the stream ended before the {call} was complete: its arguments "
                             "were cut off", hint="check the server's logs if it happens again" + more)


def _unreadable(e: BadMarkup) -> EngineError:
    """A tool call the model wrote as text that the plugin cannot read: the server's to parse."""
    return StreamBrokenError(f"the model wrote a tool call as text that is not its markup ({e})",
                             hint=parser_flags(e.family))
