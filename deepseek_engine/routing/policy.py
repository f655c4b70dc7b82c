"""What a routing policy is: the one method it implements and what it may read.

The router does everything around a policy: it keeps the signals (in-flight counts, time to first
token, the servers' scraped load), sets unhealthy endpoints aside and orders priority groups. A
policy only orders the healthy endpoints of the group that takes the traffic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from ..settings import Endpoint

__all__ = ["Assess", "RoutingPolicy"]


class Assess(Protocol):
    """What a policy may ask about an endpoint for the request being routed, computed on demand
    (a policy that never asks pays nothing)."""

    def __call__(self, endpoint: Endpoint) -> tuple[float, bool]:
        """``(cost, saturated)`` of one more request there, now. The cost is the expected time to
        first token (peak-EWMA TTFT times the queue there, over the endpoint's weight), ten times
        more when the server reports saturation."""

    def match(self, endpoint: Endpoint) -> tuple[int, int]:
        """``(matched, prompt)``: estimated tokens of this request's prompt the endpoint probably
        still holds in its prefix cache (``prefix_index.py``), and of the whole prompt; ``(0, 0)``
        when the request is unknown (a model listing)."""


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
