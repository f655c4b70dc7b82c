import time

import tenacity

from deepseek_engine.errors import BadRequestError, RateLimitError, ServerError
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryBudget, RetryPolicy, WaitFailover
from deepseek_engine.routing import Router
from deepseek_engine.settings import parse_endpoints


def test_budget_allows_about_ten_percent_plus_a_floor():
    b = RetryBudget(ratio=0.1, min_per_second=0.0, cap=5)
    b._tokens = 0
    for _ in range(100):
        b.record_request()
    spent = sum(b.try_spend() for _ in range(50))
    assert spent == 5  # capped: 100 requests earn 10, the cap keeps 5


def test_budget_floor_refills_with_time():
    now = [100.0]  # a clock the test moves: a stalled machine must not refill the bucket
    b = RetryBudget(ratio=0.0, min_per_second=100.0, cap=3, clock=lambda: now[0])
    b._tokens = 0
    assert not b.try_spend()
    now[0] += 0.015  # 1.5 tokens earned
    assert sum(b.try_spend() for _ in range(10)) == 1
    now[0] += 1  # 100 earned, the cap keeps 3 (the half left over is capped too)
    assert sum(b.try_spend() for _ in range(10)) == 3


def _state(attempt, exc):
    rs = tenacity.RetryCallState(None, None, (), {})
    rs.attempt_number = attempt
    rs.set_exception((type(exc), exc, None))
    return rs


def test_wait_is_zero_while_untried_endpoints_remain_then_retry_after_or_jitter():
    w = WaitFailover(endpoints=2, base=0.2, cap=4, retry_after_cap=10)
    assert w(_state(1, ServerError("x"))) == 0
    assert w(_state(2, RateLimitError("x", retry_after=30))) == 10  # capped
    waits = [w(_state(2, ServerError("x"))) for _ in range(200)]
    assert all(0 <= x <= 0.4 for x in waits)  # full jitter below base * 2 ** (attempt - 1)
    assert len(set(waits)) > 150 and min(waits) < 0.1 and max(waits) > 0.3  # spread, not a constant


def test_wait_backs_off_when_no_untried_available_endpoint_remains():
    # the lone healthy endpoint (the others ejected) answered 429: no instant retry on it
    untried = [False]
    w = WaitFailover(endpoints=lambda: untried[0], base=0.2, cap=4, retry_after_cap=10)
    assert w(_state(1, RateLimitError("x", retry_after=2))) == 2
    untried[0] = True  # another endpoint is available and untried: go there at once
    assert w(_state(1, RateLimitError("x", retry_after=2))) == 0


def test_the_last_failure_spends_no_retry_budget():
    budget = RetryBudget(ratio=0.0, min_per_second=0.0, cap=10)
    policy = RetryPolicy(attempts=3, backoff_base=0.0, backoff_cap=0.0, budget=budget)
    calls = 0

    def fail():
        nonlocal calls
        calls += 1
        raise ServerError("x")

    try:
        policy.call(fail, 5, time.monotonic() + 10)
    except ServerError:
        pass
    assert calls == 3 and budget._tokens == 8  # two retries, two tokens; the third failure none
    try:
        policy.call(lambda: (_ for _ in ()).throw(BadRequestError("x")), 5, time.monotonic() + 10)
    except BadRequestError:
        pass
    assert budget._tokens == 8  # never retried, nothing spent
    assert policy.call(lambda: "ok", 5, time.monotonic() + 10) == "ok" and budget._tokens == 8


