"""Power of two choices, the default: load-aware, and cheap whatever the number of endpoints.

Two candidates drawn at random (by weight), the one with the lower cost wins; the rest follow by
cost, for failover. A server reporting saturation is drawn only when none has room.
"""

from __future__ import annotations

import random

from ..settings import Endpoint
from .policy import Assess, RoutingPolicy

__all__ = ["PowerOfTwo"]


class PowerOfTwo(RoutingPolicy):
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def rank(self, candidates: list[Endpoint], assess: Assess) -> list[Endpoint]:
        if len(candidates) == 1:
            return candidates
        assessed = {e.url: assess(e) for e in candidates}
        costs = {u: c for u, (c, _) in assessed.items()}
        roomy = [e for e in candidates if not assessed[e.url][1]]
        pool = roomy or candidates  # saturated replicas only when no other has room
        a, b = self._two(pool) if len(pool) >= 2 else (pool[0], pool[0])
        best = a if costs[a.url] <= costs[b.url] else b
        rest = sorted((e for e in candidates if e is not best), key=lambda e: costs[e.url])
        return [best, *rest]

    def _two(self, c: list[Endpoint]) -> tuple[Endpoint, Endpoint]:
        """Two different candidates, by weight: the second drawn from the others (redrawing until
        it differs could spin for a million draws with weights 1000 and 0.001)."""
        weights = [e.weight for e in c]
        i = self.rng.choices(range(len(c)), weights)[0]
        b = self.rng.choices(c[:i] + c[i + 1:], weights[:i] + weights[i + 1:])[0]
        return c[i], b
