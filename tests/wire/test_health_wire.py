"""Health over real sockets: a blackholed endpoint, a re-saved TLS credential, a lone healthy
endpoint's 429. Each with the background prober as the plugin runs it."""

import time

import pytest

from deepseek_engine import ChatClient, parse_settings
from deepseek_engine.errors import TLSError
from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.retry import RetryPolicy
from deepseek_engine.routing import Router
from deepseek_sim import SimConfig, Simulator
from tests.blackhole import Blackhole
from tests.wire.wireutil import WANT, free_port, make_client, run

CONNECT = 0.5


def _watched_client(urls, registry, book, prober, **creds):
    settings = parse_settings({"endpoint_urls": urls, "timeouts": f"connect={CONNECT} idle=2 first_token=3",
                               **creds})
    return ChatClient(settings, registry=registry, health=book, router=Router(book), prober=prober,
                      policy=RetryPolicy(backoff_base=0.001, backoff_cap=0.01))


def _chats(sim, since=0):
    return sum(1 for r in sim.requests[since:] if r.path.endswith("/chat/completions"))


def _wait_for(cond, seconds):
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def test_blackholed_endpoint_costs_one_connect_timeout_then_is_skipped_until_healthy(registry):
    primary = Simulator(SimConfig(served_model="deepseek-r1")).start()
    backup = Simulator(SimConfig(served_model="deepseek-r1")).start()
    # the cool-down (0.2 s) is shorter than the probe interval (1 s), as 5 s and 10 s in production
    book = HealthBook(base_cooldown=0.2)
    prober = Prober(book, health_interval=1.0, metrics_interval=0, timeout=0.3)
    try:
        client = _watched_client(f"{primary.base_url}, {backup.base_url} priority=1", registry, book, prober)
        assert _wait_for(lambda: any(r.path == "/health" for r in primary.requests), 2)
        assert run(client)[0] == WANT and _chats(primary) == 1 and _chats(backup) == 0
        port = primary.port
        primary.stop()  # the host dies: its address now drops every SYN
        attempts = []
        failure = book.failure
        book.failure = lambda url, reason, **kw: (attempts.append(url), failure(url, reason, **kw))
        with Blackhole(port) as hole:
            hole.check()
            costs = []
            t_end = time.monotonic() + 2.5  # several cool-downs and two probe rounds
            while time.monotonic() < t_end:
                t = time.monotonic()
                assert run(client)[0] == WANT  # the backup answers: no user-visible error
                costs.append(time.monotonic() - t)
        assert attempts == [primary.base_url]  # one attempt, once
        assert CONNECT * 0.8 <= costs[0] <= CONNECT + 0.5, costs[0]  # one connect timeout, no more
        assert max(costs[1:]) < 0.3 and len(costs) > 10, costs  # then skipped, at no cost
        assert book.state(primary.base_url).probe_down  # out until a probe answers 200
        before = _chats(backup)
        primary.start()  # back (same port): the next probe re-admits it
        assert _wait_for(lambda: book.state(primary.base_url).available(time.monotonic()), 2.0)
        assert run(client)[0] == WANT and _chats(primary) == 2 and _chats(backup) == before
    finally:
        prober.stop()
        primary.stop()
        backup.stop()


def test_a_wrong_ca_sets_the_endpoint_aside_for_its_credential_alone(registry):
    """One workspace's wrong CA bundle: its requests keep saying so, while another credential on
    the same URL (and the prober, whichever client it probes through) finds the server healthy."""
    from tests.security.certs import make_pki, server_context

    pki = make_pki()
    book = HealthBook()
    prober = Prober(book, health_interval=0.1, metrics_interval=0, timeout=1.0)
    sim = Simulator(SimConfig(served_model="deepseek-r1"), ssl_context=server_context(pki.server)).start()
    try:
        right = _watched_client(sim.base_url, registry, book, prober, tls_mode="custom",
                                tls_ca_bundle=pki.ca.cert)
        assert run(right)[0] == WANT
        wrong = _watched_client(sim.base_url, registry, book, prober, tls_mode="custom",
                                tls_ca_bundle=pki.rogue_ca.cert)  # probed through it from now on
        for _ in range(3):  # the TLS explanation every time, also once set aside
            with pytest.raises(TLSError, match="tls_ca_bundle"):
                run(wrong)
            assert run(right)[0] == WANT
        time.sleep(0.4)  # probe rounds through the wrong CA: not held against the server
        assert not book.state(sim.base_url).probe_down
        assert run(right)[0] == WANT
        fixed = _watched_client(sim.base_url, registry, book, prober, tls_mode="custom",
                                tls_ca_bundle=pki.ca.cert + "\n")  # saved again, corrected
        assert run(fixed)[0] == WANT
    finally:
        prober.stop()
        sim.stop()


def test_lone_healthy_endpoint_429_is_retried_after_retry_after_not_at_once(registry):
    with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
        dead = f"http://127.0.0.1:{free_port()}/v1"
        client = make_client([dead, sim.base_url], registry)
        client.health.failure(dead, "refused", severe=True)  # ejected: one endpoint left
        sim.inject("status", status=429, headers={"Retry-After": "0.3"})
        t = time.monotonic()
        assert run(client)[0] == WANT
        assert time.monotonic() - t >= 0.3  # Retry-After honoured: no instant second 429
        assert _chats(sim) == 2


def test_a_blackholed_endpoint_does_not_hold_up_the_probes_of_the_others():
    """Endpoints are probed side by side: with two blackholed endpoints a probe round takes one
    probe timeout, not one per endpoint, and the healthy endpoint behind them is probed in it."""
    live = Simulator(SimConfig(served_model="deepseek-r1")).start()
    book = HealthBook()
    # a schedule far off: only the probes asked for below run, each on its endpoint's own worker
    prober = Prober(book, health_interval=60, metrics_interval=0, timeout=0.6)
    try:
        with Blackhole() as a, Blackhole() as b:
            a.check()
            eps = parse_settings({"endpoint_urls": f"{a.base_url}, {b.base_url}, {live.base_url}"}).endpoints
            prober.watch(eps)
            t = time.monotonic()
            for e in eps:
                prober.probe_soon(e.url)

            def judged():
                return (book.state(a.base_url).probe_down and book.state(b.base_url).probe_down
                        and any(r.path == "/health" for r in live.requests))

            deadline = t + 5
            while not judged() and time.monotonic() < deadline:
                time.sleep(0.01)
            took = time.monotonic() - t
        assert any(r.path == "/health" for r in live.requests)
        assert 0.5 <= took < 1.0, f"{took:.2f}s: probed one after another?"
        assert book.state(a.base_url).probe_down and book.state(b.base_url).probe_down
        assert book.state(live.base_url).available(time.monotonic())
    finally:
        prober.stop()
        live.stop()
