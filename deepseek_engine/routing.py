"""Where each request goes: load-aware choice among healthy endpoints, zone failover.

The default policy is power of two choices: two candidates drawn at random (by weight), the one
with the lower cost wins; the rest follow by cost, for failover. Cost is the endpoint's peak-EWMA
time to first token times its queue (this process's in-flight requests plus the server's own
waiting queue, when its ``/metrics`` says), divided by its weight; a server reporting saturation
(KV cache > 80% or more than 5 waiting) costs ten times more, so it is avoided while others have
room (the scraped figures are moved by the requests this process sent since the scrape).
Metrics come from a background scraper, never from the request path, and when they are
missing or stale only the local signals count. Priority groups: the lowest-numbered group with a
healthy endpoint takes all traffic; the next group only when a whole group is out.

Round robin and random are here too, as baselines for the benchmark (bench/routing.py).
"""

from __future__ import annotations

import itertools
import math
import random
import re
import threading
import time
from dataclasses import dataclass

from .health import HealthBook
from .settings import display_url
from .telemetry import TELEMETRY

__all__ = ["ServerLoad", "parse_metrics", "Router", "PowerOfTwo", "RoundRobin", "RandomChoice",
           "ROUTER"]

SATURATED_KV = 0.8
SATURATED_QUEUE = 5


@dataclass(frozen=True, slots=True)
class ServerLoad:
    running: float
    waiting: float
    kv: float | None
    at: float

    @property
    def saturated(self) -> bool:
        return (self.kv is not None and self.kv > SATURATED_KV) or self.waiting > SATURATED_QUEUE


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+([-+0-9.eEInfa]+)", re.MULTILINE)
_SUMS = {"vllm:num_requests_running": "running", "sglang:num_running_reqs": "running",
         "vllm:num_requests_waiting": "waiting", "sglang:num_queue_reqs": "waiting"}
_MAXES = {"vllm:kv_cache_usage_perc": "kv", "vllm:gpu_cache_usage_perc": "kv", "sglang:token_usage": "kv"}


def parse_metrics(text: str, now: float | None = None) -> ServerLoad | None:
    """vLLM or SGLang Prometheus text → load (counts summed over engines/ranks, KV the max)."""
    got: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        key = _SUMS.get(name)
        try:
            v = float(value)
        except ValueError:
            continue
        if key:
            got[key] = got.get(key, 0.0) + v
        elif (key := _MAXES.get(name)) is not None:
            got[key] = max(got.get(key, 0.0), v)
    if "running" not in got and "waiting" not in got:
        return None
    return ServerLoad(got.get("running", 0.0), got.get("waiting", 0.0), got.get("kv"),
                      time.monotonic() if now is None else now)


class _Stats:
    __slots__ = ("in_flight", "ewma", "ewma_at", "load", "in_flight_at_load", "capacity")

    def __init__(self) -> None:
        self.in_flight = 0
        self.ewma: float | None = None
        self.ewma_at = 0.0
        self.load: ServerLoad | None = None
        self.in_flight_at_load = 0  # our own in-flight count when the load was scraped
        self.capacity: float | None = None  # requests that fill the KV cache, learnt from scrapes


class PowerOfTwo:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def rank(self, candidates: list, router: "Router", now: float) -> list:
        if len(candidates) == 1:
            return candidates
        assessed = {e.url: router.assess(e, now) for e in candidates}
        costs = {u: c for u, (c, _) in assessed.items()}
        roomy = [e for e in candidates if not assessed[e.url][1]]
        pool = roomy or candidates  # saturated replicas only when no other has room
        a, b = self._two(pool) if len(pool) >= 2 else (pool[0], pool[0])
        best = a if costs[a.url] <= costs[b.url] else b
        rest = sorted((e for e in candidates if e is not best), key=lambda e: costs[e.url])
        return [best, *rest]

    def _two(self, c: list) -> tuple:
        """Two different candidates, by weight: the second drawn from the others (redrawing until
        it differs could spin for a million draws with weights 1000 and 0.001)."""
        weights = [e.weight for e in c]
        i = self.rng.choices(range(len(c)), weights)[0]
        b = self.rng.choices(c[:i] + c[i + 1:], weights[:i] + weights[i + 1:])[0]
        return c[i], b


