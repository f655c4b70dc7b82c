"""Prefix affinity over real sockets: a conversation's next turn follows its prefix within the load
guard, and only the endpoint that really served a prompt is recorded as holding it."""

from deepseek_engine import ChatClient, build_body, parse_settings
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryPolicy
from deepseek_engine.routing import Router
from deepseek_sim import SimConfig, Simulator

SYSTEM = "You answer questions about the Example Corp handbook, citing its sections. " * 120


def body(n):
    msgs = [{"role": "system", "content": SYSTEM}]
    for i in range(n):
        msgs.append({"role": "user", "content": f"question {i}"})
        if i < n - 1:
            msgs.append({"role": "assistant", "content": f"answer {i}"})
    return build_body("deepseek-r1", msgs, {"max_tokens": 4})


def clients(urls, registry, router, *policies):
    return [ChatClient(parse_settings({"endpoint_urls": urls, "api_key": f"key-{p}", "routing_policy": p}),
                       registry=registry, health=router.health, router=router, prober=None,
                       policy=RetryPolicy(backoff_base=0.001, backoff_cap=0.01)) for p in policies]


def test_the_next_turn_goes_where_the_conversation_is_cached_while_within_the_guard(registry):
    fast = Simulator(SimConfig(served_model="deepseek-r1", ttft=0.1)).start()
    slower = Simulator(SimConfig(served_model="deepseek-r1", ttft=0.15)).start()  # 1.5x: within the guard
    try:
        router = Router(HealthBook())
        affinity, load = clients(f"{fast.base_url}, {slower.base_url}", registry, router,
                                 "prefix_affinity", "power_of_two")
        # both measured, each by a client of its own: warm-ups through the two-endpoint clients
        # all went to the slower one now and then (a tie is drawn at random), leaving the fast
        # one unmeasured and priced as the slower one
        for sim in (fast, slower):
            (one,) = clients(sim.base_url, registry, router, "power_of_two")
            for _ in range(2):
                list(one.stream(body(1) | {"messages": [{"role": "user", "content": "warm-up"}]}))
        assert router._s(fast.base_url).ewma < router._s(slower.base_url).ewma
        for _ in range(8):  # the fast replica busy for a moment: turn 1 lands on the slower one
            router.started(fast.base_url)
        list(affinity.stream(body(1)))
        list(load.stream(body(1)))
        assert affinity.last_endpoint.url == load.last_endpoint.url == slower.base_url
        for _ in range(8):
            router.finished(fast.base_url)

        for n in (2, 3):
            list(affinity.stream(body(n)))
            assert affinity.last_endpoint.url == slower.base_url, n  # its history is cached there
            list(load.stream(body(n)))
            assert load.last_endpoint.url == fast.base_url, (n, router.cost(load.settings.endpoints[0], 0),
                                                             router.cost(load.settings.endpoints[1], 0))

        for _ in range(3):  # the slower one busy: 6x the fast one's cost, beyond the guard (4x)
            router.started(slower.base_url)
        list(affinity.stream(body(4)))
        assert affinity.last_endpoint.url == fast.base_url
        for _ in range(3):
            router.finished(slower.base_url)
    finally:
        fast.stop()
        slower.stop()


def test_only_the_endpoint_that_sent_the_first_token_holds_the_prompt(registry):
    failing = Simulator(SimConfig(served_model="deepseek-r1")).start()
    good = Simulator(SimConfig(served_model="deepseek-r1", ttft=0.02)).start()
    try:
        router = Router(HealthBook())
        (c,) = clients(f"{failing.base_url}, {good.base_url}", registry, router, "prefix_affinity")
        router.observe_ttft(failing.base_url, 0.001)
        router.observe_ttft(good.base_url, 1.0)  # the failing one is tried first
        failing.inject("status", status=503)
        list(c.stream(body(2)))
        assert c.last_endpoint.url == good.base_url
        assert router.prefixes.held(failing.base_url) == 0
        assert router.prefixes.held(good.base_url) > len(SYSTEM) // 5
    finally:
        failing.stop()
        good.stop()
