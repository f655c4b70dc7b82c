"""The router: the signals behind each endpoint's cost, and the order a request tries endpoints in.

Cost is the endpoint's peak-EWMA time to first token times its queue (this process's in-flight
requests plus the server's own waiting queue, when its ``/metrics`` says; once the batch's capacity
is learnt, requests it has room for count a quarter each), divided by its weight; a
server reporting saturation (KV cache > 80% or more than 5 waiting) costs ten times more, so it is
avoided while others have room (the scraped figures are moved by the requests this process sent
since the scrape). Metrics come from a background scraper, never from the request path, and when
they are missing or stale only the local signals count. Priority groups: the lowest-numbered group
with a healthy endpoint takes all traffic; the next group only when a whole group is out. Within a
group, the credential's routing policy orders the endpoints (``policy.py``).

The signals are per endpoint URL and shared by every credential (one process serves every
workspace); a policy instance is per credential, so one credential's choice never orders another's
requests.
"""

from __future__ import annotations

import math
import threading
import time

from ..health import HealthBook
from ..settings import Endpoint, display_url
from ..telemetry import TELEMETRY
from .factory import DEFAULT_POLICY, policy_class
from .load import SATURATED_QUEUE, ServerLoad
from .policy import RoutingPolicy
from .prefix import Prefix
from .prefix_index import PrefixIndex

__all__ = ["Router"]

# What one more request in a batch with room adds to a new one's time to first token, as a share
# of the whole: continuous batching starts it at the next step, its prefill sharing the step with
# the others' decoding. Without a learnt capacity each in-flight request counts whole.
BATCHED = 0.25
# requests served on an endpoint between two scrapes before its hit counters are a verdict on them
WINDOW_REQUESTS = 4


class _Stats:
    __slots__ = ("in_flight", "ewma", "ewma_at", "load", "in_flight_at_load", "capacity", "seen",
                 "window", "usage_says")

    def __init__(self) -> None:
        self.in_flight = 0
        self.ewma: float | None = None
        self.ewma_at = 0.0
        self.load: ServerLoad | None = None
        self.in_flight_at_load = 0  # our own in-flight count when the load was scraped
        self.capacity: float | None = None  # requests that fill the KV cache, learnt from scrapes
        self.seen: ServerLoad | None = None  # the last scrape that answered, kept across failed ones
        # since that scrape, the prefixes served here: [requests, tokens predicted cached, tokens]
        self.window = [0, 0, 0]
        self.usage_says = False  # the server reports cached tokens in usage: its counters are not needed


