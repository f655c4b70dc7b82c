"""Background watching of every endpoint in use: ``/health`` and ``/metrics``, off the request path.

``/health`` (next to the OpenAI routes: ``https://gw/ds/v1`` is probed at ``https://gw/ds/health``):
vLLM and SGLang answer 200, or 503 while loading or draining; a vLLM still loading weights refuses
connections. A 200 re-admits an endpoint set aside by a probe or a failed connection at once; a
503, a refused connection or a timeout sets it aside until a probe answers 200. Any other answer
(a gateway's 401/404, a redirect, its 500/502 page) means there is no usable health route: the
endpoint is reachable, and only real traffic (passive health) can tell more. When real traffic
cannot connect to a watched endpoint, it is probed at once, off the schedule.
``/metrics``: the server's own queue and KV-cache use, for the router. A scrape that fails leaves
the router on its local signals (in-flight counts, measured time to first token).
Each watched endpoint has its own worker thread (a greenlet under the plugin's gevent patching):
a slow endpoint holds no other endpoint's probes, and at most one probe of an endpoint is in
flight. Each probe and scrape ends by its deadline as a whole (connect, send and every read), and
reads at most a few MiB of the answer (``body.py``).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import httpx

from .body import ERROR_CAP, LISTING_CAP, Body, read_capped
from .errors import UnavailableError
from .health import HEALTH, HealthBook
from .routing import ROUTER, Router, parse_metrics
from .transport import connect_timeout, connection_error, pooled_client, read_budget

__all__ = ["Prober", "PROBER"]

log = logging.getLogger(__name__)


def _env_seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        log.warning("%s is not a number of seconds; using %s", name, default)
        return default


class Prober:
    def __init__(self, book: HealthBook, router: Router | None = None, *,
                 health_interval: float | None = None, metrics_interval: float | None = None,
                 timeout: float = 3.0) -> None:
        self.book = book
        self.router = router
        self.health_interval = (health_interval if health_interval is not None
                                else _env_seconds("DEEPSEEK_HEALTH_INTERVAL", 10.0))
        self.metrics_interval = (metrics_interval if metrics_interval is not None
                                 else _env_seconds("DEEPSEEK_METRICS_INTERVAL", 5.0))
        self._watched: dict[str, tuple] = {}  # url -> (Endpoint, the httpx client with its TLS)
        self._soon: set[str] = set()  # urls to probe now, off the schedule
        self._wakes: dict[str, threading.Event] = {}  # url -> its worker's wake-up
        self._no_metrics: set[str] = set()  # roots that answered 404: stop asking
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.timeout = timeout  # seconds for one probe or scrape as a whole
        # the transport's pool: its network backend enforces the deadline of each call
        self._default = pooled_client()
        book.prober = self

    def watch(self, endpoints, client: httpx.Client | None = None) -> None:
        """Watch ``endpoints`` through ``client`` (the pool with their TLS settings). The latest
        client wins: a credential saved again with a corrected CA must not stay probed, and so
        refused, through the old one."""
        client = client or self._default
        if all(self._watched.get(e.url, (None, None))[1] is client for e in endpoints):
            return
        with self._lock:
            for e in endpoints:
                if self._watched.get(e.url, (None, None))[1] is not client:
                    self._watched[e.url] = (e, client)
                    if self.book.state(e.url).probe_down:
                        self._soon.add(e.url)  # the new TLS settings may be the fix: ask now
                    self._serve(e.url)

    def _serve(self, url: str) -> None:
        """Wake ``url``'s worker, starting it on first use (the caller holds the lock)."""
        wake = self._wakes.get(url)
        if wake is not None:
            wake.set()
        elif self.health_interval > 0 or self.metrics_interval > 0:
            wake = self._wakes[url] = threading.Event()
            threading.Thread(target=self._loop, args=(url, wake), name="deepseek-probe", daemon=True).start()

    def watches(self, url: str) -> bool:
        """Whether a probe will re-admit ``url`` once it is healthy."""
        return self.health_interval > 0 and url in self._watched

    def probe_soon(self, url: str) -> None:
        with self._lock:
            self._soon.add(url)
            if url in self._watched:
                self._serve(url)

    def _get(self, endpoint, path: str, cap: int) -> tuple[int, Body]:
        """(status, body) of one GET, ended by ``timeout`` as a whole and read to ``cap`` bytes."""
        client = self._watched.get(endpoint.url, (None, self._default))[1]
        with read_budget(None, time.monotonic() + self.timeout):
            request = client.build_request("GET", endpoint.root + path, timeout=self.timeout)
            try:
                r = client.send(request, stream=True)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # a keep-alive connection the server closed as this probe reused it (uvicorn closes
                # idle ones after 5 s, about the probes' rhythm): once more, on a fresh connection
                r = client.send(request, stream=True)
            return r.status_code, read_capped(r, cap)

    def probe(self, endpoint) -> bool | None:
        """One health probe: True healthy, False down (and ejected), None no health route."""
        try:
            status, _ = self._get(endpoint, "/health", ERROR_CAP)  # read: the connection is reused
        except httpx.HTTPError as e:
            cause = (connect_timeout(self.timeout, endpoint) if isinstance(e, httpx.ConnectTimeout)
                     else connection_error(e, endpoint))
            if cause.credential_fault:
                # the server answered the handshake; only the prober's credential (a CA bundle
                # that does not trust it, say) failed: nothing for every workspace to hold against it
                self.book.probe_unknown(endpoint.url)
                return None
            self.book.probe_failed(endpoint.url, f"health probe failed: {cause.message}", cause)
            return False
        if status == 200:
            self.book.probe_ok(endpoint.url)
            return True
        if status == 503:
            reason = "health answered 503 (loading or draining)"
            self.book.probe_failed(endpoint.url, reason, UnavailableError(reason, endpoint=endpoint.name, status=503))
            return False
        self.book.probe_unknown(endpoint.url)  # a gateway without /health: only traffic can tell
        return None

    def scrape(self, endpoint) -> None:
        if self.router is None or endpoint.root in self._no_metrics:
            return
        try:
            status, body = self._get(endpoint, "/metrics", LISTING_CAP)
        except httpx.HTTPError:
            self.router.observe_load(endpoint.url, None)
            return
        if status == 404:
            self._no_metrics.add(endpoint.root)  # SGLang without --enable-metrics, or a gateway
        usable = status == 200 and body.whole  # a page cut at the cap could lack the counts
        self.router.observe_load(endpoint.url, parse_metrics(body.text) if usable else None)

    def _loop(self, url: str, wake: threading.Event) -> None:
        """``url``'s worker: its probes and scrapes on schedule, and a probe whenever asked. The
        first ones come an interval after the watch: the endpoint is watched because real traffic
        is about to use it, which judges it first, and the probe then reuses that traffic's
        pooled connection instead of racing it for another."""
        start = time.monotonic()
        next_health, next_metrics = start + self.health_interval, start + self.metrics_interval
        while not self._stop.is_set():
            wake.clear()
            with self._lock:
                soon = url in self._soon
                self._soon.discard(url)
            now = time.monotonic()
            jobs = [self.probe] if soon else []
            if self.health_interval > 0 and now >= next_health:
                jobs = [self.probe]
                next_health = now + self.health_interval
            if self.metrics_interval > 0 and now >= next_metrics:
                jobs.append(self.scrape)
                next_metrics = now + self.metrics_interval
            self._run(jobs, self._watched[url][0])
            due = min(t for t, on in ((next_health, self.health_interval > 0),
                                      (next_metrics, self.metrics_interval > 0)) if on)
            wake.wait(max(0.01, due - time.monotonic()))

    @staticmethod
    def _run(jobs, endpoint) -> None:
        for job in jobs:
            try:
                job(endpoint)
            except Exception:  # a probe must never kill the loop; log and carry on
                log.exception("%s of %s crashed", job.__name__, endpoint)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for wake in self._wakes.values():
                wake.set()


PROBER = Prober(HEALTH, ROUTER)
