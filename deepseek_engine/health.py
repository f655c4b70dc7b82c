"""Passive health: endpoints that keep failing are ejected for a cool-down that grows on repeat.

Like Envoy's outlier detection, from real traffic only; process-wide, shared by every session.
Ordering also rotates the start endpoint so load spreads when several are healthy.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

__all__ = ["EndpointHealth", "HealthBook", "HEALTH"]


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

    def _get(self, url: str) -> EndpointHealth:
        h = self._book.get(url)
        if h is None:
            with self._lock:
                h = self._book.setdefault(url, EndpointHealth())
        return h

    def state(self, url: str) -> EndpointHealth:
        return self._get(url)

    def order(self, endpoints: tuple) -> list:
        """Available endpoints first, rotated per call; ejected ones after, soonest back first."""
        now = time.monotonic()
        n = len(endpoints)
        start = next(self._turn) % n if n > 1 else 0
        rotated = endpoints[start:] + endpoints[:start]
        up = [e for e in rotated if self._get(e.url).available(now)]
        down = sorted((e for e in rotated if not self._get(e.url).available(now)),
                      key=lambda e: self._get(e.url).ejected_until)
        return up + down

    def all_down(self, endpoints: tuple) -> bool:
        now = time.monotonic()
        return all(not self._get(e.url).available(now) for e in endpoints)

    def success(self, url: str) -> None:
        h = self._get(url)
        if h.consecutive_failures or h.ejections:
            with self._lock:
                h.consecutive_failures = 0
                h.ejections = 0
                h.ejected_until = 0.0

    def failure(self, url: str, reason: str) -> None:
        h = self._get(url)
        with self._lock:
            h.consecutive_failures += 1
            h.last_error = reason
            if h.consecutive_failures >= self.threshold:
                h.ejections += 1
                cooldown = min(self.max_cooldown, self.base_cooldown * 2 ** (h.ejections - 1))
                h.ejected_until = time.monotonic() + cooldown
                h.consecutive_failures = 0

    def reset(self) -> None:
        with self._lock:
            self._book.clear()


HEALTH = HealthBook()
