"""The answer cache as one request meets it: ``AnswerCache.visit`` decides whether the request may
use it and gives its key; ``Visit.lookup`` reads (a hit, or None), ``Visit.keep`` queues the
finished answer's write. It never fails a request: every store error, deadline or unreadable value
is a miss, the circuit bypasses a failing store, and the operator reads one warning when the store
fails and one when it is back, never one per request.

Modes, per credential (``Settings.answer_cache``): ``off``; ``shadow`` reads and writes but never
serves (it counts would-be hits on the operator's own traffic); ``on`` serves hits."""

from __future__ import annotations

import logging
import os
import secrets as _secrets
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from ..settings import AnswerCacheSettings, Settings, credential_scope
from ..telemetry import TELEMETRY
from .circuit import Circuit
from .entry import CACHED_FINISH, MAX_VALUE_BYTES, BadEntry, Entry, decode, encode
from .key import answer_key, cache_scope, uncacheable
from .revision import revision_of
from .store import RedisStore, StoreError, store_config
from .writer import Writer

__all__ = ["AnswerCache", "Visit", "answer_cache", "reset_answer_cache"]

log = logging.getLogger(__name__)


class AnswerCache:
    """``store``: a ``RedisStore`` (None: the environment names none, so every use is a bypass).
    ``secret``: the key of the credential scopes; from ``DEEPSEEK_CACHE_SECRET`` it is the same in
    every plugin process (entries outlive a restart and are shared by replicas), otherwise it is
    this process's own. ``epoch``: bumped by the operator to drop every entry at once."""

    def __init__(self, store: RedisStore | None, *, secret: bytes | None = None, epoch: str = "",
                 circuit: Circuit | None = None, writer_capacity: int = 256) -> None:
        self.store = store
        self.stable_secret = secret is not None
        self.secret = secret if secret is not None else _secrets.token_bytes(32)
        self.epoch = epoch
        self.circuit = circuit or Circuit()
        self.writer = Writer(self._write, writer_capacity)
        self.counts: Counter = Counter()  # event -> count, and bytes_read / bytes_written
        self._told: set[str] = set()
        self._scopes: dict[tuple, str] = {}  # (Settings.scope, endpoint URLs) -> scope in keys
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AnswerCache:
        env = os.environ if env is None else env
        try:
            config = store_config(env)
        except ValueError as e:
            log.warning("answer cache: %s; it stays off until this is fixed", e)
            config = None
        secret = env.get("DEEPSEEK_CACHE_SECRET", "").encode() or None
        return cls(RedisStore(config) if config else None, secret=secret,
                   epoch=env.get("DEEPSEEK_CACHE_EPOCH", "").strip())

    # -- one request -----------------------------------------------------------------------
    def visit(self, settings: Settings, body: dict, served: str, *, revision: str | None = None) -> Visit | None:
        """This request's use of the cache, or None (off for the credential, not a request the
        cache may answer, no store, or the circuit open: each but off counted as a bypass)."""
        policy = settings.answer_cache
        if policy.mode == "off":
            return None
        reason = uncacheable(body, sampled=policy.sampled)
        if reason is None and self.store is None:
            reason = "no_store"
            self._tell_once("no_store", "answer cache is on for a credential, but the plugin's "
                            "environment names no Redis (DEEPSEEK_CACHE_REDIS_URL): bypassed")
        if reason:
            self.count("bypass", reason)
            return None
        if revision is None:
            revision = revision_of(settings, served)
            if revision is None:
                self.count("bypass", "revision_unknown")
                return None
        try:
            key = answer_key(self._scope(settings), body, revision=revision, epoch=self.epoch)
        except (TypeError, ValueError):  # a value JSON cannot hold exactly (NaN, an odd type): not keyed
            self.count("bypass", "unkeyable")
            return None
        return Visit(self, key, policy)

    def _scope(self, settings: Settings) -> str:
        """The credential's scope in keys, worked out once per credential and endpoint set (two
        keyed hashes cost a request tens of microseconds)."""
        endpoints = tuple(e.url for e in settings.endpoints)
        known = self._scopes.get((settings.scope, endpoints))
        if known is None:
            identity = settings.scope
            if self.stable_secret:  # Settings.scope's key is per process: one from the operator's secret
                identity = credential_scope(settings.api_key, settings.oauth2, settings.tls, key=self.secret)
            known = cache_scope(identity, endpoints, self.secret)
            if len(self._scopes) >= 1024:  # bounded: a stream of new credentials cannot grow it
                self._scopes.clear()
            self._scopes[(settings.scope, endpoints)] = known
        return known

    # -- the store, behind the circuit -----------------------------------------------------
    def read(self, key: str) -> tuple[bool, Entry | None]:
        """Whether the store was asked (not bypassed, and it answered), and the entry it held."""
        if not self.circuit.allows():
            self.count("bypass", "circuit_open")
            return False, None
        try:
            raw = self.store.get(key)
        except StoreError as e:
            self._failed(e)
            return False, None
        self._worked()
        if raw is None:
            return True, None
        self.count("bytes_read", n=len(raw))
        try:
            return True, decode(raw)
        except BadEntry as e:
            self.count("unreadable")
            self._tell_once("unreadable", f"answer cache: an entry in {self.store.name} is unreadable "
                            f"({e}); such entries are misses and are overwritten")
            return True, None

    def _write(self, key: str, value: bytes, ttl: int) -> None:
        if not self.circuit.allows():
            self.count("bypass", "circuit_open")
            return
        try:
            self.store.set(key, value, ttl)
        except StoreError as e:
            self._failed(e)
            return
        self._worked()
        self.count("bytes_written", n=len(value))

    def _failed(self, e: StoreError) -> None:
        self.count("error")
        if self.circuit.failure():
            log.warning("answer cache: %s is failing (%s); bypassed for %gs at a time until it answers",
                        self.store.name, e, self.circuit.cooldown)

    def _worked(self) -> None:
        if self.circuit.success():
            log.warning("answer cache: %s answers again; the cache is back in use", self.store.name)

    # -- telemetry -------------------------------------------------------------------------
    def count(self, event: str, reason: str = "", n: int = 1) -> None:
        with self._lock:
            self.counts[f"{event}:{reason}" if reason else event] += n
        TELEMETRY.answer_cache(event, reason, n)

    def _tell_once(self, what: str, message: str) -> None:
        if what not in self._told:
            self._told.add(what)
            log.warning(message)


