"""One attempt: a chat request POSTed to one endpoint, opened up to its first token.

The attempt sends the request straight to the pool (``transport.sender``), turns a non-200 answer
into its typed error, takes a whole answer from a server or gateway that ignored "stream", and
reads an event stream up to its first token (to its end when ``buffered``) before the caller sees
anything: until then a failure may still be retried elsewhere. The first token is due within
``first_token`` seconds (queueing + prefill), each later event within ``idle``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import NamedTuple

import httpx

from .body import ANSWER_CAP, read_text
from .errors import StreamBrokenError, server_message
from .events import DONE, Readiness, chat_events, loads
from .failures import ChatWords, status_error
from .protocol import parse_completion
from .routing import Router
from .settings import Endpoint, Timeouts
from .transport import ANSWER, STREAM, idle_budget, set_read_budget

__all__ = ["Opened", "Opener", "chat_url"]


class Opened(NamedTuple):
    """A stream an endpoint took: what was read before the caller saw anything (``pre``, up to
    the first token, all of it when buffered) and the rest still to read (``events``)."""

    endpoint: Endpoint
    resp: httpx.Response | None  # None: a whole answer, already read and closed
    events: Iterator
    pre: list
    words: ChatWords  # the words of its transport failures, ``started`` once a token came


class Opener:
    """The attempts of one request: each sends a body to one endpoint (``open``). ``ready`` hears
    what has already arrived (``events.Readiness``); ``deadline``: the request's, monotonic."""

    __slots__ = ("send", "router", "ready", "deadline", "buffered")

    def __init__(self, send: Callable[[httpx.Request], httpx.Response], router: Router, ready: Readiness,
                 deadline: float, buffered: bool) -> None:
        self.send = send
        self.router = router
        self.ready = ready
        self.deadline = deadline
        self.buffered = buffered

    def open(self, ep: Endpoint, payload: bytes, headers: dict[str, str], t: Timeouts) -> Opened:
        deadline, buffered, router = self.deadline, self.buffered, self.router
        first = min(time.monotonic() + t.first_token, deadline)
        if ep.basic is not None:  # what httpx.Client does with a URL's user:password, and GETs still do
            headers = {**headers, "Authorization": f"Basic {ep.basic}"}
        request = httpx.Request("POST", chat_url(ep.url), content=payload, headers=headers,
                                extensions={"timeout": {"connect": t.connect, "read": t.first_token,
                                                        "write": t.connect, "pool": t.connect}})
        words = ChatWords(ep, t, deadline)
        set_read_budget((None, first))
        router.started(ep.url)
        began = time.monotonic()
        try:
            with words:
                resp = self.send(request)
                try:
                    words.stage = ANSWER
                    if resp.status_code != 200:
                        raise status_error(resp, ep.name, headers)
                    ctype = resp.headers.get("content-type", "")
                    if "text/event-stream" not in ctype:  # a server or gateway that ignored "stream"
                        delta = _whole_answer(resp, ep, ctype)
                        router.observe_ttft(ep.url, time.monotonic() - began)
                        return Opened(ep, None, iter(()), [delta, DONE], words)
                    words.stage = STREAM
                    events = chat_events(resp, ep.name, self.ready)
                    pre: list = []
                    finished = False
                    while True:
                        set_read_budget(idle_budget(t.idle, deadline) if words.started else (None, first))
                        item = next(events, None)
                        if item is None:  # the body ended without [DONE]
                            if buffered:
                                if not finished:
                                    raise StreamBrokenError("the stream ended before the answer was "
                                                            "complete", endpoint=ep.name)
                                pre.append(DONE)
                            break
                        pre.append(item)
                        if item is DONE:
                            break
                        finished = finished or item.finish_reason is not None
                        if item.has_output and not words.started:
                            words.started = True
                            router.observe_ttft(ep.url, time.monotonic() - began)
                            if not buffered:
                                break  # from here on tokens reach the user: no more retries
                    # the relay judges the endpoint when the stream ends (a replica that breaks
                    # every stream part-way must be ejected, not counted healthy at each first token)
                    return Opened(ep, resp, events, pre, words)
                except BaseException:
                    resp.close()
                    raise
        except BaseException:
            router.finished(ep.url)
            raise
        finally:
            set_read_budget(None)


@lru_cache(maxsize=1024)
def chat_url(base: str) -> httpx.URL:
    """``base``'s chat completions URL, parsed once: httpx parses a URL given as text on every
    request (about a twentieth of a short one's CPU, bench/perf/findings.md); a parsed one is
    immutable and reused as it is. Keyed by the whole base URL, so endpoints never share one."""
    return httpx.URL(base + "/chat/completions")


def _whole_answer(resp: httpx.Response, ep: Endpoint, ctype: str):
    """The one delta of a non-streamed answer (read whole, to ``ANSWER_CAP``; then closed)."""
    text = read_text(resp, ep.name, ANSWER_CAP, what="the non-streamed answer")
    try:
        return parse_completion(loads(text), ep.name)
    except ValueError:
        raise StreamBrokenError(f"expected an event stream, got {ctype or 'no content type'}: "
                                f"{server_message(text)[:120]}", endpoint=ep.name) from None
    except RecursionError:
        raise StreamBrokenError("the server sent a malformed completion: JSON nested too deep",
                                endpoint=ep.name) from None
