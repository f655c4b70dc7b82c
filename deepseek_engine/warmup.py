"""Warm-up: once a provider's credentials pass validation, the request path a user takes runs a
few times with one-token answers, so that the first real request is a warm one.

Validation's own one-token request (``validation.py``) has by then opened each endpoint's pooled
connection and run the engine once. What the cold-start benchmark still measured after it was the
rest of a user's path (the caller's SDK, the adapter, building chunks, the served-model lookup),
which CPython 3.12's adaptive interpreter specialises only after a few runs: this is the one
warm-up (docs/performance.md, "First request after validation"). Nothing warms in the background.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

from .discovery import ServedModel, normalise
from .errors import public_message
from .settings import Settings

__all__ = ["BUDGET", "PROMPT", "RUNS", "TIMEOUTS", "Ask", "warm_up"]

log = logging.getLogger(__name__)

RUNS = 6  # one token each: enough for the adaptive interpreter to specialise the hot path
BUDGET = 3.0  # seconds of warm-up at most, whatever the server's pace
# short deadlines: a busy GPU queue must not keep the operator's Save waiting
TIMEOUTS = "connect=2 first_token=5 idle=5 total=5"
PROMPT = "ping"

Ask = Callable[[str, Mapping, str, dict], Iterable[object]]
"""``ask(model, credentials, prompt, parameters)``: a user's request as the caller serves it
(for Dify, the SDK's ``invoke``), its answer read to the end here."""


def warm_up(found: list[ServedModel], credentials: Mapping, *, ask: Ask,
            catalogue: Callable[[], Iterable[str]], settings: Settings | None = None) -> int:
    """Ask for one token up to ``RUNS`` times within ``BUDGET`` seconds, alternating the
    ``catalogue()`` entry that matches what is served (the path a user who picks it takes: its
    schema from the catalogue, discovery by name) and the served id itself (a customizable model).
    ``found``: what validation found served. Best effort: a failure is logged, never raised
    (validation already passed). Returns the runs that answered."""
    if not found:
        return 0
    served = found[0].id
    done = 0
    try:
        key = normalise(served)
        names = [n for n in (next((m for m in catalogue() if normalise(m) == key), None), served) if n]
        quick = {**credentials, "timeouts": TIMEOUTS}
        until = time.monotonic() + BUDGET
        for i in range(RUNS):
            if time.monotonic() > until:
                break
            for _ in ask(names[i % len(names)], quick, PROMPT, {"max_tokens": 1}):
                pass
            done += 1
    except Exception as e:  # noqa: BLE001 - best effort: validation already passed
        log.info("request-path warm-up skipped: %s", public_message(e, settings))
    return done
