"""The active health probe: what each /health answer means, where it is asked, which client asks."""

import threading
import time

import httpx
import pytest

from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.settings import parse_endpoints


def _client(answer) -> httpx.Client:
    """A client whose every request gets ``answer(request)``: a status, or an exception raised."""
    def handler(request: httpx.Request) -> httpx.Response:
        out = answer(request)
        if isinstance(out, Exception):
            raise out
        return httpx.Response(out)
    return httpx.Client(transport=httpx.MockTransport(handler))


def _prober(answer, url="http://gpu-1:8000/v1"):
    book = HealthBook()
    prober = Prober(book, health_interval=0, metrics_interval=0)  # no thread: probes run by hand
    (ep,) = parse_endpoints(url)
    prober.watch((ep,), _client(answer))
    return book, prober, ep


@pytest.mark.parametrize("answer,verdict", [
    (200, True),
    (503, False),  # loading weights or draining
    (httpx.ConnectError("refused"), False),
    (httpx.ConnectTimeout("timed out"), False),
    (httpx.ReadTimeout("timed out"), False),
    # a gateway's answer: no usable health route, only real traffic can tell
    (302, None), (401, None), (403, None), (404, None), (405, None), (500, None), (502, None),
    (504, None),
])
def test_what_each_health_answer_means(answer, verdict):
    book, prober, ep = _prober(lambda r: answer)
    book.probe_failed(ep.url, "an earlier probe failed")
    assert prober.probe(ep) is verdict
    # down only for 503 and for no answer at all; an answer without a health route re-admits
    # (the endpoint is reachable) and leaves the rest to passive health
    assert book.state(ep.url).probe_down is (verdict is False)


def test_gateway_error_page_does_not_eject_a_healthy_endpoint():
    book, prober, ep = _prober(lambda r: 502)
    assert prober.probe(ep) is None and not book.all_down((ep,))


def test_health_is_asked_next_to_the_openai_routes():
    seen = []
    for url in ("http://gpu-1:8000/v1", "https://gw.example.com/ds/v1", "https://gw.example.com/ds/v1/",
                "http://gpu-1:8000", "https://ops:pw@gw.example.com:8443/team/deepseek/v1"):
        _, prober, ep = _prober(lambda r: seen.append(str(r.url)) or 200, url)
        prober.probe(ep)
    assert seen == ["http://gpu-1:8000/health", "https://gw.example.com/ds/health",
                    "https://gw.example.com/ds/health", "http://gpu-1:8000/health",
                    "https://gw.example.com:8443/team/deepseek/health"]  # never the user:password


def test_a_probe_through_a_wrong_ca_holds_nothing_against_the_server():
    # a credential saved with a wrong CA: the handshake fails, but the server answered it, and
    # other workspaces trust it: the probe cannot tell, the endpoint stays up for them
    book = HealthBook()
    prober = Prober(book, health_interval=0, metrics_interval=0)
    (ep,) = parse_endpoints("https://gw.example.com/v1")
    wrong = _client(lambda r: httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] unable to get local issuer"))
    prober.watch((ep,), wrong)
    assert prober.probe(ep) is None and not book.all_down((ep,))
    right = _client(lambda r: 200)  # saved again with the right CA: another pooled client
    prober.watch((ep,), right)
    assert prober.probe(ep) is True and not book.all_down((ep,))


def test_a_failed_probe_says_why_as_a_typed_error():
    book, prober, ep = _prober(lambda r: httpx.ConnectError("[Errno 111] Connection refused"))
    assert prober.probe(ep) is False
    cause, reason, _ = book.why(ep.url, None)
    assert type(cause).__name__ == "UnreachableError" and "connection refused" in reason


class Held:
    """A /health handler for two endpoints: gpu-a's probes wait until ``release`` is set; records
    how many of each endpoint's probes are in flight at once."""

    def __init__(self) -> None:
        self.release, self.a_entered = threading.Event(), threading.Event()
        self.calls: dict[str, int] = {"gpu-a": 0, "gpu-b": 0}
        self.in_flight: dict[str, int] = {"gpu-a": 0, "gpu-b": 0}
        self.most: dict[str, int] = {"gpu-a": 0, "gpu-b": 0}
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> int:
        host = request.url.host
        with self._lock:
            self.calls[host] += 1
            self.in_flight[host] += 1
            self.most[host] = max(self.most[host], self.in_flight[host])
        try:
            if host == "gpu-a":
                self.a_entered.set()
                self.release.wait(10)  # bounded: a failing test must not hang the tier
            return 200
        finally:
            with self._lock:
                self.in_flight[host] -= 1


def _until(cond, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()


def _two_watched(held: Held):
    book = HealthBook()
    prober = Prober(book, health_interval=60.0, metrics_interval=0)  # none on schedule here
    eps = parse_endpoints("http://gpu-a:8000/v1, http://gpu-b:8000/v1")
    prober.watch(eps, _client(held))
    for e in eps:
        prober.probe_soon(e.url)
    return book, prober, eps


def test_a_held_probe_of_one_endpoint_holds_no_probe_of_another():
    held = Held()
    book, prober, (a, b) = _two_watched(held)
    try:
        assert held.a_entered.wait(5) and _until(lambda: held.calls["gpu-b"] == 1)
        book.probe_failed(b.url, "refused")
        prober.probe_soon(b.url)  # while gpu-a's probe still hangs
        assert _until(lambda: not book.state(b.url).probe_down), "gpu-b's probe waited for gpu-a's"
        assert held.calls["gpu-b"] == 2 and held.in_flight["gpu-a"] == 1
    finally:
        held.release.set()
        prober.stop()


def test_an_endpoint_has_at_most_one_probe_in_flight():
    held = Held()
    book, prober, (a, b) = _two_watched(held)
    try:
        assert held.a_entered.wait(5)
        for _ in range(5):  # asked again and again while its probe hangs: one more, after it
            prober.probe_soon(a.url)
        held.release.set()
        assert _until(lambda: held.calls["gpu-a"] == 2)
        assert held.most["gpu-a"] == 1
    finally:
        held.release.set()
        prober.stop()
