import time

import tenacity

from deepseek_engine.errors import RateLimitError, ServerError
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryBudget, WaitFailover
from deepseek_engine.settings import parse_endpoints


def test_budget_allows_about_ten_percent_plus_a_floor():
    b = RetryBudget(ratio=0.1, min_per_second=0.0, cap=5)
    b._tokens = 0
    for _ in range(100):
        b.record_request()
    spent = sum(b.try_spend() for _ in range(50))
    assert spent == 5  # capped: 100 requests earn 10, the cap keeps 5


def test_budget_floor_refills_with_time():
    b = RetryBudget(ratio=0.0, min_per_second=100.0, cap=3)
    b._tokens = 0
    b._at = time.monotonic() - 1
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
    assert 0 <= w(_state(2, ServerError("x"))) <= 4


def test_ejection_passive_and_growing():
    book = HealthBook(threshold=3, base_cooldown=1, max_cooldown=8)
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1")
    for _ in range(2):
        book.failure(a.url, "500")
    assert book.state(a.url).available(time.monotonic())
    book.failure(a.url, "500")
    assert not book.state(a.url).available(time.monotonic())
    assert book.order((a, b))[0] == b
    book.failure(a.url, "500", severe=True)  # same outage: no escalation
    assert book.state(a.url).ejections == 1
    book.state(a.url).ejected_until = 0
    book.failure(b.url, "refused", severe=True)
    assert book.state(b.url).ejections == 1 and book.all_down((b,))
    book.success(b.url)
    assert not book.all_down((b,))
