"""What a failed chat request is told, and what a failure does to its endpoint's standing.

The words of a chat call's transport failures (``ChatWords``: a timeout is the first token's, the
idle gap's or the total's, by when it struck), of a non-200 answer (``status_error``), of a request
every endpoint failed (``all_failed``) and of one refused because every endpoint is set aside
(``down_error``); and ``count_failure``, how a failure sets its endpoint aside.
"""

from __future__ import annotations

import time

import httpx

from .body import read_text
from .errors import (
    ConnectError,
    EndpointsDownError,
    EngineError,
    FirstTokenTimeout,
    IdleTimeout,
    RateLimitError,
    ServerError,
    TimeoutError_,
    TotalTimeout,
    UnreachableError,
    connection_reason,
    error_from_response,
)
from .headers import without_credentials
from .health import HealthBook
from .settings import Endpoint, Timeouts
from .transport import SENDING, Words

__all__ = ["ChatWords", "timeout_error", "status_error", "all_failed", "down_error", "count_failure"]


class ChatWords(Words):
    """The words of one chat request's transport failures on one endpoint. ``started``: the
    answer's first token came (a read that times out then is the idle gap's, not the first
    token's)."""

    __slots__ = ("timeouts", "deadline", "started")

    def __init__(self, endpoint: Endpoint, timeouts: Timeouts, deadline: float) -> None:
        super().__init__(endpoint.name, timeouts.connect)
        self.timeouts = timeouts
        self.deadline = deadline
        self.started = False

    def read_timeout(self, e: httpx.ReadTimeout) -> EngineError:
        return timeout_error(self.timeouts, self.deadline, self.endpoint, started=self.started)

    def other(self, e: httpx.HTTPError) -> EngineError:
        if self.stage is SENDING:  # a write or pool timeout too
            return ConnectError(f"could not send the request: {connection_reason(e)}", endpoint=self.endpoint)
        return self.cut(e)


def timeout_error(t: Timeouts, deadline: float, endpoint: str, *, started: bool) -> TimeoutError_:
    """The timeout a read that ran out of time is: the total's when the request's deadline came,
    else the first token's or the idle gap's."""
    if time.monotonic() >= deadline - 0.01:
        return TotalTimeout(f"the answer took longer than the total timeout ({t.total:g}s)", endpoint=endpoint)
    if not started:
        return FirstTokenTimeout(f"no first token within {t.first_token:g}s (queueing + prefill); the "
                                 "server is overloaded or stuck", endpoint=endpoint)
    return IdleTimeout(f"the stream stalled: nothing for {t.idle:g}s", endpoint=endpoint,
                       hint="the server is overloaded or stuck (check its logs), or raise idle= in timeouts")


def status_error(resp: httpx.Response, endpoint: str, headers: dict[str, str]) -> EngineError:
    """The typed error of a non-200 answer, from its error page, without the credential this
    request sent (some gateways quote the Authorization header back)."""
    page = without_credentials(read_text(resp, endpoint), headers)
    return error_from_response(resp.status_code, page, endpoint, resp.headers.get("retry-after"))


def count_failure(health: HealthBook, scope: str, ep: Endpoint, e: EngineError) -> None:
    """``e`` counted against ``ep``: a failure that another try may not meet (the endpoint's
    fault, or this credential's with it), not the request's own."""
    if e.retryable:
        health.failure(ep.url, str(e.message)[:200], severe=isinstance(e, UnreachableError),
                       scope=scope if e.credential_fault else None, cause=e)


def all_failed(errors: list[EngineError], final: bool = False) -> EngineError:
    """One error for a request (or a validation) that failed on every endpoint, naming each."""
    if not errors:
        return EndpointsDownError("no endpoint answered")
    if len({e.endpoint for e in errors}) == 1:
        last = errors[-1]
        if final:
            last.retryable = False  # instance-level: stops tenacity, keeps the class
        return last
    seen: dict[str, str] = {}
    for e in errors:
        seen[e.endpoint or "?"] = e.message
    message = "every endpoint failed: " + "; ".join(f"{k}: {v}" for k, v in seen.items())
    kinds = {type(e) for e in errors}
    if all(issubclass(k, ServerError) for k in kinds):
        kinds = {kinds.pop() if len(kinds) == 1 else ServerError}  # 503 and 500: not all unavailable
    if len(kinds) == 1 and not issubclass(cls := kinds.pop(), ConnectError):
        # all rate limited, or all failing the same way: keep the class Dify reacts to
        last = errors[-1]
        out = cls(message, status=last.status, retry_after=last.retry_after)
        out.retryable = False
        return out
    return EndpointsDownError(message)


def down_error(endpoints: tuple[Endpoint, ...], health: HealthBook, scope: str) -> EngineError:
    """Why every endpoint is set aside, as the error the last failure of each was: a rate
    limit stays a rate limit (with the server's Retry-After), a TLS failure explains itself."""
    errors, parts = [], []
    for e in endpoints:
        cause, reason, wait = health.why(e.url, scope)
        when = f"tried again in {wait:.1f}s" if wait > 0 else "being tried now"
        parts.append(f"{e.name} ({reason}; {when})")
        kind = type(cause) if cause is not None else UnreachableError
        errors.append(kind(f"{reason} (down: {when})", endpoint=e.name, status=getattr(cause, "status", None),
                           retry_after=wait if isinstance(cause, RateLimitError) else None,
                           hint=getattr(cause, "hint", None)))
    out = all_failed(errors, final=True)
    if len(errors) > 1 and isinstance(out, EndpointsDownError):
        out = EndpointsDownError("all endpoints are down: " + "; ".join(parts),
                                 hint="check that the servers are running and reachable")
    return out
