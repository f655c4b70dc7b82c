"""When to try again, composed from tenacity's pieces.

Retries happen only before anything reached the user (the caller guarantees that by retrying
the *opening* of a stream), at most ``attempts`` times, each to the next endpoint when there is
one (no wait), else after ``Retry-After`` (capped) or full-jitter exponential backoff. A
process-wide budget keeps retries to about 10% of traffic so a sick fleet is not hammered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import tenacity
from tenacity.wait import wait_base

from .errors import EngineError

__all__ = ["RetryBudget", "RetryPolicy", "WaitFailover"]

T = TypeVar("T")


class RetryBudget:
    """Token bucket: each request earns ``ratio`` of a retry, plus ``min_per_second`` always."""

    def __init__(self, ratio: float = 0.1, min_per_second: float = 3.0, cap: float = 20.0) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap
        self._tokens = cap
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def record_request(self) -> None:
        with self._lock:
            self._tokens = min(self.cap, self._tokens + self.ratio)

    def try_spend(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.cap, self._tokens + (now - self._at) * self.min_per_second)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


class WaitFailover(wait_base):
    """No wait while an untried endpoint remains; then Retry-After (capped) or full jitter.

    ``endpoints``: how many there are (each attempt tries a new one), or a function saying
    whether an untried *available* one remains: a 429 from the one healthy endpoint among ejected
    ones must not be retried on it at once."""

    def __init__(self, endpoints: int | Callable[[], bool], base: float, cap: float,
                 retry_after_cap: float, done: int = 0) -> None:
        self.endpoints = endpoints
        self.jitter = tenacity.wait_random_exponential(multiplier=base, max=cap)
        self.retry_after_cap = retry_after_cap
        self.done = done  # attempts made before tenacity took over

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        number = retry_state.attempt_number + self.done
        untried = self.endpoints() if callable(self.endpoints) else number < self.endpoints
        if untried:
            return 0.0
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            return min(after, self.retry_after_cap)
        # full jitter over base * 2^(attempts so far), as tenacity's own counter would give
        return self.jitter(_Numbered(number))


class _Numbered:
    """What tenacity's wait strategies read of a retry state: the attempt number."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


@dataclass
class RetryPolicy:
    attempts: int = 3
    backoff_base: float = 0.2
    backoff_cap: float = 4.0
    retry_after_cap: float = 10.0
    budget: RetryBudget = field(default_factory=RetryBudget)
    _scoped: dict = field(default_factory=dict, repr=False, compare=False)

    def scoped(self, scope: str) -> RetryPolicy:
        """This policy with the credential ``scope``'s own budget: one workspace's failing
        requests (a wrong CA, say) must not spend the retries of the others."""
        policy = self._scoped.get(scope)
        if policy is None:
            policy = self._scoped.setdefault(scope, replace(self, budget=RetryBudget(
                self.budget.ratio, self.budget.min_per_second, self.budget.cap), _scoped={}))
        return policy

    def call(self, attempt: Callable[[], T], endpoints: int | Callable[[], bool], deadline: float) -> T:
        """``attempt()`` until it succeeds or must not be retried. The first try runs bare:
        tenacity's machinery costs ~50-70 us a request under gevent (its state is greenlet-local)
        and nearly every request succeeds at once; it is built only after a retryable failure,
        counting that failure as attempt 1."""
        try:
            return attempt()
        except EngineError as e:
            first = tenacity.RetryCallState(None, fn=None, args=(), kwargs={})
            first.set_exception((type(e), e, e.__traceback__))
            if not self._should_retry(first, deadline, done=0):
                raise
        time.sleep(self._wait(endpoints, 0)(first))  # what tenacity would sleep after attempt 1
        return self.retrying(endpoints, deadline, done=1)(attempt)

    def _wait(self, endpoints: int | Callable[[], bool], done: int) -> WaitFailover:
        return WaitFailover(endpoints, self.backoff_base, self.backoff_cap, self.retry_after_cap, done)

    def _should_retry(self, state: tenacity.RetryCallState, deadline: float, done: int) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        # tenacity asks this before its stop condition: the last attempt's failure must not
        # spend a budget token on a retry that will never happen
        return (isinstance(exc, EngineError) and exc.retryable
                and state.attempt_number + done < self.attempts
                and time.monotonic() < deadline and self.budget.try_spend())

    def retrying(self, endpoints: int | Callable[[], bool], deadline: float, done: int = 0) -> tenacity.Retrying:
        """tenacity's loop for the attempts after the first ``done`` (which already failed)."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts - done),
            wait=self._wait(endpoints, done),
            retry=lambda state: self._should_retry(state, deadline, done),
            reraise=True,
            sleep=lambda s: time.sleep(s),  # looked up at call time: gevent-patched in the plugin
        )
