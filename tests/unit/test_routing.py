import random

from deepseek_engine.health import HealthBook
from deepseek_engine.routing import PowerOfTwo, Router, ServerLoad, parse_metrics
from deepseek_engine.routing.power_of_two import FULL_SCAN_MAX
from deepseek_engine.routing.round_robin import RoundRobin
from deepseek_engine.settings import parse_endpoints

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.9
"""
SGLANG = """sglang:num_running_reqs{model_name="m",tp_rank="0"} 4
sglang:num_queue_reqs{model_name="m",tp_rank="0"} 1
sglang:token_usage{model_name="m",tp_rank="0"} 0.25
"""


def test_parse_vllm_and_sglang_metrics():
    v = parse_metrics(VLLM, now=1.0)
    assert (v.running, v.waiting, v.kv) == (5.0, 7.0, 0.9) and v.saturated
    s = parse_metrics(SGLANG, now=1.0)
    assert (s.running, s.waiting, s.kv) == (4.0, 1.0, 0.25) and not s.saturated
    assert parse_metrics("# nothing useful\nprocess_cpu_seconds_total 3\n") is None


def _router(policy=None):
    return Router(HealthBook(), policy or PowerOfTwo(random.Random(1)))


def test_p2c_prefers_lower_cost_and_respects_weight():
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1 weight=4")
    r = _router()
    r.observe_ttft(a.url, 0.1)
    r.observe_ttft(b.url, 0.1)
    assert r.cost(b, 0) < r.cost(a, 0)
    picks = [r.order((a, b))[0] for _ in range(200)]
    assert picks.count(b) == 200  # with two candidates P2C compares both


def test_saturated_server_avoided_while_others_have_room():
    a, b, c = parse_endpoints("http://a:1/v1, http://b:1/v1, http://c:1/v1")
    r = _router()
    for e in (a, b, c):
        r.observe_ttft(e.url, 0.1)
    r.observe_load(c.url, ServerLoad(running=8, waiting=9, kv=0.95, at=1e18))
    firsts = [r.order((a, b, c))[0] for _ in range(300)]
    assert firsts.count(c) == 0
    assert r.order((a, b, c))[-1] == c  # still there for failover


def test_a_draw_of_two_with_one_replica_left_with_room_takes_it():
    """A pure draw of two (``full_scan_max=0``, the benchmark's pre-issue-15 baseline) once drew
    its second candidate from an empty list when every replica but one was saturated."""
    a, b, c = parse_endpoints("http://a:1/v1, http://b:1/v1, http://c:1/v1")
    r = Router(HealthBook(), PowerOfTwo(random.Random(5), full_scan_max=0))
    for e in (a, b, c):
        r.observe_ttft(e.url, 0.1)
    for e in (b, c):
        r.observe_load(e.url, ServerLoad(running=8, waiting=9, kv=0.95, at=1e18))
    assert {r.order((a, b, c))[0] for _ in range(50)} == {a}


def test_stale_metrics_are_ignored():
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1")
    r = _router()
    r.observe_ttft(a.url, 0.1)
    r.observe_ttft(b.url, 0.1)
    r.observe_load(b.url, ServerLoad(running=8, waiting=9, kv=0.95, at=-100.0))
    assert r.cost(a, 0) == r.cost(b, 0)


def test_peak_ewma_jumps_up_and_decays_down():
    (a,) = parse_endpoints("http://a:1/v1")
    r = _router()
    r.observe_ttft(a.url, 0.1)
    r.observe_ttft(a.url, 1.0)
    assert r._s(a.url).ewma == 1.0
    r._s(a.url).ewma_at -= 100  # long ago: the new sample dominates
    r.observe_ttft(a.url, 0.1)
    assert r._s(a.url).ewma < 0.2


def test_in_flight_raises_cost():
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1")
    r = _router()
    for e in (a, b):
        r.observe_ttft(e.url, 0.1)
    r.started(a.url)
    r.started(a.url)
    assert r.order((a, b))[0] == b
    r.finished(a.url)
    r.finished(a.url)
    assert r.in_flight(a.url) == 0


def test_priority_groups_and_ejection():
    a, b = parse_endpoints("http://a:1/v1 zone=eu, http://b:1/v1 zone=us priority=1")
    book = HealthBook()
    r = Router(book, RoundRobin())
    assert [e.url for e in r.order((a, b))] == [a.url, b.url]
    book.failure(a.url, "refused", severe=True)
    assert r.order((a, b))[0] == b  # the backup zone only when the primary is out


class _CountingRandom(random.Random):
    draws = 0

    def choices(self, *a, **kw):
        self.draws += 1
        return super().choices(*a, **kw)


def test_p2c_draws_two_distinct_candidates_in_two_draws_whatever_the_weights():
    heavy, light = parse_endpoints("http://a:1/v1 weight=1000, http://b:1/v1 weight=0.001")
    rng = _CountingRandom(7)
    p2c = PowerOfTwo(rng)
    for _ in range(200):
        a, b = p2c._two([heavy, light])
        assert {a, b} == {heavy, light}
    assert rng.draws == 400  # redrawing until different took a million draws per choice here
    r = Router(HealthBook(), p2c)
    assert r.order((heavy, light))[0] == heavy


def test_small_fleet_compares_every_candidate_large_fleet_draws_two():
    """Up to FULL_SCAN_MAX endpoints the cheapest always wins (a draw of two left it out half the
    time with four); above, power of two choices: the cheapest of 20 wins only when drawn."""
    small = parse_endpoints(", ".join(f"http://s{i}:1/v1" for i in range(FULL_SCAN_MAX)))
    r = _router()
    for i, e in enumerate(small):
        r.observe_ttft(e.url, 0.1 + i / 100)
    assert {r.order(small)[0] for _ in range(200)} == {small[0]}
    large = parse_endpoints(", ".join(f"http://l{i}:1/v1" for i in range(20)))
    for i, e in enumerate(large):
        r.observe_ttft(e.url, 0.1 + i / 100)
    firsts = [r.order(large)[0] for _ in range(400)]
    assert 20 < firsts.count(large[0]) < 80  # drawn in 2 of 20 draws: about 10%


def test_equal_costs_are_spread_not_all_sent_to_the_first_listed():
    a, b, c = parse_endpoints("http://a:1/v1, http://b:1/v1, http://c:1/v1")
    r = _router()  # nothing measured: every cost is the same
    firsts = [r.order((a, b, c))[0] for _ in range(300)]
    assert all(firsts.count(e) > 50 for e in (a, b, c)), [firsts.count(e) for e in (a, b, c)]


def test_a_fast_replica_with_room_in_its_batch_beats_an_idle_slow_one():
    """A server batches: while its learnt capacity has room, a request starts at once and the
    others slow it only a little, so the 3x faster replica keeps winning with requests in flight
    until its batch is full (then the slow one with room is next)."""
    fast, slow = parse_endpoints("http://fast:1/v1, http://slow:1/v1")
    r = _router()
    r.observe_ttft(fast.url, 0.05)
    r.observe_ttft(slow.url, 0.15)
    for e in (fast, slow):  # each scraped at 4 of 8 slots (KV half full): capacity 8 learnt
        r.observe_load(e.url, ServerLoad(running=4, waiting=0, kv=0.5, at=1e18))
        r.observe_load(e.url, ServerLoad(running=0, waiting=0, kv=0.0, at=1e18))
    for n in range(7):
        assert r.order((fast, slow))[0] == fast, n
        r.started(fast.url)
    r.started(fast.url)  # the eighth: full
    assert r.order((fast, slow))[0] == slow
