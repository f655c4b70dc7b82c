"""The routing policy interface: the factory's names, a policy plugged in with one line, and each
credential's own policy over statistics shared per endpoint URL."""

import random

import pytest

from deepseek_engine.errors import ConfigError
from deepseek_engine.health import HealthBook
from deepseek_engine.routing import (
    DEFAULT_POLICY,
    POLICIES,
    PowerOfTwo,
    Router,
    RoutingPolicy,
    ServerLoad,
    policy_class,
)
from deepseek_engine.routing.round_robin import RoundRobin
from deepseek_engine.settings import parse_endpoints, parse_settings

URLS = "http://a:1/v1, http://b:1/v1, http://c:1/v1"


def test_each_name_in_the_factory_builds_a_policy_honouring_the_interface():
    eps = list(parse_endpoints(URLS + ", http://d:1/v1 weight=3"))
    asked = []

    class Assessment:
        def __call__(self, e):
            asked.append(e)
            return {"a": (0.3, False), "b": (0.1, False), "c": (5.0, True)}.get(e.url[7], (0.2, False))

        def match(self, e):
            asked.append(e)
            return {"a": (900, 1000), "c": (1000, 1000)}.get(e.url[7], (0, 1000))

    assess = Assessment()
    assert DEFAULT_POLICY in POLICIES and set(POLICIES) == {"power_of_two", "round_robin", "prefix_affinity"}
    for name, cls in POLICIES.items():
        policy = policy_class(name)()
        assert isinstance(policy, RoutingPolicy) and type(policy) is cls
        for n in range(1, len(eps) + 1):
            for _ in range(20):
                ranked = policy.rank(eps[:n], assess)
                assert sorted(e.url for e in ranked) == sorted(e.url for e in eps[:n]), name  # each once
        assert set(asked) <= set(eps)  # asked about its candidates only
        assert isinstance(Router(HealthBook()).policy_for("scope", name), cls)
    assert isinstance(Router(HealthBook()).policy_for("scope"), PowerOfTwo)  # no name: the default


def test_a_class_without_rank_is_no_policy():
    class Nameless(RoutingPolicy):
        pass

    with pytest.raises(TypeError, match="rank"):
        Nameless()


def test_an_unknown_name_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=r"^routing_policy must be one of power_of_two, round_robin, prefix_affinity, "
                                          r"got 'least_conn'$"):
        policy_class("least_conn")
    with pytest.raises(ConfigError, match="must be one of power_of_two, round_robin, prefix_affinity"):
        Router(HealthBook()).order(parse_endpoints(URLS), "scope", "least_conn")


def test_a_toy_policy_plugs_in_with_one_line(monkeypatch):
    seen = {}

    class Cheapest(RoutingPolicy):
        """Every candidate by cost, nothing random: what a policy reads is enough for that."""

        def rank(self, candidates, assess):
            seen.update({e.url: assess(e) for e in candidates})
            return sorted(candidates, key=lambda e: assess(e)[0])

    monkeypatch.setitem(POLICIES, "cheapest", Cheapest)  # the one line

    settings = parse_settings({"endpoint_urls": URLS, "routing_policy": "cheapest"})
    a, b, c = settings.endpoints
    router = Router(HealthBook())
    router.observe_ttft(a.url, 0.3)
    router.observe_ttft(b.url, 0.1)
    router.observe_ttft(c.url, 0.2)
    router.observe_load(c.url, ServerLoad(running=8, waiting=9, kv=0.95, at=1e18))
    assert router.order(settings.endpoints, settings.scope, settings.routing_policy) == [b, a, c]
    assert seen == {e.url: router.assess(e, 0) for e in (a, b, c)}  # what the router knows
    assert seen[c.url][1] and not seen[a.url][1]  # c: saturated


def _rotations(eps, n):
    return [eps[k % len(eps):] + eps[:k % len(eps)] for k in range(n)]


