"""When every endpoint is set aside: the error says why (as the failure it was), a lone endpoint
back from a restart serves the next request, and a first-token timeout is not waited twice."""

import threading
import time

import pytest

from deepseek_engine import ChatClient, parse_settings
from deepseek_engine.errors import FirstTokenTimeout, RateLimitError, UnreachableError
from deepseek_engine.health import FRESH, HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.retry import RetryBudget, RetryPolicy
from deepseek_engine.routing import Router
from deepseek_sim import SimConfig, Simulator
from tests.blackhole import Blackhole
from tests.wire.wireutil import WANT, make_client, run


def _chats(sim):
    return sum(1 for r in sim.requests if r.path.endswith("/chat/completions"))


def test_a_lone_rate_limited_endpoint_stays_a_rate_limit_with_its_retry_after(registry):
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        sim.inject("status", count=100, status=429, headers={"Retry-After": "3"})
        client = make_client(sim.base_url, registry)
        for _ in range(4):  # the first meets the 429s, the next are refused at once: same kind
            t = time.monotonic()
            with pytest.raises(RateLimitError) as e:
                run(client)
            assert e.value.retry_after is not None and e.value.retry_after > 0
            assert "rate limiting" in str(e.value)
        assert time.monotonic() - t < 0.1  # refused at once: the server said when to come back
        assert client.health.all_down(client.settings.endpoints)


def test_a_lone_endpoint_back_from_a_restart_serves_the_next_request(registry):
    sim = Simulator(SimConfig(served_model="deepseek-r1")).start()
    book = HealthBook()
    # a prober watching with a long interval: no probe comes to re-admit it during the test
    prober = Prober(book, health_interval=60, metrics_interval=0, timeout=1)
    try:
        settings = parse_settings({"endpoint_urls": sim.base_url, "timeouts": "connect=1"})
        client = ChatClient(settings, registry=registry, health=book, router=Router(book), prober=prober,
                            policy=RetryPolicy(backoff_base=0.01, backoff_cap=0.02, budget=RetryBudget(cap=100)))
        assert run(client)[0] == WANT
        sim.stop()  # restarting: refused
        with pytest.raises(UnreachableError, match="refused"):
            run(client)
        t = time.monotonic()
        with pytest.raises(UnreachableError, match="refused"):  # confirmed moments ago: at once
            run(client)
        assert time.monotonic() - t < 0.1
        sim.start()  # back on the same port, long before the next probe
        time.sleep(FRESH)
        assert run(client)[0] == WANT  # tried although set aside: it answers
        assert book.available(sim.base_url, settings.scope, time.monotonic())
    finally:
        prober.stop()
        sim.stop()


def test_one_trial_at_a_time_the_others_are_refused_at_once(registry):
    with Blackhole() as hole:
        hole.check()
        client = make_client(hole.base_url, registry, timeouts="connect=0.5")
        with pytest.raises(UnreachableError):
            run(client)  # set aside
        time.sleep(FRESH)
        outcomes: list = []

        def one():
            t = time.monotonic()
            try:
                run(client)
            except UnreachableError as e:
                outcomes.append((time.monotonic() - t, e))

        trial = threading.Thread(target=one)
        trial.start()
        time.sleep(0.1)  # the trial is connecting (the blackhole drops its SYN)
        one()
        trial.join()
        took = sorted(t for t, _ in outcomes)
        assert took[0] < 0.1 and took[1] >= 0.4, took  # the other was refused at once


def test_a_first_token_timeout_on_a_lone_endpoint_is_not_waited_twice(registry):
    with Simulator(SimConfig(served_model="deepseek-r1", ttft=5)) as sim:
        client = make_client(sim.base_url, registry, timeouts="first_token=0.8")
        t = time.monotonic()
        with pytest.raises(FirstTokenTimeout):
            run(client)
        assert time.monotonic() - t < 1.5
        assert _chats(sim) == 1
