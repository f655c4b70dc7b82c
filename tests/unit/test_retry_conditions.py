"""The retry rules as named tenacity conditions: each alone, composed, and the one-shot policy."""

import time

import tenacity

from deepseek_engine.client import all_failed
from deepseek_engine.errors import (
    BadRequestError,
    IdleTimeout,
    RateLimitError,
    ServerError,
    StreamBrokenError,
    TotalTimeout,
)
from deepseek_engine.retry import (
    RetryBudget,
    RetryPolicy,
    retry_if_attempts_left,
    retry_if_before,
    retry_if_budget,
    retry_if_retryable,
)


def _failed(attempt, exc):
    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def _budget(tokens):
    b = RetryBudget(ratio=0.0, min_per_second=0.0, cap=10)
    b._tokens = tokens
    return b


def test_retry_if_retryable_follows_the_error():
    for exc in (ServerError("x"), RateLimitError("x"), StreamBrokenError("x"), IdleTimeout("x")):
        assert retry_if_retryable(_failed(1, exc)), exc
    for exc in (BadRequestError("x"), TotalTimeout("x"), ValueError("not the engine's")):
        assert not retry_if_retryable(_failed(1, exc)), exc
    final = all_failed([ServerError("x", endpoint="a")], final=True)  # every endpoint cooling down
    assert isinstance(final, ServerError) and not retry_if_retryable(_failed(1, final))


def test_attempts_left_counts_those_made_before_tenacity_took_over():
    assert retry_if_attempts_left(3)(_failed(2, ServerError("x")))
    assert not retry_if_attempts_left(3)(_failed(3, ServerError("x")))
    assert not retry_if_attempts_left(3, done=1)(_failed(2, ServerError("x")))  # the bare try was 1


def test_retry_if_before_the_deadline():
    assert retry_if_before(time.monotonic() + 5)(_failed(1, ServerError("x")))
    assert not retry_if_before(time.monotonic() - 0.001)(_failed(1, ServerError("x")))


def test_conditions_compose_as_tenacity_s_do():
    late = retry_if_before(time.monotonic() - 1)
    state = _failed(1, ServerError("x"))
    assert not (retry_if_retryable & late)(state)
    assert (retry_if_retryable | late)(state)
    assert isinstance(retry_if_retryable & late & retry_if_attempts_left(2), tenacity.retry_all)


def test_the_budget_is_spent_only_when_every_other_condition_allows_the_retry():
    budget = _budget(1)
    policy = RetryPolicy(attempts=3, budget=budget)
    soon = time.monotonic() + 10
    assert not policy.retry_condition(soon)(_failed(1, BadRequestError("x")))  # not retryable
    assert not policy.retry_condition(soon)(_failed(3, ServerError("x")))  # the last attempt
    assert not policy.retry_condition(time.monotonic() - 1)(_failed(1, ServerError("x")))  # too late
    assert budget._tokens == 1
    assert policy.retry_condition(soon)(_failed(1, ServerError("x")))
    assert budget._tokens == 0
    assert not policy.retry_condition(soon)(_failed(1, ServerError("x")))  # spent: no retry
    assert retry_if_budget(_budget(1))(None) and not retry_if_budget(_budget(0.5))(None)


def test_resume_cap_and_what_may_be_continued():
    policy = RetryPolicy()
    cut = StreamBrokenError("cut")
    assert [policy.may_resume(cut, n) for n in range(4)] == [True, True, False, False]  # two, then reported
    assert not policy.may_resume(BadRequestError("x"), 0)
    out_of_time = TotalTimeout("x")
    out_of_time.retryable = True  # whatever an instance says: no time is left to continue
    assert not policy.may_resume(out_of_time, 0)
    assert not RetryPolicy(resumes=0).may_resume(cut, 0)
    assert policy.scoped("a-credential").resumes == 2


def test_one_shot_tries_once_and_spends_nothing():
    one, other = RetryPolicy.one_shot(), RetryPolicy.one_shot()
    assert one.attempts == 1 and one.budget is not other.budget  # each user its own
    tokens = one.budget._tokens
    calls = []

    def fail():
        calls.append(1)
        raise ServerError("x")

    try:
        one.call(fail, 5, time.monotonic() + 10)
    except ServerError:
        pass
    assert calls == [1] and one.budget._tokens == tokens
