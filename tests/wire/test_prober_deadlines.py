"""Whole-call deadlines for the background calls: a /health, /metrics or /v1/models that trickles
(one byte at a time, each well within a per-read timeout) fails at its deadline, and one endpoint's
slow probe holds no other endpoint's probes."""

import time

import pytest

from deepseek_engine import ChatClient, parse_settings
from deepseek_engine.auth import OAuth2ClientCredentials
from deepseek_engine.errors import ConnectError
from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.retry import RetryBudget, RetryPolicy
from deepseek_engine.routing import Router
from deepseek_sim import SimConfig, Simulator
from tests.loopback import Loopback, response

EVERY = 0.4  # seconds between bytes: each read gets one well within any per-read timeout
LASTS = 12.0  # seconds a trickle goes on (then the connection is held a little and closed)


def trickle(answer: bytes):
    """``answer`` one byte every ``EVERY`` seconds, status line included, for ``LASTS`` seconds."""
    for b in answer[: int(LASTS / EVERY)]:
        yield EVERY
        yield bytes([b])


def _trickling(path_end: str, body: bytes = b"{}"):
    """A Loopback answer that trickles requests whose path ends with ``path_end``; 404 otherwise."""
    def answer(req):
        if req.path.endswith(path_end):
            return trickle(response(200, body + b" " * 200))
        return response(404, b"{}")
    return answer


def _endpoint(url: str):
    return parse_settings({"endpoint_urls": url}).endpoints[0]


def _took(call) -> tuple[object, float]:
    t = time.monotonic()
    out = call()
    return out, time.monotonic() - t


def _wait_for(cond, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


@pytest.mark.parametrize("through", ["the prober's own client", "a pooled client"])
def test_a_trickling_health_fails_its_probe_at_the_deadline(registry, through):
    book = HealthBook()
    prober = Prober(book, health_interval=0, metrics_interval=0, timeout=1.0)
    with Loopback(_trickling("/health")) as srv:
        ep = _endpoint(srv.base_url)
        prober.watch((ep,), registry.get(("plain",)) if through == "a pooled client" else None)
        verdict, took = _took(lambda: prober.probe(ep))
    assert verdict is False and book.state(ep.url).probe_down
    assert took < 4.0, f"{took:.1f}s: a per-read timeout, not a deadline for the whole call?"


def test_a_trickling_metrics_scrape_ends_at_the_deadline():
    book = HealthBook()
    router = Router(book)
    prober = Prober(book, router, health_interval=0, metrics_interval=0, timeout=1.0)
    with Loopback(_trickling("/metrics", b"vllm:num_requests_running 3\n")) as srv:
        ep = _endpoint(srv.base_url)
        prober.watch((ep,))
        _, took = _took(lambda: prober.scrape(ep))
    assert router._s(ep.url).load is None
    assert took < 4.0, f"{took:.1f}s"


def test_a_trickling_models_list_fails_at_its_deadline(registry):
    models = b'{"object":"list","data":[{"id":"deepseek-r1"}]}'
    with Loopback(_trickling("/models", models)) as srv:
        settings = parse_settings({"endpoint_urls": srv.base_url, "timeouts": "connect=1 first_token=2"})
        client = ChatClient(settings, registry=registry, health=HealthBook(), prober=None,
                            policy=RetryPolicy(attempts=1, budget=RetryBudget()))
        t = time.monotonic()
        with pytest.raises(ConnectError, match="/models.* within 2s") as e:
            client.list_models()
        took = time.monotonic() - t
    assert e.value.endpoint == settings.endpoints[0].name
    assert took < 5.0, f"{took:.1f}s"


def test_one_endpoints_trickling_health_does_not_hold_another_endpoints_probes():
    """A trickles every /health; B goes down and comes back on the same port: B's probes see both
    within a couple of probe intervals, whatever A's probes are doing."""
    book = HealthBook()
    prober = Prober(book, health_interval=0.25, metrics_interval=0, timeout=5.0)
    b = Simulator(SimConfig(served_model="deepseek-r1")).start()
    try:
        with Loopback(_trickling("/health")) as a:
            eps = parse_settings({"endpoint_urls": f"{a.base_url}, {b.base_url}"}).endpoints
            prober.watch(eps)
            assert _wait_for(lambda: any(r.path == "/health" for r in b.requests), 2.0)
            b.stop()
            assert _wait_for(lambda: book.state(b.base_url).probe_down, 2.0), "B's stop not seen"
            b.start()  # back on the same port
            t = time.monotonic()
            assert _wait_for(lambda: book.state(b.base_url).available(time.monotonic()), 2.0)
            took = time.monotonic() - t
    finally:
        prober.stop()
        b.stop()
    assert took < 2.0


def test_a_probe_asked_for_at_once_is_not_held_by_another_endpoints_probe():
    """Real traffic could not connect to B: B is probed at once (probe_soon), while A's scheduled
    probe is still trickling."""
    book = HealthBook()
    prober = Prober(book, health_interval=60.0, metrics_interval=0, timeout=5.0)  # none on schedule
    with Simulator(SimConfig(served_model="deepseek-r1")) as b, Loopback(_trickling("/health")) as a:
        try:
            eps = parse_settings({"endpoint_urls": f"{a.base_url}, {b.base_url}"}).endpoints
            prober.watch(eps)
            prober.probe_soon(a.base_url)
            assert _wait_for(lambda: a.requests, 2.0)  # A's probe is in flight, trickling
            probed = sum(r.path == "/health" for r in b.requests)
            book.failure(b.base_url, "connection refused", severe=True)  # asks for a probe of B now
            assert book.state(b.base_url).probe_down
            assert _wait_for(lambda: book.state(b.base_url).available(time.monotonic()), 2.0), \
                "B's probe waited for A's"
            assert sum(r.path == "/health" for r in b.requests) > probed
        finally:
            prober.stop()


def test_a_trickling_oauth2_token_endpoint_fails_at_its_deadline():
    """The token fetch holds the credential's lock (concurrent callers wait for its token): a token
    endpoint that trickles must not hold it, nor the request, past the fetch's timeout."""
    token = b'{"access_token":"tok","token_type":"Bearer","expires_in":3600}'
    with Loopback(_trickling("/token", token)) as idp:
        source = OAuth2ClientCredentials(f"{idp.base_url}/token", "client", "secret", timeout=1.0)
        t = time.monotonic()
        with pytest.raises(ConnectError, match="OAuth2 token endpoint.*timed out") as e:
            source.headers()
        took = time.monotonic() - t
    assert "secret" not in str(e.value)
    assert took < 4.0, f"{took:.1f}s: a per-read timeout, not a deadline for the whole fetch?"
