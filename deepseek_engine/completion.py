"""One chat completion as a caller shows it: credentials, a model name and OpenAI messages in;
pieces of output (text, whole tool calls) out, then a last piece with the finish reason and the
token counts. Everything a request does besides translating for its caller lives here: which model
is served, whether it reasons, when arrived tokens go out together, the token counts when the
server sends none, time to first token and the request's telemetry line."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from .answer import AnswerAssembler, Piece
from .answer_cache import AnswerCache, Entry, answer_cache, replay
from .client import ChatClient
from .credentials import settings_for
from .discovery import served_model
from .errors import BadRequestError
from .families import Family, custom_family, family_of
from .images import ImagePolicy
from .pressure import PRESSURE, Pressure
from .protocol import build_body
from .reasoning import split_reasoning
from .settings import Settings
from .structured import output_format
from .telemetry import TELEMETRY
from .thinking import thinking_for
from .tokens import count_messages, count_text

__all__ = ["MAX_HOLD", "REQUEST_ID_PREFIX", "Batch", "Completion", "Finished", "family_for", "sized"]

log = logging.getLogger(__name__)

MAX_HOLD = 0.001  # seconds a received token may wait to share a piece with the next ones
REQUEST_ID_PREFIX = "dify-"  # X-Request-Id of a user's request: servers' logs correlate with ours


def _direct[T](fn: Callable[..., T], *args: object) -> T:
    return fn(*args)


@dataclass(slots=True)
class Finished(Piece):
    """The last piece of an answer: its text and calls, why it ended, and what it cost."""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False  # replayed from the answer cache (answer_cache/), not generated now


def family_for(model: str, settings: Settings, *, catalogue: bool, served: str | None = None) -> Family:
    """The family ``model`` belongs to (families.yaml): a catalogue model by its name (then the
    served id), a customizable one as the kind the operator chose, else by what its names say."""
    if catalogue:
        return family_of(model, settings.served_model_name, served)
    return custom_family(settings.reasoning, model, settings.served_model_name)


def _call_chars(call: dict) -> int:
    return len(call["id"]) + len(call["function"]["name"]) + len(call["function"]["arguments"])


def sized(piece: Piece, limit: int | None) -> list[Piece]:
    """``piece`` as pieces of at most ``limit`` characters each (None: no limit), nearly always
    itself. A call is never cut (a caller takes each call as a whole one), so one larger than
    ``limit`` is refused."""
    text, calls = piece.text, piece.tool_calls
    if limit is None or not calls and len(text) <= limit:  # the per-token path: no more work
        return [piece]
    sizes = [_call_chars(c) for c in calls]
    if len(text) + sum(sizes) <= limit:
        return [piece]
    out = [Piece(text[i:i + limit], []) for i in range(0, len(text), limit)]
    room = 0
    for call, size in zip(calls, sizes, strict=True):
        if size > limit:
            raise BadRequestError(f"the model's tool call {call['function']['name']!r} is {size:,} characters, "
                                  f"more than one message to Dify may carry ({limit:,})",
                                  hint="lower max_tokens, or have the tool take smaller arguments")
        if size > room:
            out.append(Piece("", []))
            room = limit
        out[-1].tool_calls.append(call)
        room -= size
    return out


class Batch:
    """What has arrived and not gone out yet. Each piece costs the caller's runtime a fixed
    price (Dify's SDK: a pydantic dump and two writes), so what has already arrived goes out as
    one piece: never held for the network (only while more is already in hand, ``more_ready``)
    and never longer than ``max_hold`` seconds (or the window below). Tokens paced by the GPU go
    out one by one while the process keeps up; when it falls behind (``pressure``, the process's
    one signal), the
    reader waits up to ``pressure.window()`` after each piece (``gather``) so that the tokens
    arriving meanwhile go out together: fewer wake-ups, reads and pieces, never more than
    ``pressure.MERGE_WINDOW`` between two pieces. A stream counts as open (``pressure.opened``)
    from the batch's making to its ``close``."""

    __slots__ = ("calls", "clock", "last", "max_hold", "pressure", "since", "taken", "texts")

    def __init__(self, max_hold: float = MAX_HOLD, pressure: Pressure = PRESSURE,
                 clock: Callable[[], float] = time.monotonic, *, record: bool = False) -> None:
        self.texts: list[str] = []
        self.calls: list[dict] = []
        self.since = 0.0  # when the oldest piece held arrived
        self.last = 0.0  # when the last piece went out
        self.max_hold = max_hold
        self.pressure = pressure
        self.clock = clock
        self.taken: list[Piece] | None = [] if record else None  # what went out (the answer cache's)
        pressure.opened()

    def add(self, piece: Piece) -> None:
        if not (self.texts or self.calls):
            self.since = self.clock()
        self.texts.append(piece.text)
        self.calls.extend(piece.tool_calls)

    def __bool__(self) -> bool:
        return bool(self.texts or self.calls)

    def due(self, more_ready: bool) -> bool:
        """Whether what is held goes out now: while more is in hand, not before ``max_hold``
        (a busy process's window, if longer) has passed."""
        if not (self.texts or self.calls):
            return False
        if not more_ready:
            return True
        age = self.clock() - self.since
        return age >= self.max_hold and age >= self.pressure.window()

    def take(self) -> Piece:
        out = Piece("".join(self.texts), self.calls)
        self.texts, self.calls = [], []
        self.last = self.clock()
        if self.taken is not None:
            self.taken.append(out)
        return out

    def pause(self) -> float:
        """Seconds the reader lets tokens gather before its next read: none while the process
        keeps up or something is held, else what is left of the window since the last piece,
        less the process's lag (the wait's own lateness), so the next piece is due a window after
        the last."""
        window = self.pressure.window()
        if not window or self:
            return 0.0
        return max(0.0, min(window, self.last + window - self.pressure.lag - self.clock()))

    def gather(self) -> None:
        """After a piece went out: wait ``pause()`` (the tokens meanwhile wait in the socket)."""
        pause = self.pause()
        if pause:
            self.pressure.sleep(pause)

    def close(self) -> None:
        self.pressure.closed()


class Completion:
    """One request. ``catalogue``: whether ``model`` names a catalogue entry (the caller's
    predefined models) rather than a model the operator typed. ``buffered``: the caller shows
    nothing until the end (blocking mode), so the engine may retry at any point. ``max_chars``:
    the most characters one piece may carry (the caller's message limit). ``vision_models``: the
    catalogue entries that take images (their YAML declares vision). ``offload``: how to run
    CPU-bound work (counting a long prompt's tokens) off the caller's event loop, as
    ``offload(fn, *args)``; by default a direct call. ``make_client``: the chat client for the
    settings (by default over the process-wide pool, health book, router and prober).
    ``cache``: the answer cache (by default the process-wide one, from the environment).

    ``pieces()`` runs it; ``settings`` (once read) scrubs its errors, ``request_id`` names it to
    the servers (``X-Request-Id``) and in telemetry."""

    pressure: Pressure = PRESSURE  # the process's lag signal, shared by every request (pressure.py)

    def __init__(self, credentials: Mapping, model: str, messages: list[dict], parameters: Mapping, *,
                 catalogue: bool, tools: list[dict] | None = None, stop: list[str] | None = None,
                 user: str | None = None, buffered: bool = False, max_chars: int | None = None,
                 vision_models: Sequence[str] = (), offload: Callable[..., object] = _direct,
                 make_client: Callable[[Settings], ChatClient] = ChatClient,
                 cache: AnswerCache | None = None) -> None:
        self.credentials = credentials
        self.model = model
        self.messages = messages
        self.parameters = parameters
        self.catalogue = catalogue
        self.tools = tools
        self.stop = stop
        self.user = user
        self.buffered = buffered
        self.max_chars = max_chars
        self.vision_models = tuple(vision_models)
        self.offload = offload
        self.make_client = make_client
        self.cache = cache
        self.request_id = f"{REQUEST_ID_PREFIX}{os.urandom(12).hex()}"  # 24 hex digits, a fifth of uuid4's cost
        self.settings: Settings | None = None

    def pieces(self) -> Iterator[Piece]:
        """Pieces of the answer as they arrive, the last one ``Finished``. Engine errors are
        raised as they are, after what arrived before them; closing the iterator early closes the
        server's stream (the server stops generating)."""
        started = time.monotonic()
        ttft = None
        client = None
        outcome, error, prompt_tokens, completion_tokens = "error", None, None, None
        cached = False
        try:
            self.settings = settings = settings_for(self.credentials)
            messages = ImagePolicy.of(self.model, settings, catalogue=self.catalogue,
                                      vision_models=self.vision_models).checked(self.messages)
            served = served_model(self.model, settings, catalogue=self.catalogue)
            family = family_for(self.model, settings, catalogue=self.catalogue, served=served)
            thinking = thinking_for(family, self.parameters, tools=bool(self.tools))
            if thinking.note:
                log.info("%s (request %s): %s", self.model, self.request_id, thinking.note)
            output = output_format(self.parameters)
            body = build_body(served, messages, self.parameters, tools=self.tools, stop=self.stop,
                              user=self.user, family=family, thinking=thinking, output=output)
            visit = (self.cache or answer_cache()).visit(settings, body, served)
            hit = visit.lookup() if visit else None
            if hit is not None:  # the stored answer, streamed or whole as a live one would be
                cached, ttft = True, time.monotonic() - started
                prompt_tokens, completion_tokens = hit.prompt_tokens, hit.completion_tokens
                before, last = replay(hit, streamed=not self.buffered)
                *more, end = [p for piece in (*before, last) for p in sized(piece, self.max_chars)]
                yield from more
                outcome = "ok"
                yield Finished(end.text, end.tool_calls, hit.finish_reason, prompt_tokens, completion_tokens,
                               cached=True)
                return
            # a grammar holds from the first token unless the server parses reasoning (which then
            # arrives in its own field): constrained text before any tag is the answer, not reasoning
            answer = AnswerAssembler(thinking.on and not output.constrained, tool_markup=bool(self.tools))
            client = self.make_client(settings)
            # what went out is kept for the answer cache and for the check of a constrained answer
            held = Batch(pressure=self.pressure, record=visit is not None or output.constrained)
            try:
                # a grammar starts afresh in a continuation: a cut constrained answer is not continued
                for delta in client.stream(body, buffered=self.buffered, request_id=self.request_id,
                                           resumable=family.resumable and not output.constrained):
                    piece = answer.feed(delta)
                    if piece is not None:
                        held.add(piece)
                    if held.due(client.more_ready):
                        if ttft is None:
                            ttft = time.monotonic() - started
                        yield from sized(held.take(), self.max_chars)
                        if not self.buffered:  # a busy process lets the next tokens gather (pressure.py)
                            held.gather()
            except Exception:
                if held:  # what arrived before the failure is shown, then the error
                    yield from sized(held.take(), self.max_chars)
                raise
            finally:
                held.close()
            if held:
                if ttft is None:
                    ttft = time.monotonic() - started
                yield from sized(held.take(), self.max_chars)
            last = answer.finish()
            if output.constrained:  # never an unconstrained answer passed off as constrained
                output.check(split_reasoning("".join(p.text for p in held.taken) + last.text)[1], answer.finish_reason,
                             client.last_endpoint.name if client.last_endpoint else None)
            usage = answer.usage or {}
            prompt_tokens = usage.get("prompt_tokens")
            completion_tokens = usage.get("completion_tokens")
            if prompt_tokens is None:
                prompt_tokens = self.offload(count_messages, body["messages"], self.tools, family.tokenizer)
            if completion_tokens is None:
                completion_tokens = self.offload(count_text, answer.produced, family.tokenizer)
            *before, end = sized(last, self.max_chars)
            yield from before
            outcome = "ok"
            yield Finished(end.text, end.tool_calls, answer.finish_reason or "stop", prompt_tokens,
                           completion_tokens)
            if visit and client.unbroken:  # delivered, in one unbroken stream: kept for a repeat
                went = [*held.taken, last]
                visit.keep(Entry("".join(p.text for p in went), [c for p in went for c in p.tool_calls],
                                 answer.finish_reason or "stop", prompt_tokens, completion_tokens))
        except GeneratorExit:
            outcome = "cancelled"  # the caller stopped reading: the upstream stream is closed
            raise
        except Exception as e:  # raised as it is: the caller maps it (and reports one not the engine's)
            error = type(e).__name__
            raise
        finally:
            ep = client.last_endpoint if client else None
            TELEMETRY.request_done(request_id=self.request_id, endpoint=ep.name if ep else None,
                                   model=self.model, outcome=outcome, error=error,
                                   latency=time.monotonic() - started, ttft=ttft,
                                   prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                   stream=not self.buffered, cached=cached)
