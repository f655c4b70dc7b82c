"""Which model id the server serves, and its context size, read from ``/v1/models``.

Operators often leave ``served_model_name`` blank; vLLM then serves the HF repo id
(``deepseek-ai/DeepSeek-R1-Distill-Qwen-32B``) and lists ``max_model_len`` beside it. Answers
are cached process-wide per endpoint set (``DIRECTORY``); ``served_model``, ``known_context`` and
``discovered_context`` answer for one credential's settings.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from .client import ChatClient
from .errors import EngineError, ModelNotFoundError, carry_scope, public_message, report_unexpected
from .families import known_other_family, normalise, same_model
from .health import HEALTH, HealthBook
from .settings import Endpoint, Settings

log = logging.getLogger(__name__)

__all__ = ["DIRECTORY", "ModelDirectory", "ServedModel", "context_size_of", "discovered_context",
           "endpoint_set", "known_context", "known_models", "normalise", "pick_served_model", "served_model",
           "served_models"]

@dataclass(frozen=True, slots=True)
class ServedModel:
    id: str
    context_size: int | None


def context_size_of(entry: dict) -> int | None:
    for key in ("max_model_len", "context_length", "max_context_length"):
        v = entry.get(key)
        if isinstance(v, int) and v > 0:
            return v
    meta = entry.get("meta")  # llama.cpp
    if isinstance(meta, dict) and isinstance(meta.get("n_ctx_train"), int):
        return meta.get("n_ctx") or meta["n_ctx_train"]
    return None


def pick_served_model(served: list[dict], *, wanted: str | None, catalogue: str | None,
                      endpoint: str) -> ServedModel:
    """The served entry for ``wanted`` (exact id), else the one whose id is the catalogue model's
    name (normalised), else the one variant of it served (``families.same_model``: a dated
    snapshot, a quantisation, an org prefix), else the only one served; otherwise a clear error
    listing what is served. The only one served is taken under any name (an operator's alias),
    unless its name says it is another family of DeepSeek's (V3.2-Speciale is not V3.2)."""
    ids = [str(m.get("id")) for m in served if m.get("id")]
    listing = ", ".join(ids[:20]) or "nothing"
    by_id = {str(m.get("id")): m for m in served}
    if wanted:
        if wanted in by_id:
            return ServedModel(wanted, context_size_of(by_id[wanted]))
        raise ModelNotFoundError(f"the server does not serve {wanted!r}; it serves: {listing}. "
                                 "Fix the served model name or leave it blank.", endpoint=endpoint)
    if catalogue:
        key = normalise(catalogue)
        for m in served:
            if normalise(str(m.get("id", ""))) == key:
                return ServedModel(str(m["id"]), context_size_of(m))
        variants = [i for i in ids if same_model(i, catalogue)]
        if len(variants) == 1:
            return ServedModel(variants[0], context_size_of(by_id[variants[0]]))
        if variants:
            raise ModelNotFoundError(f"several served models are {catalogue}: {', '.join(variants[:20])}. "
                                     "Set served_model_name to the one to use.", endpoint=endpoint)
    if len(ids) == 1:
        other = catalogue and known_other_family(ids[0], catalogue)
        if other:
            raise ModelNotFoundError(f"the server serves {ids[0]!r}, a {other} model, not {catalogue}: choose "
                                     "that model's entry in Dify, or set served_model_name to use it anyway",
                                     endpoint=endpoint)
        return ServedModel(ids[0], context_size_of(by_id[ids[0]]))
    raise ModelNotFoundError(f"cannot tell which served model is {catalogue or 'wanted'}: the "
                             f"server serves {listing}. Set served_model_name to one of them.",
                             endpoint=endpoint)


class _Flight:
    """One fetch in progress, which the callers that arrive meanwhile wait for."""

    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: tuple[Endpoint, list[dict]] | None = None
        self.error: BaseException | None = None


class ModelDirectory:
    """``/v1/models`` answers cached per endpoint set for ``ttl`` seconds (process-wide). Callers
    that find no answer while one is being fetched wait for that fetch (a burst of first requests
    after a restart asks the server once), at most ``wait`` seconds, then fetch on their own."""

    def __init__(self, ttl: float = 60.0, retry: float = 5.0, wait: float = 60.0) -> None:
        self.ttl = ttl
        self.retry = retry  # seconds between background fetches that failed
        self.wait = wait
        self._cache: dict[tuple, tuple[float, Endpoint, list[dict]]] = {}
        self._tried: dict[tuple, float] = {}  # key -> when a background fetch last started
        self._flights: dict[tuple, _Flight] = {}
        self._lock = threading.Lock()

    def known(self, key: tuple, fetch) -> tuple[Endpoint, list[dict]] | None:
        """The last answer for ``key``, however old, at once; when there is none or it is stale,
        one background ``fetch`` refreshes it. For callers that must not wait on a server (a
        schema Dify asks for before every request)."""
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is None or now - hit[0] >= self.ttl:
            with self._lock:
                due = now - self._tried.get(key, float("-inf")) >= self.retry
                if due:
                    self._tried[key] = now
            if due:
                threading.Thread(target=self._refresh, args=(key, fetch), daemon=True,
                                 name="deepseek-discovery").start()
        return (hit[1], hit[2]) if hit else None

    def _refresh(self, key: tuple, fetch) -> None:
        try:
            self.get(key, fetch)
        except EngineError as e:  # the next request reports the server's own words
            log.info("served models of %s not refreshed: %s", e.endpoint or "the endpoints", type(e).__name__)

    def get(self, key: tuple, fetch) -> tuple[Endpoint, list[dict]]:
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < self.ttl:
            return hit[1], hit[2]
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if not leader:  # the key holds one credential's scope: its answer or error is its own
            if flight.done.wait(self.wait):
                if flight.error is not None:
                    raise flight.error
                if flight.result is not None:
                    return flight.result
            # that fetch takes too long to wait for, or its caller was stopped: ask on our own
            return fetch()
        try:
            ep, models = fetch()
        except Exception as e:  # the server's answer to this credential: shared with the waiters
            flight.error = e
            raise
        else:
            flight.result = (ep, models)
            with self._lock:
                self._cache[key] = (now, ep, models)
            return ep, models
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


DIRECTORY = ModelDirectory()


def endpoint_set(settings: Settings) -> tuple[str, ...]:
    """What the directory is keyed by: replicas of one set serve the same models, as this
    credential sees them (a gateway may serve each key its own models, and one workspace's
    answer must not be another's)."""
    return (settings.scope, *(e.url for e in settings.endpoints))


def served_models(settings: Settings) -> tuple[Endpoint, list[dict]]:
    """``/v1/models`` of ``settings``' endpoints, cached process-wide (``DIRECTORY``)."""
    return DIRECTORY.get(endpoint_set(settings), lambda: ChatClient(settings).list_models())


def served_model(model: str, settings: Settings, *, catalogue: bool) -> str:
    """The id to send for ``model``: the served name the operator set, else a customizable
    model's own name (the operator typed the served name), else what the server serves for the
    catalogue entry ``model`` (its name, normalised, or the only model served)."""
    if settings.served_model_name:
        return settings.served_model_name
    if not catalogue:
        return model
    ep, served = served_models(settings)
    return pick_served_model(served, wanted=None, catalogue=model, endpoint=ep.name).id


def known_models(settings: Settings) -> tuple[Endpoint, list[dict]] | None:
    """``/v1/models`` of ``settings``' endpoints as last read, without waiting on a server: a
    missing or stale answer is refreshed in the background (by a client that neither reads nor
    feeds the shared health book, so requests still meet and report their own errors)."""
    return DIRECTORY.known(endpoint_set(settings), carry_scope(  # fetched in a background thread
        lambda: ChatClient(settings, health=HealthBook(), prober=None).list_models()))


def known_context(model: str, settings: Settings) -> int | None:
    """The served context of catalogue ``model`` as last read (``known_models``)."""
    known = known_models(settings)
    if known is None:
        return None
    ep, served = known
    try:
        return pick_served_model(served, wanted=settings.served_model_name, catalogue=model,
                                 endpoint=ep.name).context_size
    except ModelNotFoundError:
        return None  # validation and invoke say which models are served


def discovered_context(model: str, settings: Settings) -> int | None:
    """The served context of customizable ``model``, asked of the server (cached), or None when
    it cannot be known now: a schema must still render when the server is down (invoke will say
    why), so the reason is logged rather than raised."""
    try:
        if HEALTH.all_down(settings.endpoints, settings.scope):
            return None  # known down: a schema answers at once, not after a connect timeout
        ep, served = served_models(settings)
        return pick_served_model(served, wanted=settings.served_model_name or model,
                                 catalogue=None, endpoint=ep.name).context_size
    except EngineError as e:
        log.warning("context size not discovered for %s: %s", model, public_message(e, settings))
        return None
    except Exception as e:  # noqa: BLE001 - an answer of a shape nothing expected: likewise, logged
        report_unexpected(e, settings)
        return None