def test_two_credentials_on_the_same_urls_each_get_their_own_policy_and_order():
    """One process serves every workspace: the statistics are per URL and shared, the policy is
    the credential's own, and neither credential's requests move the other's order."""
    rr = parse_settings({"endpoint_urls": URLS, "api_key": "key-one", "routing_policy": "round_robin"})
    p2c = parse_settings({"endpoint_urls": URLS.replace("/v1,", "/v1 weight=0.001,") + " weight=1000",
                          "api_key": "key-two", "routing_policy": "power_of_two"})
    assert [e.url for e in rr.endpoints] == [e.url for e in p2c.endpoints]  # the same servers

    def route(router, settings):
        return [e.url for e in router.order(settings.endpoints, settings.scope, settings.routing_policy)]

    def fresh():
        r = Router(HealthBook())
        for url, ttft in zip((e.url for e in rr.endpoints), (0.1, 0.2, 0.3), strict=True):
            r.observe_ttft(url, ttft)
        return r

    alone_rr, alone_p2c = fresh(), fresh()
    expected_rr = [route(alone_rr, rr) for _ in range(7)]
    expected_p2c = [route(alone_p2c, p2c) for _ in range(7)]
    a, b, c = (e.url for e in rr.endpoints)
    assert expected_rr == _rotations([a, b, c], 7)
    assert expected_p2c == [[c, a, b]] * 7  # weight=1000 on c: the load-aware choice

    shared = fresh()
    got_rr, got_p2c = [], []
    for _ in range(7):  # interleaved on one router, as two workspaces' traffic is
        got_rr.append(route(shared, rr))
        got_p2c.append(route(shared, p2c))
        got_p2c.append(route(shared, p2c))  # twice as much traffic: still no effect on the other
    assert got_rr == expected_rr
    assert got_p2c == [[c, a, b]] * 14
    assert type(shared.policy_for(rr.scope, "round_robin")) is RoundRobin
    assert type(shared.policy_for(p2c.scope, "power_of_two")) is PowerOfTwo

    # the statistics behind the costs are shared: requests of one credential load the server
    # for everyone
    a_of_rr = rr.endpoints[0]
    before = shared.cost(a_of_rr, 0)
    shared.started(p2c.endpoints[0].url)
    assert shared.cost(a_of_rr, 0) == 2 * before


def test_credentials_choosing_the_same_policy_keep_their_own_state():
    one = parse_settings({"endpoint_urls": URLS, "api_key": "key-one", "routing_policy": "round_robin"})
    two = parse_settings({"endpoint_urls": URLS, "api_key": "key-two", "routing_policy": "round_robin"})
    router = Router(HealthBook())
    urls = [e.url for e in one.endpoints]
    got_one, got_two = [], []
    for i in range(6):
        got_one.append([e.url for e in router.order(one.endpoints, one.scope, one.routing_policy)])
        if i % 2:  # the second credential routes half as often
            got_two.append([e.url for e in router.order(two.endpoints, two.scope, two.routing_policy)])
    assert got_one == _rotations(urls, 6)
    assert got_two == _rotations(urls, 3)  # from the start: the first credential's turns are its own


def test_a_router_given_one_policy_orders_every_credential_by_it():
    """What the benchmark and older tests rely on: Router(health, policy) compares policies."""
    fixed = RoundRobin()
    router = Router(HealthBook(), fixed)
    p2c = parse_settings({"endpoint_urls": URLS, "routing_policy": "power_of_two"})
    assert router.policy_for(p2c.scope, "power_of_two") is fixed
    urls = [e.url for e in p2c.endpoints]
    assert [[e.url for e in router.order(p2c.endpoints, p2c.scope, p2c.routing_policy)]
            for _ in range(3)] == _rotations(urls, 3)


def test_power_of_two_reads_nothing_but_what_the_interface_gives():
    """A policy is usable without a router: candidates and an assess function are all it needs."""
    a, b = parse_endpoints("http://a:1/v1, http://b:1/v1")
    costs = {a.url: (1.0, False), b.url: (0.5, False)}
    p2c = PowerOfTwo(random.Random(3))
    assert [p2c.rank([a, b], lambda e: costs[e.url])[0] for _ in range(50)] == [b] * 50
    costs[b.url] = (0.5, True)  # saturated: drawn only when nothing else has room
    assert [p2c.rank([a, b], lambda e: costs[e.url])[0] for _ in range(50)] == [a] * 50
