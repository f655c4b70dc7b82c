"""When to try again, composed from tenacity's pieces.

Retries happen only before anything reached the user (the caller guarantees that by retrying
the *opening* of a stream), at most ``attempts`` times, each to the next endpoint when there is
one (no wait), else after ``Retry-After`` (capped) or full-jitter exponential backoff. A
budget per credential keeps retries to about 10% of traffic so a sick fleet is not hammered. A
stream cut after its first tokens is continued (``resume.py``) at most ``resumes`` times.

Each rule is a named tenacity condition, combined with ``&``: ``retry_if_retryable`` (what is
worth another try), ``retry_if_attempts_left``, ``retry_if_before`` (the deadline),
``retry_if_budget`` (spends a token, so it comes last); ``WaitFailover`` says where and when the
retry goes. ``RetryPolicy.retry_condition`` and ``resume_condition`` compose them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import tenacity
from tenacity.retry import retry_base
from tenacity.wait import wait_base

from .errors import EngineError, TotalTimeout

__all__ = ["RetryBudget", "RetryPolicy", "WaitFailover", "retry_if_retryable", "retry_if_attempts_left",
           "retry_if_before", "retry_if_budget"]

T = TypeVar("T")


class RetryBudget:
    """Token bucket: each request earns ``ratio`` of a retry, plus ``min_per_second`` always."""

    def __init__(self, ratio: float = 0.1, min_per_second: float = 3.0, cap: float = 20.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.cap = cap
        self._clock = clock
        self._tokens = cap
        self._at = clock()
        self._lock = threading.Lock()

    def record_request(self) -> None:
        with self._lock:
            self._tokens = min(self.cap, self._tokens + self.ratio)

    def try_spend(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.cap, self._tokens + (now - self._at) * self.min_per_second)
            self._at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


retry_if_retryable = tenacity.retry_if_exception(lambda e: isinstance(e, EngineError) and e.retryable)
"""The failure is one another attempt may cure (``EngineError.retryable``: a 5xx, a cut, a 429...)."""


class _If(retry_base):
    """A retry condition from a predicate of tenacity's retry state (composable with & and |)."""

    def __init__(self, predicate: Callable[[tenacity.RetryCallState], bool]) -> None:
        self.predicate = predicate

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.predicate(retry_state)


def retry_if_attempts_left(attempts: int, done: int = 0) -> retry_base:
    """Fewer than ``attempts`` tries made, counting ``done`` made before tenacity took over.
    Asked as a retry condition, not only as tenacity's stop (which it asks after the retry
    condition): the last attempt's failure must not spend a budget token on a retry that will
    never happen."""
    return _If(lambda state: state.attempt_number + done < attempts)


def retry_if_before(deadline: float) -> retry_base:
    """The request's ``deadline`` (``time.monotonic()``) has not passed."""
    return _If(lambda _: time.monotonic() < deadline)


def retry_if_budget(budget: RetryBudget) -> retry_base:
    """``budget`` grants a retry, and spends it: combine it last, after every condition that
    may still refuse."""
    return _If(lambda _: budget.try_spend())


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
    resumes: int = 2  # continuations of one cut answer; a third cut is reported
    _scoped: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def one_shot(cls) -> RetryPolicy:
        """One attempt, never retried: for checks that answer while someone waits (validation,
        warm-up, the doctor), where a retry would only hide what failed."""
        return cls(attempts=1)

    def scoped(self, scope: str) -> RetryPolicy:
        """This policy with the credential ``scope``'s own budget: one workspace's failing
        requests (a wrong CA, say) must not spend the retries of the others."""
        policy = self._scoped.get(scope)
        if policy is None:
            policy = self._scoped.setdefault(scope, replace(self, budget=RetryBudget(
                self.budget.ratio, self.budget.min_per_second, self.budget.cap), _scoped={}))
        return policy

    def retry_condition(self, deadline: float, done: int = 0) -> retry_base:
        """Whether a failed attempt is tried again, ``done`` attempts having failed before
        tenacity took over."""
        return (retry_if_retryable & retry_if_attempts_left(self.attempts, done)
                & retry_if_before(deadline) & retry_if_budget(self.budget))

    def resume_condition(self) -> retry_base:
        """Whether a stream cut after its first tokens is continued, the retry state's attempt
        number counting the streams so far (the first, plus each continuation): a total timeout
        leaves no time for one."""
        return (retry_if_retryable & tenacity.retry_if_not_exception_type(TotalTimeout)
                & retry_if_attempts_left(self.resumes + 1))

    def may_resume(self, error: EngineError, resumes: int) -> bool:
        """``resume_condition`` for a stream cut by ``error`` after ``resumes`` continuations."""
        return self.resume_condition()(_failed(error, attempt_number=resumes + 1))

    def call(self, attempt: Callable[[], T], endpoints: int | Callable[[], bool], deadline: float) -> T:
        """``attempt()`` until it succeeds or must not be retried. The first try runs bare:
        tenacity's machinery is costly under gevent (its state is greenlet-local; figures in
        docs/performance.md) and nearly every request succeeds at once; it is built only after a
        retryable failure, counting that failure as attempt 1."""
        try:
            return attempt()
        except EngineError as e:
            first = _failed(e, attempt_number=1)
            if not self.retry_condition(deadline)(first):
                raise
        time.sleep(self._wait(endpoints, 0)(first))  # what tenacity would sleep after attempt 1
        return self.retrying(endpoints, deadline, done=1)(attempt)

    def _wait(self, endpoints: int | Callable[[], bool], done: int) -> WaitFailover:
        return WaitFailover(endpoints, self.backoff_base, self.backoff_cap, self.retry_after_cap, done)

    def retrying(self, endpoints: int | Callable[[], bool], deadline: float, done: int = 0) -> tenacity.Retrying:
        """tenacity's loop for the attempts after the first ``done`` (which already failed)."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts - done),
            wait=self._wait(endpoints, done),
            retry=self.retry_condition(deadline, done),
            reraise=True,
            sleep=lambda s: time.sleep(s),  # looked up at call time: gevent-patched in the plugin
        )


def _failed(error: BaseException, attempt_number: int) -> tenacity.RetryCallState:
    """A retry state whose attempt ``attempt_number`` failed with ``error``."""
    state = tenacity.RetryCallState(None, fn=None, args=(), kwargs={})
    state.attempt_number = attempt_number
    state.set_exception((type(error), error, error.__traceback__))
    return state
