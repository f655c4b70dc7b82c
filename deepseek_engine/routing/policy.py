"""What a routing policy is: the one method it implements and what it may read.

The router does everything around a policy: it keeps the signals (in-flight counts, time to first
token, the servers' scraped load), sets unhealthy endpoints aside and orders priority groups. A
policy only orders the healthy endpoints of the group that takes the traffic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from ..settings import Endpoint

__all__ = ["Assess", "RoutingPolicy"]

Assess = Callable[[Endpoint], tuple[float, bool]]
"""An endpoint's ``(cost, saturated)`` for one more request, now. The cost is the expected time to
first token (peak-EWMA TTFT times the queue there, over the endpoint's weight), ten times more when
the server reports saturation; computed on demand, so a policy that never asks pays nothing."""


class RoutingPolicy(ABC):
    """How a credential's requests are spread over equally eligible endpoints.

    Each credential gets an instance of its own (``Router.order``): state such as a turn counter
    or a random generator orders that credential's requests only, while the signals behind
    ``assess`` are shared by everyone using the endpoint. ``rank`` may run on several threads at
    once."""

    @abstractmethod
    def rank(self, candidates: list[Endpoint], assess: Assess) -> list[Endpoint]:
        """``candidates`` (at least one, all healthy, one priority group), each exactly once, best
        first: the request goes to the first, and fails over along the rest. Read only
        ``assess`` and the endpoints' own fields (``url``, ``weight``, ``zone``)."""
