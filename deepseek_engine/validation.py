"""Credential validation in seconds: every endpoint reachable, auth accepted, model served,
context size known, and the chat route answering a one-token request."""

from __future__ import annotations

import logging
from dataclasses import replace

from .client import ChatClient
from .discovery import ServedModel, context_size_of, pick_served_model
from .errors import ConfigError, ModelNotFoundError
from .health import HealthBook
from .protocol import build_body
from .retry import RetryPolicy, RetryBudget
from .settings import Settings
from .warmup import WARMER

__all__ = ["validate_endpoints"]

log = logging.getLogger(__name__)

# Validation must answer while the operator waits: short budgets, one attempt per endpoint.
_QUICK = RetryPolicy(attempts=1, budget=RetryBudget())


def validate_endpoints(settings: Settings, *, wanted: str | None, catalogue: str | None,
                       need_context: bool = False) -> list[ServedModel]:
    if not settings.tls.verify:
        log.warning("TLS certificate verification is OFF for %s: insecure, for testing only",
                    ", ".join(e.name for e in settings.endpoints))
    t = settings.timeouts
    quick = replace(settings, timeouts=replace(t, connect=min(t.connect, 5.0),
                                               first_token=min(t.first_token, 30.0),
                                               idle=min(t.idle, 30.0), total=min(t.total, 60.0)))
    found = []
    for ep in settings.endpoints:
        one = replace(quick, endpoints=(ep,))
        client = ChatClient(one, policy=_QUICK, health=HealthBook())  # validation neither reads nor feeds the shared book
        _, served = client.list_models()
        if wanted or catalogue:
            model = pick_served_model(served, wanted=wanted, catalogue=catalogue, endpoint=ep.name)
        elif served:  # provider-level check: any served model proves the chat route works
            model = ServedModel(str(served[0].get("id")), context_size_of(served[0]))
        else:
            raise ModelNotFoundError("the server lists no models at /v1/models", endpoint=ep.name)
        if need_context and model.context_size is None:
            raise ConfigError(f"[{ep.name}] the server does not report the context size of "
                              f"{model.id!r}; enter it in context_size")
        body = build_body(model.id, [{"role": "user", "content": "ping"}], {"max_tokens": 1})
        for _ in client.stream(body):  # also the warm-up: the connection stays in the pool
            pass
        WARMER.mark(ep.url, model.id)
        found.append(model)
    return found
