"""Resuming a stream that broke after its first tokens: ask a server to continue the same answer.

Once tokens have reached the user a request cannot be retried (the answer would start again). It
can be *continued*: the conversation plus what was already shown, as a final assistant message with
``continue_final_message`` (vLLM and SGLang both accept it), and the server goes on from the last
token shown. The user sees a pause, not an error. Pure: the bookkeeping and the request are
tested without a server.

Reasoning models need care. R1's chat templates drop everything up to ``</think>`` from assistant
messages, so a stream cut during the answer is continued from the answer alone, and a server's
reasoning parser, seeing no ``</think>`` in what it generates, labels the rest of the answer as
reasoning: ``relabel`` puts it back.

A continuation keeps to the idle timeout: the user is waiting mid-answer, so its first token is
due within ``idle`` like any other (``continuation_timeouts``), and a stream that *stalled* is
continued only on another endpoint (``continue_on``): a server that stopped mid-answer is likely
stuck, and waiting on it again would turn one idle timeout into several.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from .errors import EngineError, IdleTimeout
from .protocol import ChatDelta
from .settings import Endpoint, Timeouts

__all__ = ["Progress", "StartedOver", "budget_spent", "continuation_body", "continuation_timeouts",
           "continue_on", "relabel", "unless_started_over"]


class Progress:
    """What a stream has delivered so far, as the server labelled it."""

    __slots__ = ("reasoning", "content", "tool_calls", "finished", "tokens")

    def __init__(self) -> None:
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.tool_calls = False
        self.finished = False
        # server events with text: one token each from vLLM and SGLang, so a lower bound on the
        # tokens generated (counting with a tokenizer would be another model's count)
        self.tokens = 0

    def record(self, d: ChatDelta) -> None:
        if d.reasoning or d.content:
            self.tokens += d.events
        if d.reasoning:
            self.reasoning.append(d.reasoning)
        if d.content:
            self.content.append(d.content)
        if d.tool_calls:
            self.tool_calls = True
        if d.finish_reason:
            self.finished = True

    @property
    def answering(self) -> bool:
        """Whether the answer itself (not only reasoning) has begun."""
        return bool(self.content)

    def shown(self) -> str:
        """All text delivered so far, reasoning first, as labelled when it arrived."""
        return "".join(self.reasoning) + "".join(self.content)

    def generated(self) -> str:
        """The assistant message to continue: the model's output so far as a chat template keeps
        it. During the reasoning that is the reasoning inside ``<think>`` (a parser's reasoning
        goes back in; inline tags already are); once the answer began, only the answer, because
        R1's templates drop everything up to ``</think>`` and vLLM then refuses to continue a
        message it cannot find in the prompt."""
        content = "".join(self.content)
        if not self.reasoning:
            return content.rsplit("</think>", 1)[-1]
        return content if content else "<think>\n" + "".join(self.reasoning)


def budget_spent(body: dict, progress: Progress) -> bool:
    """Whether ``progress`` used all of ``body``'s max_tokens: a stream cut now was at its end
    (the server would have finished it with "length"), and one more token would be too many."""
    limit = body.get("max_tokens")
    return isinstance(limit, int) and progress.tokens >= limit


def continuation_body(body: dict, progress: Progress) -> dict | None:
    """The request that continues ``body``'s answer after ``progress``, or None when it cannot
    be continued: nothing shown yet (retry instead), the answer was complete or used its whole
    budget, or a tool call had started (its arguments cannot be continued reliably)."""
    if progress.finished or progress.tool_calls or budget_spent(body, progress):
        return None
    prefix = progress.generated()
    if not prefix:
        return None
    out = {**body, "messages": [*body["messages"], {"role": "assistant", "content": prefix}],
           "continue_final_message": True, "add_generation_prompt": False}
    limit = body.get("max_tokens")
    if isinstance(limit, int):
        # what is left of the budget, by a lower bound of what was used: a user's answer is never
        # cut shorter than asked (a server event carrying several tokens lets it run a little longer)
        out["max_tokens"] = limit - progress.tokens
    return out


def continue_on(error: EngineError, cut: Endpoint, order: list[Endpoint]) -> list[Endpoint]:
    """The endpoints a stream cut at ``cut`` by ``error`` may be continued on, best first: the
    others, then (unless it stalled) ``cut`` itself (a dropped connection, a proxy's doing, or a
    server that restarted and refuses at once)."""
    others = [e for e in order if e != cut]
    return others if isinstance(error, IdleTimeout) else [*others, cut]


def continuation_timeouts(t: Timeouts) -> Timeouts:
    """A continuation's first token is the next token of an answer being shown: due within idle."""
    return replace(t, first_token=min(t.first_token, t.idle))


class StartedOver(Exception):
    """The server began the answer again instead of continuing it (``continue_final_message``
    ignored): nothing of it was shown."""


_TELLING = 8  # non-blank characters of repeated text that make a fresh start certain


def unless_started_over(deltas: Iterator[ChatDelta], shown: str) -> Iterator[ChatDelta]:
    """A continuation's ``deltas``, once they are known to continue ``shown``. Text that so far
    repeats the start of ``shown`` is held back until it is long enough to tell (``_TELLING``
    non-blank characters, or all of a shorter ``shown``); a fresh start raises ``StartedOver``
    and none of it is shown. Text that differs passes at once, and so does all that follows."""
    held: list[ChatDelta] = []
    text = ""
    for d in deltas:
        held.append(d)
        text += d.reasoning + d.content
        n = min(len(text), len(shown))  # deltas merge differently in each stream: the overlap
        if text[:n] != shown[:n]:
            break
        repeated = len("".join(text[:n].split()))  # non-blank characters
        if repeated >= _TELLING or (n == len(shown) and repeated):
            raise StartedOver
    yield from held  # a continuation (or one that ended before it could be told)
    yield from deltas


def relabel(d: ChatDelta, progress: Progress) -> ChatDelta:
    """A continued delta as the user must see it: after a cut during the answer, what the server
    calls reasoning is the rest of the answer."""
    if d.reasoning and progress.answering:
        d = ChatDelta("", d.reasoning + d.content, d.tool_calls, d.finish_reason, d.usage, d.events)
    # the continuing server counts what was already shown as prompt: the caller counts the
    # whole exchange offline instead
    d.usage = None
    return d
