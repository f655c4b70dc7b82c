"""A stream of ``ChatDelta`` turned into what Dify shows: text pieces, whole tool calls, usage."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BadRequestError, EngineError, StreamBrokenError
from .protocol import ChatDelta
from .reasoning import ReasoningFormatter
from .toolcalls import ToolCallAccumulator, arguments_complete

__all__ = ["Piece", "AnswerAssembler"]


@dataclass(slots=True)
class Piece:
    text: str = ""
    tool_calls: list = field(default_factory=list)


class AnswerAssembler:
    """Feed deltas, get pieces; ``finish()`` gives the last piece. Keeps usage, finish reason and
    everything the model produced (for offline token counting when the server sends no usage)."""

    def __init__(self, expect_reasoning: bool) -> None:
        self._fmt = ReasoningFormatter(expect_reasoning)
        self._tools = ToolCallAccumulator()
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.produced: list[str] = []  # raw model output, for counting completion tokens

    def feed(self, d: ChatDelta) -> Piece | None:
        if d.usage:
            self.usage = d.usage
        if d.finish_reason:
            self.finish_reason = d.finish_reason
        text = ""
        if d.reasoning or d.content:
            if d.reasoning:
                self.produced.append(d.reasoning)
            if d.content:
                self.produced.append(d.content)
            text = self._fmt.feed(d.reasoning, d.content)
        calls: list = []
        if d.tool_calls:
            text += self._fmt.close_block()
            calls = self._tools.feed(d.tool_calls)
            for c in calls:
                self.produced.append(c["function"]["name"] + c["function"]["arguments"])
        if text or calls:
            return Piece(text, calls)
        return None

    def finish(self) -> Piece:
        text = self._fmt.finish()
        calls = self._tools.finish()
        if self.finish_reason in (None, "length"):  # the answer may have stopped mid-call
            for c in calls:  # the newest call only: the others ended when the next began
                if not arguments_complete(c):
                    raise _cut_off(c["function"]["name"], self.finish_reason)
        for c in calls:
            self.produced.append(c["function"]["name"] + c["function"]["arguments"])
        if calls and self.finish_reason in (None, "stop"):
            self.finish_reason = "tool_calls"
        return Piece(text, calls)


def _cut_off(name: str, finish_reason: str | None) -> EngineError:
    """The error for a tool call whose arguments were cut off: never delivered as a whole call
    (an agent would run it with half its arguments, or fail parsing them)."""
    if finish_reason == "length":
        return BadRequestError(f"the model's tool call {name!r} was cut off at max_tokens: its arguments "
                               "are incomplete", hint="raise max_tokens")
    return StreamBrokenError(f"the stream ended before the tool call {name!r} was complete: its arguments "
                             "were cut off", hint="check the server's logs if it happens again")
