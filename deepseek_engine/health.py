"""Endpoint health: passive (real traffic) and active (``/health`` probes), process-wide.

Passive, like Envoy's outlier detection: a connection failure ejects an endpoint at once (a dead
host must cost a user at most one connect timeout); other failures (5xx, timeouts, broken streams)
eject after ``threshold`` in a row. The cool-down doubles on each repeat, capped. Active: a
background loop probes every watched endpoint's ``/health`` (vLLM and SGLang answer 200, or 503
while loading or draining; a vLLM still loading weights refuses connections) and re-admits an
ejected endpoint as soon as it answers 200, or ejects one that stopped answering.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass

import httpx

__all__ = ["EndpointHealth", "HealthBook", "HEALTH", "Prober", "PROBER"]

log = logging.getLogger(__name__)


@dataclass
class EndpointHealth:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    last_error: str = ""

    def available(self, now: float) -> bool:
        return now >= self.ejected_until


class HealthBook:
    def __init__(self, threshold: int = 3, base_cooldown: float = 5.0,
                 max_cooldown: float = 120.0) -> None:
        self.threshold = threshold
        self.base_cooldown = base_cooldown
        self.max_cooldown = max_cooldown
        self._book: dict[str, EndpointHealth] = {}
        self._lock = threading.Lock()
        self._turn = itertools.count()

    def state(self, url: str) -> EndpointHealth:
        h = self._book.get(url)
        if h is None:
            with self._lock:
                h = self._book.setdefault(url, EndpointHealth())
        return h

    def order(self, endpoints: tuple) -> list:
        """Available endpoints first, rotated per call; ejected ones after, soonest back first."""
        now = time.monotonic()
        n = len(endpoints)
        start = next(self._turn) % n if n > 1 else 0
        rotated = endpoints[start:] + endpoints[:start]
        up = [e for e in rotated if self.state(e.url).available(now)]
        if len(up) == n:
            return up
        down = sorted((e for e in rotated if not self.state(e.url).available(now)),
                      key=lambda e: self.state(e.url).ejected_until)
        return up + down

    def all_down(self, endpoints: tuple) -> bool:
        now = time.monotonic()
        return all(not self.state(e.url).available(now) for e in endpoints)

    def success(self, url: str) -> None:
        h = self.state(url)
        if h.consecutive_failures or h.ejections or h.ejected_until:
            with self._lock:
                h.consecutive_failures = 0
                h.ejections = 0
                h.ejected_until = 0.0

    def failure(self, url: str, reason: str, *, severe: bool = False) -> None:
        """Record a failure; ``severe`` (could not connect at all) ejects at once."""
        h = self.state(url)
        with self._lock:
            h.last_error = reason
            if time.monotonic() < h.ejected_until:
                return  # already out: more failures from the same outage do not escalate
            h.consecutive_failures += 1
            if severe or h.consecutive_failures >= self.threshold:
                h.ejections += 1
                cooldown = min(self.max_cooldown, self.base_cooldown * 2 ** (h.ejections - 1))
                h.ejected_until = max(h.ejected_until, time.monotonic() + cooldown)
                h.consecutive_failures = 0

    def reset(self) -> None:
        with self._lock:
            self._book.clear()


HEALTH = HealthBook()


class Prober:
    """Probes every watched endpoint's ``/health`` every ``interval`` seconds, in one background
    thread (a greenlet under the plugin's gevent patching), never on a request's path."""

    def __init__(self, book: HealthBook, interval: float | None = None, timeout: float = 3.0) -> None:
        self.book = book
        self.interval = interval if interval is not None else float(
            os.environ.get("DEEPSEEK_HEALTH_INTERVAL", "10"))
        self.timeout = timeout
        self._watched: dict[str, object] = {}  # url -> Endpoint
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._client = httpx.Client(trust_env=False, timeout=timeout,
                                    limits=httpx.Limits(max_keepalive_connections=64))

    def watch(self, endpoints) -> None:  # noqa: ANN001
        new = [e for e in endpoints if e.url not in self._watched]
        if not new:
            return
        with self._lock:
            for e in new:
                self._watched.setdefault(e.url, e)
            if self._thread is None and self.interval > 0:
                self._thread = threading.Thread(target=self._loop, name="deepseek-health",
                                                daemon=True)
                self._thread.start()

    def probe(self, endpoint) -> bool | None:  # noqa: ANN001
        """One probe: True healthy, False down (and ejected), None no health route (unknown)."""
        url = endpoint.root + "/health"
        try:
            r = self._client.get(url)
        except httpx.HTTPError as e:
            self.book.failure(endpoint.url, f"health probe failed: {type(e).__name__}", severe=True)
            return False
        if r.status_code == 200:
            self.book.success(endpoint.url)
            return True
        if r.status_code in (404, 401, 403, 405):
            return None  # a gateway without /health: only real traffic can tell
        self.book.failure(endpoint.url, f"health answered {r.status_code} (loading or draining)",
                          severe=True)
        return False

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for endpoint in list(self._watched.values()):
                try:
                    self.probe(endpoint)
                except Exception:  # a probe must never kill the loop; log and carry on
                    log.exception("health probe of %s crashed", endpoint)

    def stop(self) -> None:
        self._stop.set()


PROBER = Prober(HEALTH)