class Router:
    def __init__(self, health: HealthBook, policy: RoutingPolicy | None = None, *, tau: float = 10.0,
                 stale_after: float = 15.0) -> None:
        """``policy``: one instance ordering every request, whatever policy it names (benchmarks
        and tests compare policies that way); by default each credential gets its own instance of
        the policy it names."""
        self.health = health
        self.policy = policy
        self.tau = tau
        self.stale_after = stale_after
        self._stats: dict[str, _Stats] = {}
        self._policies: dict[tuple[str | None, str], RoutingPolicy] = {}
        self._lock = threading.Lock()
        self.prefixes = PrefixIndex()  # what each endpoint probably holds cached (affinity)

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
        if load is not None:
            if s.seen is not None and load.restarted_since(s.seen):
                self.prefixes.drop(url)  # a new server process: its prefix cache is empty
            elif not s.usage_says and s.window[0] >= WINDOW_REQUESTS:
                share = load.hit_share_since(s.seen)
                if share is not None:
                    self.prefixes.observe_share(url, s.window[1], share, s.window[2])
            s.seen = load
            s.window = [0, 0, 0]
            if load.kv_tokens:
                self.prefixes.set_ceiling(url, load.kv_tokens)
        s.load = load
        s.in_flight_at_load = s.in_flight
        if load is not None and load.kv and load.kv >= 0.05 and load.running >= 1:
            s.capacity = load.running / load.kv  # kept while the server idles

    def in_flight(self, url: str) -> int:
        return self._s(url).in_flight

    def served(self, url: str, prefix: Prefix | None) -> None:
        """``url`` sent the first token of ``prefix``'s request: it now holds that prompt (recorded
        only if the request's policy looked at its prefix)."""
        if prefix is not None and prefix.computed:
            self.prefixes.record(url, *prefix.chain)
            w = self._s(url).window
            w[0] += 1
            w[1] += prefix.predicted.get(url, 0)
            w[2] += prefix.tokens

    def reused(self, url: str, prefix: Prefix | None, usage: dict | None) -> None:
        """The server's usage of ``prefix``'s request: how much of its prompt it really had
        cached (vLLM ``--enable-prompt-tokens-details``, SGLang ``--enable-cache-report``)."""
        if prefix is None or not prefix.computed or not usage:
            return
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        prompt = usage.get("prompt_tokens")
        if isinstance(cached, int) and isinstance(prompt, int):
            self._s(url).usage_says = True
            self.prefixes.observe_cached(url, prefix.predicted.get(url, 0), cached, prompt, prefix.tokens)

    # -- decisions -----------------------------------------------------------------------
    def cost(self, endpoint: Endpoint, now: float) -> float:
        return self.assess(endpoint, now)[0]

    def assess(self, endpoint: Endpoint, now: float) -> tuple[float, bool]:
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
                queue = BATCHED * s.in_flight  # with room in the batch it starts at once
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

    def policy_for(self, scope: str | None, name: str | None = None) -> RoutingPolicy:
        """The policy ordering the requests of the credential ``scope``: its own instance of the
        policy ``name`` (the default when None), unless this router has one for everyone."""
        if self.policy is not None:
            return self.policy
        key = (scope, name or DEFAULT_POLICY)
        policy = self._policies.get(key)
        if policy is None:
            with self._lock:
                policy = self._policies.get(key)
                if policy is None:
                    policy = self._policies[key] = policy_class(key[1])()
        return policy

    def order(self, endpoints: tuple[Endpoint, ...], scope: str | None = None,
              policy: str | None = None, prefix: Prefix | None = None) -> list[Endpoint]:
        """Where a request of the credential ``scope`` goes: healthy endpoints by its routing
        ``policy`` (a name, see factory.py), then those set aside, soonest back first. ``prefix``:
        the request's prompt, for a policy that routes by what each endpoint holds cached."""
        now = time.monotonic()
        up, down = [], []
        for e in endpoints:
            if self.health.available(e.url, scope, now):
                up.append(e)
            else:
                down.append(e)
                if not self.health.available(e.url, None, now):
                    self.prefixes.drop(e.url)  # ejected: it may come back restarted
        down.sort(key=lambda e: self.health.back_at(e.url, scope))
        if not up:
            return down
        top = min(e.priority for e in up)
        primary = [e for e in up if e.priority == top]
        backup = sorted((e for e in up if e.priority != top), key=lambda e: e.priority)
        return self.policy_for(scope, policy).rank(primary, _Assessment(self, now, prefix)) + backup + down


class _Assessment:
    """``Assess`` for one request (``policy.py``), each answer computed once."""

    __slots__ = ("router", "now", "prefix", "_costs")

    def __init__(self, router: Router, now: float, prefix: Prefix | None) -> None:
        self.router, self.now, self.prefix = router, now, prefix
        self._costs: dict[str, tuple[float, bool]] = {}

    def __call__(self, endpoint: Endpoint) -> tuple[float, bool]:
        got = self._costs.get(endpoint.url)
        if got is None:
            got = self._costs[endpoint.url] = self.router.assess(endpoint, self.now)
        return got

    def match(self, endpoint: Endpoint) -> tuple[int, int]:
        p = self.prefix
        if p is None:
            return 0, 0
        got = p.predicted.get(endpoint.url)
        if got is None:
            got = p.predicted[endpoint.url] = self.router.prefixes.match(endpoint.url, *p.chain, self.now)
        return got, p.tokens
