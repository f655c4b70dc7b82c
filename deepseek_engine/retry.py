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
from dataclasses import dataclass, field

import tenacity
from tenacity.wait import wait_base

from .errors import EngineError

__all__ = ["RetryBudget", "RetryPolicy", "WaitFailover"]


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
                 retry_after_cap: float) -> None:
        self.endpoints = endpoints
        self.jitter = tenacity.wait_random_exponential(multiplier=base, max=cap)
        self.retry_after_cap = retry_after_cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        untried = (self.endpoints() if callable(self.endpoints)
                   else retry_state.attempt_number < self.endpoints)
        if untried:
            return 0.0
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            return min(after, self.retry_after_cap)
        return self.jitter(retry_state)


@dataclass
class RetryPolicy:
    attempts: int = 3
    backoff_base: float = 0.2
    backoff_cap: float = 4.0
    retry_after_cap: float = 10.0
    budget: RetryBudget = field(default_factory=RetryBudget)

    def retrying(self, endpoints: int | Callable[[], bool], deadline: float) -> tenacity.Retrying:
        def should_retry(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            # tenacity asks this before its stop condition: the last attempt's failure must not
            # spend a budget token on a retry that will never happen
            return (isinstance(exc, EngineError) and exc.retryable
                    and state.attempt_number < self.attempts
                    and time.monotonic() < deadline and self.budget.try_spend())

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=WaitFailover(endpoints, self.backoff_base, self.backoff_cap, self.retry_after_cap),
            retry=should_retry,
            reraise=True,
            sleep=lambda s: time.sleep(s),  # looked up at call time: gevent-patched in the plugin
        )
