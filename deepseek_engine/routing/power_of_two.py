"""Load-aware, the default: the best of all candidates on a small fleet, power of two choices above.

On a fleet an operator lists by hand (up to ``FULL_SCAN_MAX`` endpoints) every candidate's cost is
compared (microseconds): a draw of two would leave the fastest replica out of a large share of
draws even while it has room. Above that size two candidates drawn at random (by weight) are
compared, which stays cheap and keeps many senders with stale signals from herding onto one
replica. The rest follow by cost, for failover. A server reporting saturation is chosen only when
none has room.
"""

from __future__ import annotations

import random

from ..settings import Endpoint
from .policy import Assess, RoutingPolicy

__all__ = ["PowerOfTwo", "FULL_SCAN_MAX"]

FULL_SCAN_MAX = 12  # the "two to a dozen replicas" listed by hand


class PowerOfTwo(RoutingPolicy):
    def __init__(self, rng: random.Random | None = None, full_scan_max: int = FULL_SCAN_MAX) -> None:
        self.rng = rng or random.Random()
        self.full_scan_max = full_scan_max

    def rank(self, candidates: list[Endpoint], assess: Assess) -> list[Endpoint]:
        if len(candidates) == 1:
            return candidates
        assessed = {e.url: assess(e) for e in candidates}
        costs = {u: c for u, (c, _) in assessed.items()}
        roomy = [e for e in candidates if not assessed[e.url][1]]
        pool = roomy or candidates  # saturated replicas only when no other has room
        # a draw of two from two or fewer is the whole pool: compare them all
        scan = len(pool) <= max(self.full_scan_max, 2)
        best = self._cheapest(pool, costs) if scan else self._better_of_two(pool, costs)
        rest = sorted((e for e in candidates if e is not best), key=lambda e: costs[e.url])
        return [best, *rest]

    def _cheapest(self, pool: list[Endpoint], costs: dict[str, float]) -> Endpoint:
        low = min(costs[e.url] for e in pool)
        tied = [e for e in pool if costs[e.url] == low]
        # equal costs (nothing measured yet, idle twins): by weight, not always the first listed
        return tied[0] if len(tied) == 1 else self.rng.choices(tied, [e.weight for e in tied])[0]

    def _better_of_two(self, pool: list[Endpoint], costs: dict[str, float]) -> Endpoint:
        a, b = self._two(pool)
        return a if costs[a.url] <= costs[b.url] else b

    def _two(self, c: list[Endpoint]) -> tuple[Endpoint, Endpoint]:
        """Two different candidates, by weight: the second drawn from the others (redrawing until
        it differs could spin for a million draws with weights 1000 and 0.001)."""
        weights = [e.weight for e in c]
        i = self.rng.choices(range(len(c)), weights)[0]
        b = self.rng.choices(c[:i] + c[i + 1:], weights[:i] + weights[i + 1:])[0]
        return c[i], b
