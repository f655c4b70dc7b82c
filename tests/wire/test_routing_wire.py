"""Routing over real sockets: traffic follows real speed and load; ejected and backup endpoints."""

import threading
import time

import pytest

from deepseek_engine import ChatClient, build_body, parse_settings
from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.retry import RetryPolicy
from deepseek_engine.routing import Router
from deepseek_sim import SimConfig, Simulator

BODY = build_body("deepseek-r1", [{"role": "user", "content": "hi"}], {"max_tokens": 4})


def fleet(*configs):
    return [Simulator(SimConfig(served_model="deepseek-r1", **c)).start() for c in configs]


def client_for(sims, registry, suffixes=None, metrics=0.05, health=0.05):
    suffixes = suffixes or [""] * len(sims)
    settings = parse_settings({"endpoint_urls": ", ".join(f"{s.base_url} {x}".strip()
                                                          for s, x in zip(sims, suffixes, strict=True))})
    book = HealthBook(base_cooldown=0.2)
    router = Router(book)
    prober = Prober(book, router, health_interval=health, metrics_interval=metrics)
    c = ChatClient(settings, registry=registry, health=book, router=router, prober=prober,
                   policy=RetryPolicy(backoff_base=0.001, backoff_cap=0.01))
    return c, prober


def load(client, n, workers=6):
    errors = []

    def work(k):
        for _ in range(k, n, workers):
            try:
                list(client.stream(BODY))
            except Exception as e:  # noqa: BLE001 - asserted below
                errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def served(sim, since=0):
    return sum(1 for r in sim.requests[since:] if r.path.endswith("/chat/completions"))


def test_slow_and_saturated_endpoints_get_proportionally_less(registry):
    fast, slow, busy = fleet(dict(ttft=0.01), dict(ttft=0.03), dict(ttft=0.01, kv_usage=0.95, num_waiting=9))
    try:
        client, prober = client_for([fast, slow, busy], registry)
        time.sleep(0.2)  # the first scrape
        assert load(client, 150) == []
        counts = [served(s) for s in (fast, slow, busy)]
        assert counts[0] > counts[1] > counts[2], counts
        assert counts[2] <= 10, counts  # saturated: avoided while others have room
    finally:
        prober.stop()
        for s in (fast, slow, busy):
            s.stop()


def test_ejected_endpoint_gets_nothing_until_healthy(registry):
    a, b = fleet(dict(), dict())
    try:
        client, prober = client_for([a, b], registry)
        b.healthy = False  # /health 503: draining
        time.sleep(0.2)
        before = served(b)
        assert load(client, 40) == []
        assert served(b) == before
        b.healthy = True
        time.sleep(0.3)  # the next probe re-admits it
        assert load(client, 40) == []
        assert served(b) > before
    finally:
        prober.stop()
        a.stop()
        b.stop()


def test_backup_zone_only_when_primary_is_out(registry):
    primary, backup = fleet(dict(), dict())
    try:
        client, prober = client_for([primary, backup], registry, ["zone=eu", "zone=us priority=1"])
        assert load(client, 20) == []
        assert served(backup) == 0
        primary.stop()
        assert load(client, 20) == []  # failover: no user-visible error
        assert served(backup) >= 20
    finally:
        prober.stop()
        backup.stop()


@pytest.mark.parametrize("status", [404, 500, 502])
def test_metrics_failures_degrade_to_local_signals(registry, status):
    # /metrics missing (404) or failing (a gateway's 500/502 page), scraped for real: routing
    # still follows measured speed and no load reading is kept
    # a gap wide enough that a busy host's scheduling noise (tens of ms) cannot close it, and
    # fewer workers than the gap's ratio, so the fast replica's own queue never outweighs it
    fast, slow = fleet(dict(ttft=0.005, metrics_status=status), dict(ttft=0.15, metrics_status=status))
    try:
        client, prober = client_for([fast, slow], registry, metrics=0.05)
        assert load(client, 80, workers=3) == []
        assert any(r.path == "/metrics" for r in fast.requests), "the prober scraped"
        assert served(fast) > 2 * served(slow), (served(fast), served(slow))
        assert all(client.router._s(e.url).load is None for e in client.settings.endpoints)
    finally:
        prober.stop()
        fast.stop()
        slow.stop()


def test_each_credential_routes_by_its_own_policy_over_shared_servers(registry):
    """Two workspaces' credentials on the same two servers, one process: the round-robin one
    alternates (model listing and chat alike), the load-aware one keeps to the server its weights
    favour, and interleaving them changes neither."""
    one, two = fleet(dict(), dict())
    try:
        urls = f"{one.base_url}, {two.base_url}"
        book = HealthBook()
        router = Router(book)

        def client(**creds):
            return ChatClient(parse_settings({"endpoint_urls": urls, **creds}), registry=registry, health=book,
                              router=router, prober=None, policy=RetryPolicy(backoff_base=0.001, backoff_cap=0.01))

        rr = client(api_key="key-rr", routing_policy="round_robin")
        p2c = client(api_key="key-p2c", routing_policy="power_of_two",
                     endpoint_urls=f"{one.base_url} weight=0.001, {two.base_url} weight=1000")
        assert rr.scope != p2c.scope
        rr_went, p2c_went = [], []
        for i in range(8):
            if i % 3 == 0:
                rr_went.append(rr.list_models()[0].url)
            else:
                list(rr.stream(BODY))
                rr_went.append(rr.last_endpoint.url)
            list(p2c.stream(BODY))
            p2c_went.append(p2c.last_endpoint.url)
        assert rr_went == [one.base_url, two.base_url] * 4
        assert p2c_went == [two.base_url] * 8
        assert router.in_flight(one.base_url) == router.in_flight(two.base_url) == 0
    finally:
        one.stop()
        two.stop()


def test_small_fleet_sends_to_the_fastest_replica_while_it_has_room(registry):
    """Four replicas, one fast with room to spare: a draw of two leaves the fast one out half the
    time, so power of two choices sent about half of these one-at-a-time requests to the slow
    ones. On a fleet this small the best of all candidates wins (a few microseconds)."""
    sims = fleet(dict(ttft=0.005, max_running=8), dict(ttft=0.04), dict(ttft=0.04), dict(ttft=0.04))
    fast = sims[0]
    try:
        client, prober = client_for(sims, registry)
        time.sleep(0.2)
        for _ in range(40):  # until each is measured (an unmeasured one looks as good as the best)
            if all(served(s) for s in sims):
                break
            list(client.stream(BODY))
        before = served(fast)
        for _ in range(30):
            list(client.stream(BODY))
        assert served(fast) - before == 30, [served(s) for s in sims]
    finally:
        prober.stop()
        for s in sims:
            s.stop()
