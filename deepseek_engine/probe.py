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
One thread (a greenlet under the plugin's gevent patching) serves the whole process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from .health import HEALTH, HealthBook
from .routing import ROUTER, Router, parse_metrics
from .transport import connect_timeout, connection_error

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
        self._wake = threading.Event()
        self._no_metrics: set[str] = set()  # roots that answered 404: stop asking
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.timeout = timeout
        self._default = httpx.Client(trust_env=False, timeout=timeout)
        book.prober = self

    def watch(self, endpoints, client: httpx.Client | None = None) -> None:  # noqa: ANN001
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
            self._wake.set()
            if self._thread is None and (self.health_interval > 0 or self.metrics_interval > 0):
                self._thread = threading.Thread(target=self._loop, name="deepseek-probe", daemon=True)
                self._thread.start()

    def watches(self, url: str) -> bool:
        """Whether a probe will re-admit ``url`` once it is healthy."""
        return self.health_interval > 0 and url in self._watched

    def probe_soon(self, url: str) -> None:
        with self._lock:
            self._soon.add(url)
        self._wake.set()

    def _get(self, endpoint, path: str) -> httpx.Response:  # noqa: ANN001
        client = self._watched.get(endpoint.url, (None, self._default))[1]
        return client.get(endpoint.root + path, timeout=self.timeout)

    def probe(self, endpoint) -> bool | None:  # noqa: ANN001
        """One health probe: True healthy, False down (and ejected), None no health route."""
        try:
            r = self._get(endpoint, "/health")
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
        if r.status_code == 200:
            self.book.probe_ok(endpoint.url)
            return True
        if r.status_code == 503:
            self.book.probe_failed(endpoint.url, "health answered 503 (loading or draining)")
            return False
        self.book.probe_unknown(endpoint.url)  # a gateway without /health: only traffic can tell
        return None

    def scrape(self, endpoint) -> None:  # noqa: ANN001
        if self.router is None or endpoint.root in self._no_metrics:
            return
        try:
            r = self._get(endpoint, "/metrics")
        except httpx.HTTPError:
            self.router.observe_load(endpoint.url, None)
            return
        if r.status_code == 404:
            self._no_metrics.add(endpoint.root)  # SGLang without --enable-metrics, or a gateway
        self.router.observe_load(endpoint.url, parse_metrics(r.text) if r.status_code == 200 else None)

    def _loop(self) -> None:
        next_health = next_metrics = time.monotonic()
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                soon, self._soon = self._soon, set()
            self._all([self.probe], [w[0] for w in map(self._watched.get, soon) if w is not None])
            now = time.monotonic()
            jobs = []
            if self.health_interval > 0 and now >= next_health:
                jobs.append(self.probe)
                next_health = now + self.health_interval
            if self.metrics_interval > 0 and now >= next_metrics:
                jobs.append(self.scrape)
                next_metrics = now + self.metrics_interval
            if jobs:
                self._all(jobs, [e for e, _ in list(self._watched.values())])
            due = min(t for t, on in ((next_health, self.health_interval > 0),
                                      (next_metrics, self.metrics_interval > 0)) if on)
            self._wake.wait(max(0.01, due - time.monotonic()))

    def _all(self, jobs, endpoints) -> None:  # noqa: ANN001
        """Every job for every endpoint, the endpoints side by side: a blackholed endpoint costs
        a round one probe timeout, not one per endpoint after it."""
        if len(endpoints) == 1:  # the common case: no thread
            self._run(jobs, endpoints[0])
        elif endpoints:
            with ThreadPoolExecutor(len(endpoints), thread_name_prefix="deepseek-probe") as pool:
                list(pool.map(lambda e: self._run(jobs, e), endpoints))

    @staticmethod
    def _run(jobs, endpoint) -> None:  # noqa: ANN001
        for job in jobs:
            try:
                job(endpoint)
            except Exception:  # a probe must never kill the loop; log and carry on
                log.exception("%s of %s crashed", job.__name__, endpoint)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


PROBER = Prober(HEALTH, ROUTER)
