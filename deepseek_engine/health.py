"""Endpoint health: passive (real traffic) and active (``/health`` probes), process-wide.

Passive, like Envoy's outlier detection: a connection failure ejects an endpoint at once (a dead
host must cost a user at most one connect timeout); other failures (5xx, timeouts, broken streams)
eject after ``threshold`` in a row. The cool-down doubles on each ejection until real traffic
succeeds again (a probe's 200 does not reset it, so a flapping endpoint stays out longer each
time), capped. The active side (``/health`` probes that re-admit or eject) lives in ``probe.py``:
when one watches the endpoint, a connection failure keeps it out until a probe succeeds (the
timer alone could let it back before the next probe and cost a user a second connect timeout);
a probe that finds no health route leaves the timer in charge.

Failures that belong to the server (refused, reset, 5xx, 429, timeouts, broken streams) count
against the endpoint for everyone; those that belong to one credential's own settings (its TLS
trust, ``EngineError.credential_fault``) count only against that credential's ``scope``: one
workspace pasting a wrong CA must not take the endpoint from the others.

When every endpoint is set aside, a request may still try the one back soonest (``begin_trial``:
one trial per endpoint at a time, as Envoy's panic threshold and gRPC's reconnect do), unless a
failure confirmed it down moments ago (``FRESH`` seconds, or the server's Retry-After): a lone
endpoint back from a restart serves the next request instead of waiting for the next probe.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .errors import EngineError
from .settings import display_url
from .telemetry import TELEMETRY

__all__ = ["EndpointHealth", "HealthBook", "HEALTH", "FRESH"]

FRESH = 1.0  # seconds a failure vouches for an endpoint being down: no trial before


@dataclass
class EndpointHealth:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    last_error: str = ""
    probe_down: bool = False  # out until a /health probe succeeds
    seen_up: bool = False  # a success has been reported (the endpoint-up gauge exists)
    unreachable: bool = False  # the current ejection is a failed connection: a probe's 200 ends it
    cause: EngineError | None = None  # the last failure: what a request refused meanwhile is told
    confirmed_at: float = float("-inf")  # when a failure (traffic, trial or probe) was last seen
    trial: bool = False  # a request is trying the endpoint while it is set aside

    def available(self, now: float) -> bool:
        return not self.probe_down and now >= self.ejected_until

    def confirmed_until(self) -> float:
        """Until when the last failure vouches for the endpoint being down (no trial before)."""
        after = self.cause.retry_after if self.cause is not None else None
        return self.confirmed_at + max(FRESH, after or 0.0)


class HealthBook:
    def __init__(self, threshold: int = 3, base_cooldown: float = 5.0,
                 max_cooldown: float = 120.0) -> None:
        self.threshold = threshold
        self.base_cooldown = base_cooldown
        self.max_cooldown = max_cooldown
        self._book: dict[str, EndpointHealth] = {}
        self._lock = threading.Lock()
        # set by a probe.Prober: ``watches(url)`` and ``probe_soon(url)``
        self.prober = None

    def state(self, url: str, scope: str | None = None) -> EndpointHealth:
        """The endpoint's own health, or (``scope``) what one credential's settings did to it."""
        key = url if scope is None else (url, scope)
        h = self._book.get(key)
        if h is None:
            with self._lock:
                h = self._book.setdefault(key, EndpointHealth())
        return h

    def _states(self, url: str, scope: str | None) -> tuple[EndpointHealth, ...]:
        own = self._book.get((url, scope)) if scope is not None else None
        return (self.state(url),) if own is None else (self.state(url), own)

    def available(self, url: str, scope: str | None, now: float) -> bool:
        """Whether a request of the credential ``scope`` may go to ``url`` now."""
        return all(h.available(now) for h in self._states(url, scope))

    def back_at(self, url: str, scope: str | None) -> float:
        return max(h.ejected_until for h in self._states(url, scope))

    def why(self, url: str, scope: str | None) -> tuple[EngineError | None, str, float]:
        """Why ``url`` is set aside for ``scope``: the failure, its words, and the seconds until a
        request may try it again (when every endpoint is set aside)."""
        now = time.monotonic()
        down = [h for h in self._states(url, scope) if not h.available(now)] or [self.state(url)]
        h = down[-1]  # the credential's own reason first: it is the one to fix
        wait = max(x.confirmed_until() for x in down) - now  # then begin_trial lets one through
        return h.cause, h.last_error or "failing", max(0.0, wait)

    def begin_trial(self, url: str, scope: str | None) -> bool:
        """Take the one trial of ``url`` (every endpoint is set aside), unless a failure confirmed
        it down moments ago or another request is trying it now."""
        now = time.monotonic()
        with self._lock:
            down = [h for h in self._states(url, scope) if not h.available(now)]
            if any(h.trial or now < h.confirmed_until() for h in down):
                return False
            for h in down:
                h.trial = True
            return True

    def end_trial(self, url: str, scope: str | None, ok: bool) -> None:
        """The trial ended; ``ok``: the endpoint answered, so it is back (its ejection count
        stays, as after a probe's 200: a flapping endpoint's cool-down keeps growing)."""
        with self._lock:
            for h in self._states(url, scope):
                h.trial = False
                if ok:
                    h.probe_down = h.unreachable = False
                    h.ejected_until = 0.0
        if ok:
            TELEMETRY.endpoint_state(display_url(url), True)

    def all_down(self, endpoints: tuple, scope: str | None = None) -> bool:
        now = time.monotonic()
        return all(not self.available(e.url, scope, now) for e in endpoints)

    def success(self, url: str, scope: str | None = None) -> None:
        """Real traffic succeeded: the endpoint is back and its ejection count starts over."""
        for h in self._states(url, scope):
            if h.consecutive_failures or h.ejections or h.ejected_until or h.probe_down or not h.seen_up:
                with self._lock:
                    h.consecutive_failures = 0
                    h.ejections = 0
                    h.ejected_until = 0.0
                    h.probe_down = h.unreachable = False
                    h.seen_up = True  # the first success sets the up gauge, later ones cost nothing
                TELEMETRY.endpoint_state(display_url(url), True)

    def probe_ok(self, url: str) -> None:
        """``/health`` answered 200: back at once if it was out for a probe or an unreachable
        host; an ejection for failing traffic (5xx, stalls) runs its course, and the ejection
        count stays, so a flapping endpoint's cool-down keeps growing."""
        h = self.state(url)
        if h.probe_down or h.unreachable:
            with self._lock:
                h.probe_down = False
                if h.unreachable:
                    h.unreachable = False
                    h.ejected_until = 0.0
            TELEMETRY.endpoint_state(display_url(url), h.available(time.monotonic()))

    def probe_unknown(self, url: str) -> None:
        """The endpoint answered, but not with a usable health status (no route, a redirect, a
        gateway's error page): reachable, so no longer out for a probe; the passive timer rules."""
        h = self.state(url)
        if h.probe_down:
            with self._lock:
                h.probe_down = False
            TELEMETRY.endpoint_state(display_url(url), h.available(time.monotonic()))

    def failure(self, url: str, reason: str, *, severe: bool = False, scope: str | None = None,
                cause: EngineError | None = None) -> None:
        """Record a failure; ``severe`` (could not connect at all) ejects at once, and while a
        prober watches the endpoint, until a probe succeeds (one is asked for at once).
        ``scope``: the failure is the credential's own, counted against it alone."""
        h = self.state(url, scope)
        prober = self.prober if scope is None else None
        wake = False
        with self._lock:
            h.last_error = reason
            h.cause = cause
            h.confirmed_at = time.monotonic()
            if h.probe_down or time.monotonic() < h.ejected_until:
                return  # already out: more failures from the same outage do not escalate
            h.consecutive_failures += 1
            if severe or h.consecutive_failures >= self.threshold:
                TELEMETRY.ejected(display_url(url))
                TELEMETRY.endpoint_state(display_url(url), False)
                h.ejections += 1
                cooldown = min(self.max_cooldown, self.base_cooldown * 2 ** (h.ejections - 1))
                h.ejected_until = max(h.ejected_until, time.monotonic() + cooldown)
                h.consecutive_failures = 0
                h.unreachable = severe
                wake = h.probe_down = severe and prober is not None and prober.watches(url)
        if wake:
            prober.probe_soon(url)

    def probe_failed(self, url: str, reason: str, cause: EngineError | None = None) -> None:
        h = self.state(url)
        with self._lock:
            h.probe_down = True
            h.last_error = reason
            h.cause = cause
            h.confirmed_at = time.monotonic()
        TELEMETRY.endpoint_state(display_url(url), False)

    def reset(self) -> None:
        with self._lock:
            self._book.clear()


HEALTH = HealthBook()