def test_call_runs_the_first_try_bare_then_tenacity_with_the_same_waits(monkeypatch):
    """The first attempt runs outside tenacity; after it fails, the waits and the attempt count
    are those of one tenacity loop: Retry-After for attempt 1, full jitter for attempt 2."""
    import deepseek_engine.retry as retry

    slept = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    built = []
    real = tenacity.Retrying.__init__
    monkeypatch.setattr(tenacity.Retrying, "__init__", lambda self, *a, **k: (built.append(1), real(self, *a, **k))[1])
    policy = RetryPolicy(attempts=3, backoff_base=0.2, backoff_cap=4, budget=RetryBudget(cap=100))
    assert policy.call(lambda: "ok", 1, time.monotonic() + 10) == "ok"
    assert built == [] and slept == []  # nothing of tenacity's for a request that succeeds
    errors = iter([RateLimitError("x", retry_after=1.5), ServerError("y")])
    calls = []

    def flaky():
        calls.append(1)
        err = next(errors, None)
        if err:
            raise err
        return "done"

    assert policy.call(flaky, 1, time.monotonic() + 10) == "done"
    assert len(calls) == 3 and built == [1]
    assert slept[0] == 1.5 and 0 <= slept[1] <= 0.4  # jitter below base * 2 ** (2 - 1)
    calls.clear()
    always = RetryPolicy(attempts=3, backoff_base=0.0, backoff_cap=0.0, budget=RetryBudget(cap=100))
    try:
        always.call(lambda: calls.append(1) or (_ for _ in ()).throw(ServerError("z")), 1, time.monotonic() + 10)
    except ServerError:
        pass
    assert len(calls) == 3  # at most 3 attempts, the bare one included


def test_ejection_passive_and_growing():
    book = HealthBook(threshold=3, base_cooldown=1, max_cooldown=8)
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1")
    for _ in range(2):
        book.failure(a.url, "500")
    assert book.state(a.url).available(time.monotonic())
    book.failure(a.url, "500")
    first = book.state(a.url).ejected_until - time.monotonic()
    assert not book.state(a.url).available(time.monotonic())
    assert Router(book).order((a, b))[0] == b
    book.failure(a.url, "500", severe=True)  # same outage: no escalation
    assert book.state(a.url).ejections == 1
    book.state(a.url).ejected_until = 0  # the cool-down is over
    book.probe_ok(a.url)  # /health 200 proves the server is up, not that its answers are good
    for _ in range(3):  # it fails again: out for longer
        book.failure(a.url, "500")
    second = book.state(a.url).ejected_until - time.monotonic()
    assert book.state(a.url).ejections == 2 and 0.9 <= first <= 1.0 and 1.9 <= second <= 2.0
    book.probe_ok(a.url)
    assert not book.state(a.url).available(time.monotonic())  # a failing-traffic ejection runs its course
    book.state(a.url).ejected_until = 0
    book.success(a.url)  # real traffic: the count starts over
    book.failure(a.url, "refused", severe=True)
    assert 0.9 <= book.state(a.url).ejected_until - time.monotonic() <= 1.0
    book.failure(b.url, "refused", severe=True)
    assert book.state(b.url).ejections == 1 and book.all_down((b,))
    book.success(b.url)
    assert not book.all_down((b,))


class _Watcher:
    def __init__(self, watching: bool) -> None:
        self.watching = watching
        self.asked: list[str] = []

    def watches(self, url: str) -> bool:
        return self.watching

    def probe_soon(self, url: str) -> None:
        self.asked.append(url)


def test_unreachable_watched_endpoint_stays_out_until_a_probe_succeeds():
    book = HealthBook(base_cooldown=0.01)
    book.prober = watcher = _Watcher(True)
    (a,) = parse_endpoints("http://a:1/v1")
    book.failure(a.url, "connect timeout", severe=True)
    assert watcher.asked == [a.url]  # probed at once, off the schedule
    time.sleep(0.02)  # the cool-down is over: still out, the timer does not re-admit it
    assert book.all_down((a,))
    book.probe_failed(a.url, "health probe failed: ConnectTimeout")
    assert book.all_down((a,))
    book.probe_ok(a.url)
    assert not book.all_down((a,)) and book.state(a.url).ejections == 1


def test_unreachable_endpoint_without_a_health_route_comes_back_on_the_timer():
    book = HealthBook(base_cooldown=0.05)
    book.prober = _Watcher(True)
    (a,) = parse_endpoints("http://a:1/v1")
    book.failure(a.url, "refused", severe=True)
    book.probe_unknown(a.url)  # a gateway answered 404 at /health: reachable, nothing more known
    assert book.all_down((a,))  # the passive cool-down still runs
    time.sleep(0.06)
    assert not book.all_down((a,))
    book.prober = _Watcher(False)  # no prober watching (probes off): the timer alone, as before
    book.failure(a.url, "refused", severe=True)
    time.sleep(0.12)
    assert not book.all_down((a,))
