"""A request's stream opened at the first endpoint that takes it: retries, failover, corrections.

Each attempt goes to the next available endpoint this request has not tried (``retry.py`` says
whether to try again and how long to wait), corrected once per request for a refused token (a
fresh one) and for a ``max_tokens`` larger than the context window leaves room for. When every
endpoint is set aside, the one back soonest is tried once (a trial: ``health.begin_trial``) with a
short connect deadline, or the request is refused at once with why each is down.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

from .attempt import Opened, Opener
from .auth import Auth
from .context import max_tokens_that_fit
from .errors import AuthError, BadRequestError, EngineError
from .failures import all_failed, count_failure, down_error
from .headers import refreshed
from .health import HealthBook
from .retry import RetryPolicy
from .settings import Endpoint, Timeouts
from .telemetry import TELEMETRY

__all__ = ["Failover"]

log = logging.getLogger(__name__)
_TRIAL_CONNECT = 2.0  # seconds to connect to an endpoint tried while set aside (health.begin_trial)


def _encode(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class Failover:
    """Opens streams for one credential (``scope``) over ``endpoints``."""

    __slots__ = ("endpoints", "health", "scope", "policy", "auth")

    def __init__(self, endpoints: tuple[Endpoint, ...], health: HealthBook, scope: str, policy: RetryPolicy,
                 auth: Auth) -> None:
        self.endpoints = endpoints
        self.health = health
        self.scope = scope
        self.policy = policy
        self.auth = auth

    def open(self, opener: Opener, body: dict, order: list[Endpoint], headers: dict[str, str],
             timeouts: Timeouts, attempts: int | None = None) -> Opened:
        """Open ``body``'s stream at the first endpoint of ``order`` that takes it (retries,
        failover, one token refresh, one ``max_tokens`` fit)."""
        payload = _encode(body)
        errors: list[EngineError] = []
        tried: list[Endpoint] = []
        refreshed_once = fitted = False

        def attempt() -> Opened:  # one try, at the next endpoint
            nonlocal headers, refreshed_once, payload, fitted
            ep = self._next(order, tried, errors)
            if ep is None:  # every endpoint failed and is cooling down: stop here
                raise all_failed(errors, final=True)
            tried.append(ep)
            try:
                while True:  # the request as asked, then corrected once for each reason below
                    try:
                        return opener.open(ep, payload, headers, timeouts)
                    except AuthError:
                        fresh = None if refreshed_once else refreshed(self.auth, headers)
                        if fresh is None:
                            raise
                        refreshed_once, headers = True, fresh  # once per request, not per endpoint
                    except BadRequestError as e:
                        fit = None if fitted else max_tokens_that_fit(e.message, body.get("max_tokens"))
                        if fit is None:
                            raise
                        log.info("max_tokens %s lowered to %s to fit the context window of %s",
                                 body.get("max_tokens"), fit, ep.name)
                        fitted = True  # once per request: every endpoint gets the request that fits
                        payload = _encode({**body, "max_tokens": fit})
            except EngineError as e:
                errors.append(e)
                TELEMETRY.attempt_failed(ep.name, e, retried=e.retryable)
                count_failure(self.health, self.scope, ep, e)
                raise

        policy = self.policy if attempts is None else replace(self.policy, attempts=attempts)
        try:
            return policy.call(attempt, lambda: self._untried(order, tried), opener.deadline)
        except EngineError as e:
            if e.retryable and len({x.endpoint for x in errors}) > 1:
                raise all_failed(errors) from None
            raise

    def trial(self, opener: Opener, body: dict, ep: Endpoint, headers: dict[str, str], t: Timeouts) -> Opened:
        """Every endpoint is set aside: try ``ep``, back soonest, once and with a short connect
        deadline, or refuse at once when it was confirmed down moments ago or is being tried."""
        if not self.health.begin_trial(ep.url, self.scope):
            raise down_error(self.endpoints, self.health, self.scope)
        ok = False
        try:
            opened = self.open(opener, body, [ep], headers, replace(t, connect=min(t.connect, _TRIAL_CONNECT)),
                               attempts=1)
            ok = True
            return opened
        finally:
            self.health.end_trial(ep.url, self.scope, ok)

    def _untried(self, order: list[Endpoint], tried: list[Endpoint]) -> bool:
        """Whether an available endpoint this request has not tried remains: retry at once then."""
        now = time.monotonic()
        return any(e not in tried and self.health.available(e.url, self.scope, now) for e in order)

    def _next(self, order: list[Endpoint], tried: list[Endpoint], errors: list[EngineError]) -> Endpoint | None:
        """An untried available endpoint, else a tried one that is still available and whose
        failure allows another try there (a 429 or 503 on a lone endpoint deserves a second look
        after backoff; a first-token timeout does not), else none."""
        now = time.monotonic()
        up = [e for e in order if self.health.available(e.url, self.scope, now)]
        for e in up:
            if e not in tried:
                return e
        if not tried:
            return order[0]  # all cooling down, but this request was let through: try one
        spent = {x.endpoint for x in errors if not x.retry_here}
        return next((e for e in up if e.name not in spent), None)
