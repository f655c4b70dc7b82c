"""Round robin: each endpoint in turn, ignoring load and ``weight=``.

For replicas that are identical and dedicated, where an even, predictable spread is wanted (each
replica's own metrics then compare like for like), or to see every replica take traffic.
"""

from __future__ import annotations

import itertools

from ..settings import Endpoint
from .policy import Assess, RoutingPolicy

__all__ = ["RoundRobin"]


class RoundRobin(RoutingPolicy):
    def __init__(self) -> None:
        self._turn = itertools.count()  # next() on a count is atomic: no lock

    def rank(self, candidates: list[Endpoint], assess: Assess) -> list[Endpoint]:
        k = next(self._turn) % len(candidates)
        return candidates[k:] + candidates[:k]
