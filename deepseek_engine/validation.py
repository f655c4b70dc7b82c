"""Credential validation in seconds: each endpoint reachable, auth accepted, model served,
context size known, and the chat route answering a one-token request. Each endpoint has
``DEADLINE`` seconds for all of it, whatever the server's pace (a server that trickles one byte
every second fails at the deadline, not when it stops).

Endpoints are checked at once, and validation passes when at least one passes every check: an
operator lists replicas up to the autoscaler's maximum (docs/operators.md, section 3), and those
not running now are set aside at run time until their /health answers. Each failing endpoint is
named in the plugin's log (a warning); when none passes, the error names each one and why."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from .client import ChatClient, all_failed
from .discovery import ServedModel, context_size_of, pick_served_model
from .errors import AuthError, ConfigError, EngineError, ModelNotFoundError, TotalTimeout, carry_scope, scrub
from .health import HealthBook
from .protocol import build_body
from .retry import RetryPolicy
from .settings import Endpoint, Settings

__all__ = ["validate_endpoints"]

log = logging.getLogger(__name__)

# Validation must answer while the operator waits: short budgets, one attempt per endpoint.
_QUICK = RetryPolicy.one_shot()
DEADLINE = 15.0  # seconds for one endpoint's whole validation (endpoints are checked side by side)


def validate_endpoints(settings: Settings, *, wanted: str | None, catalogue: str | None,
                       need_context: bool = False) -> list[ServedModel]:
    if not settings.tls.verify:
        log.warning("TLS certificate verification is OFF for %s: insecure, for testing only",
                    ", ".join(e.name for e in settings.endpoints))
    t = settings.timeouts
    quick = replace(settings, timeouts=replace(t, connect=min(t.connect, 5.0)))  # the rest: _left
    endpoints = settings.endpoints
    deadline = time.monotonic() + DEADLINE

    def check(ep: Endpoint) -> ServedModel | Exception:
        try:
            return _validate_one(replace(quick, endpoints=(ep,)), ep, deadline, wanted=wanted,
                                 catalogue=catalogue, need_context=need_context)
        except Exception as e:  # noqa: BLE001 - handed to the caller below
            return e

    with ThreadPoolExecutor(len(endpoints), thread_name_prefix="deepseek-validate") as pool:
        outcomes = list(pool.map(carry_scope(check), endpoints))  # side by side: dead replicas cost one timeout
    for o in outcomes:
        if isinstance(o, Exception) and not isinstance(o, EngineError):
            raise o
    found = [o for o in outcomes if isinstance(o, ServedModel)]
    failed = [(ep, o) for ep, o in zip(endpoints, outcomes, strict=True) if isinstance(o, EngineError)]
    # The rule: a missing replica (unreachable, not ready, not serving the model yet) is no reason
    # to refuse the credentials, but refused credentials are: a 401/403, a rejected client
    # certificate or an OAuth2 client the token endpoint refuses fails validation even when other
    # endpoints pass. Every endpoint gets the same credentials, so that is an operator error (a
    # wrong key, or replicas started with different keys), never a replica that is not there.
    refused = [e for _, e in failed if isinstance(e, AuthError)]
    if refused:
        raise refused[0]
    if not found:
        raise all_failed([e for _, e in failed])
    for ep, e in failed:  # a server's own text may quote the key back: scrubbed
        log.warning("endpoint %s failed validation: %s (validation passed: %d of %d endpoints "
                    "answered; requests go to those that answer)",
                    ep.name, scrub(e.message, settings.secrets()), len(found), len(endpoints))
    return found


def _left(settings: Settings, deadline: float) -> Settings:
    """``settings`` whose chat timeouts end by ``deadline`` (at least 0.1 s: a timeout is positive)."""
    t = settings.timeouts
    left = max(0.1, round(deadline - time.monotonic(), 1))
    return replace(settings, timeouts=replace(t, first_token=min(t.first_token, left),
                                              idle=min(t.idle, left), total=min(t.total, left)))


def _validate_one(one: Settings, ep: Endpoint, deadline: float, *, wanted: str | None,
                  catalogue: str | None, need_context: bool) -> ServedModel:
    health = HealthBook()  # validation neither reads nor feeds the shared book
    client = ChatClient(one, policy=_QUICK, health=health)
    _, served = client.list_models(deadline)
    if wanted or catalogue:
        model = pick_served_model(served, wanted=wanted, catalogue=catalogue, endpoint=ep.name)
    elif served:  # provider-level check: any served model proves the chat route works
        model = ServedModel(str(served[0].get("id")), context_size_of(served[0]))
    else:
        raise ModelNotFoundError("the server lists no models at /v1/models", endpoint=ep.name)
    if need_context and model.context_size is None:
        raise ConfigError(f"the server does not report the context size of {model.id!r}; enter "
                          "it in context_size", endpoint=ep.name)
    body = build_body(model.id, [{"role": "user", "content": "ping"}], {"max_tokens": 1})
    chat = ChatClient(_left(one, deadline), policy=_QUICK, health=health, prober=None)
    try:
        for _ in chat.stream(body):  # also the warm-up: the connection stays in the pool
            pass
    except TotalTimeout:
        if time.monotonic() < deadline - 0.1:
            raise  # the operator's own total timeout, shorter than validation's: its message holds
        raise TotalTimeout(f"no answer to a one-token chat request within validation's {DEADLINE:g}s "
                           "(the server is overloaded, stuck or too slow)", endpoint=ep.name) from None
    return model
