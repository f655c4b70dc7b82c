"""Warm-up: the first time a process sees an endpoint (or right after validation), open a pooled
connection and send a one-token completion, so users do not pay connection setup and the server's
cold first request. Runs in the background: it never delays the request that triggered it."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from .client import ChatClient
from .errors import EngineError, carry_scope, public_message
from .protocol import build_body
from .retry import RetryPolicy

__all__ = ["Warmer", "WARMER", "warm_once"]

log = logging.getLogger(__name__)
_ONE_SHOT = RetryPolicy.one_shot()


def warm_once(client: ChatClient, endpoint, model: str) -> bool:  # noqa: ANN001
    """One tiny completion on ``endpoint`` through ``client``'s pool; True if it answered."""
    single = ChatClient(replace(client.settings, endpoints=(endpoint,)), registry=client.registry,
                        health=client.health, policy=_ONE_SHOT, prober=None)
    body = build_body(model, [{"role": "user", "content": "hi"}], {"max_tokens": 1})
    try:
        for _ in single.stream(body):
            pass
        return True
    except EngineError as e:  # warm-up is best effort; real traffic reports real failures
        log.info("warm-up of %s failed: %s", endpoint, public_message(e, client.settings))
        return False


class Warmer:
    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def mark(self, endpoint_url: str, model: str) -> None:
        with self._lock:
            self._seen.add((endpoint_url, model))

    def warm(self, client: ChatClient, model: str) -> list[threading.Thread]:
        with self._lock:
            todo = [e for e in client.settings.endpoints if (e.url, model) not in self._seen]
            self._seen.update((e.url, model) for e in todo)
        threads = [threading.Thread(target=carry_scope(warm_once), args=(client, e, model), daemon=True,
                                    name="deepseek-warmup") for e in todo]
        for t in threads:
            t.start()
        return threads


WARMER = Warmer()
