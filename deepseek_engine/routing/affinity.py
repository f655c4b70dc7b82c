"""Prefix affinity under a load guard: a conversation's next turn goes where its prefix is cached.

Dify resends the whole conversation each turn, and an app's every conversation starts with the
same system prompt; a server that still holds a prompt's prefix skips its prefill. The load
policy (``PowerOfTwo``) ranks the candidates first; then each endpoint's cost is discounted by
the share ``r`` of the prompt it probably holds (``prefix_index.py``): ``cost × (1 − weight × r)``,
counted only from ``min_match_tokens`` on and never for a saturated server. The best-matching
endpoint thus wins while its cost stays within ``1 / (1 − weight × r)`` of the least loaded one
(4× for a full match at the default weight 0.75, chosen by bench/routing_affinity: docs/routing.md),
else load decides: affinity alone makes hot spots (llm-d saw about 55% of requests succeed with
prefix scoring alone, 100% with a load term). With ``weight`` 0 it is the load policy itself,
draw for draw.

Anchors: SGLang Model Gateway's ``cache_aware`` (match share over ``cache_threshold`` 0.3–0.5,
unless the load spread exceeds ``balance_abs_threshold`` and ``balance_rel_threshold`` 1.1–1.5);
Ray Serve's ``PrefixCacheAffinityRouter`` (match ≥ 0.1 while the queue spread is under 10, else
power of two choices); NVIDIA Dynamo's KV router (cost = overlap weight × prefill blocks + decode
blocks); the Gateway API inference extension's prefix scorer (weights prefix 3 : queue 2).
"""

from __future__ import annotations

from ..settings import Endpoint
from .policy import Assess, RoutingPolicy
from .power_of_two import PowerOfTwo

__all__ = ["Affinity", "WEIGHT", "MIN_MATCH_TOKENS"]

WEIGHT = 0.75  # a full match tolerates 4x the least loaded's cost; 0.5 (2x) measured worse in every scenario
MIN_MATCH_TOKENS = 256  # below, a match saves less prefill than routing noise (GIE: 16 blocks of 16 tokens)


class Affinity(RoutingPolicy):
    def __init__(self, weight: float = WEIGHT, min_match_tokens: int = MIN_MATCH_TOKENS,
                 load: RoutingPolicy | None = None) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"weight must be in [0, 1), got {weight!r}")
        self.weight = weight
        self.min_match_tokens = min_match_tokens
        self.load = load or PowerOfTwo()

    def rank(self, candidates: list[Endpoint], assess: Assess) -> list[Endpoint]:
        ranked = self.load.rank(candidates, assess)
        if self.weight == 0.0 or len(ranked) == 1:
            return ranked
        least = ranked[0]
        best, best_score = least, self._score(least, assess)
        for e in ranked[1:]:
            score = self._score(e, assess)
            if score < best_score:
                best, best_score = e, score
        if best is least:
            return ranked
        return [best, *(e for e in ranked if e is not best)]

    def _score(self, e: Endpoint, assess: Assess) -> float:
        cost, saturated = assess(e)
        if saturated:
            return cost
        matched, prompt = assess.match(e)
        if matched < self.min_match_tokens or prompt <= 0:
            return cost
        return cost * (1.0 - self.weight * min(1.0, matched / prompt))