@dataclass(slots=True)
class Visit:
    cache: AnswerCache
    key: str
    policy: AnswerCacheSettings

    @property
    def serves(self) -> bool:
        return self.policy.mode == "on"

    def lookup(self) -> Entry | None:
        """The stored answer when the cache serves it; in shadow mode, None always (a would-be
        hit is only counted)."""
        asked, entry = self.cache.read(self.key)
        if asked:  # a bypass was counted as one
            self.cache.count(f"{'' if self.serves else 'shadow_'}{'hit' if entry else 'miss'}")
        return entry if self.serves else None

    def keep(self, entry: Entry) -> None:
        """Queue ``entry``'s write, if it finished normally and is small enough (after the answer
        was delivered: the caller calls this once the last piece went out)."""
        if entry.finish_reason not in CACHED_FINISH:
            self.cache.count("bypass", "finish")
            return
        value = encode(entry)
        if len(value) > MAX_VALUE_BYTES:
            self.cache.count("bypass", "too_large")
            return
        if not self.cache.writer.offer(self.key, value, self.policy.ttl):
            self.cache.count("dropped")


_CACHE: AnswerCache | None = None
_init_lock = threading.Lock()


def answer_cache() -> AnswerCache:
    """The process-wide cache, made from the environment at its first use (never at import)."""
    global _CACHE
    if _CACHE is None:
        with _init_lock:
            if _CACHE is None:
                _CACHE = AnswerCache.from_env()
    return _CACHE


def reset_answer_cache(cache: AnswerCache | None = None) -> None:
    """Replace the process-wide cache (tests; None: made again from the environment)."""
    global _CACHE
    _CACHE = cache