class RoundRobin:
    def __init__(self) -> None:
        self._turn = itertools.count()

    def rank(self, candidates: list, router: "Router", now: float) -> list:
        k = next(self._turn) % len(candidates)
        return candidates[k:] + candidates[:k]


class RandomChoice:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def rank(self, candidates: list, router: "Router", now: float) -> list:
        c = list(candidates)
        self.rng.shuffle(c)
        return c


class Router:
    def __init__(self, health: HealthBook, policy=None, *, tau: float = 10.0,  # noqa: ANN001
                 stale_after: float = 15.0) -> None:
        self.health = health
        self.policy = policy or PowerOfTwo()
        self.tau = tau
        self.stale_after = stale_after
        self._stats: dict[str, _Stats] = {}
        self._lock = threading.Lock()

    def _s(self, url: str) -> _Stats:
        s = self._stats.get(url)
        if s is None:
            with self._lock:
                s = self._stats.setdefault(url, _Stats())
        return s

    # -- signals -------------------------------------------------------------------------
    def started(self, url: str) -> None:
        s = self._s(url)
        with self._lock:
            s.in_flight += 1
        TELEMETRY.in_flight(display_url(url), +1)

    def finished(self, url: str) -> None:
        s = self._s(url)
        with self._lock:
            s.in_flight = max(0, s.in_flight - 1)
        TELEMETRY.in_flight(display_url(url), -1)

    def observe_ttft(self, url: str, seconds: float) -> None:
        s = self._s(url)
        now = time.monotonic()
        with self._lock:
            if s.ewma is None or seconds > s.ewma:
                s.ewma = seconds  # peak: react to a slowdown at once, forget it gradually
            else:
                s.ewma += (seconds - s.ewma) * (1.0 - math.exp(-(now - s.ewma_at) / self.tau))
            s.ewma_at = now

    def observe_load(self, url: str, load: ServerLoad | None) -> None:
        s = self._s(url)
        s.load = load
        s.in_flight_at_load = s.in_flight
        if load is not None and load.kv and load.kv >= 0.05 and load.running >= 1:
            s.capacity = load.running / load.kv  # kept while the server idles

    def in_flight(self, url: str) -> int:
        return self._s(url).in_flight

    # -- decisions -----------------------------------------------------------------------
    def cost(self, endpoint, now: float) -> float:  # noqa: ANN001
        return self.assess(endpoint, now)[0]

    def assess(self, endpoint, now: float) -> tuple[float, bool]:  # noqa: ANN001
        """(cost, saturated) of sending one more request to ``endpoint``."""
        s = self._s(endpoint.url)
        latency = s.ewma if s.ewma is not None else self._optimistic()
        queue = s.in_flight
        load = s.load
        saturated = False
        if load is not None and now - load.at < self.stale_after:
            # The scrape is seconds old; what this process sent and got back since is known.
            at_server = max(0.0, load.running + load.waiting + s.in_flight - s.in_flight_at_load)
            if s.capacity:  # learnt: one more request would wait for a slot
                waiting = max(0.0, at_server - s.capacity)
                saturated = at_server + 1 > s.capacity
            else:
                waiting = load.waiting + max(0, s.in_flight - s.in_flight_at_load)
                saturated = load.saturated or waiting > SATURATED_QUEUE
            queue += waiting
        cost = latency * (queue + 1) / endpoint.weight
        return (cost * 10.0 if saturated else cost), saturated

    def _optimistic(self) -> float:
        # an endpoint never measured looks as good as the best one, so it gets tried
        known = [s.ewma for s in self._stats.values() if s.ewma is not None]
        return min(known) if known else 1.0

    def order(self, endpoints: tuple, scope: str | None = None) -> list:
        """Where a request of the credential ``scope`` goes: healthy endpoints by policy, then
        those set aside, soonest back first."""
        now = time.monotonic()
        up, down = [], []
        for e in endpoints:
            (up if self.health.available(e.url, scope, now) else down).append(e)
        down.sort(key=lambda e: self.health.back_at(e.url, scope))
        if not up:
            return down
        top = min(e.priority for e in up)
        primary = [e for e in up if e.priority == top]
        backup = sorted((e for e in up if e.priority != top), key=lambda e: e.priority)
        return self.policy.rank(primary, self, now) + backup + down


from .health import HEALTH  # noqa: E402

ROUTER = Router(HEALTH)
