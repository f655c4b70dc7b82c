"""The answer cache's Redis, as the plugin would reach it (``DEEPSEEK_CACHE_REDIS_URL`` and the
other ``DEEPSEEK_CACHE_*`` variables in the doctor's environment, the plugin's store and deadline):
reachable, fast enough for the plugin's deadline, a write read back, and sized to evict
(``maxmemory`` with an LRU or LFU policy) rather than refuse writes when full."""

from __future__ import annotations

import time
from collections.abc import Mapping

from deepseek_engine.answer_cache.store import RedisStore, StoreError, store_config

from .report import FAIL, OK, WARN, Check

__all__ = ["check_cache"]

_EVICTING = ("allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu")
_ROUNDS = 5


def check_cache(env: Mapping[str, str]) -> Check | None:
    """None when the environment names no cache Redis (the cache is not in use)."""
    try:
        config = store_config(env)
    except ValueError as e:
        return Check("cache", FAIL, str(e))
    if config is None:
        return None
    # the doctor waits longer than the plugin would, to tell slow from down
    store = RedisStore(config.__class__(url=config.url, password=config.password, ca_file=config.ca_file,
                                        timeout=max(1.0, config.timeout)))
    try:
        return _check(store, config.timeout)
    finally:
        store.close()


def _check(store: RedisStore, deadline: float) -> Check:
    where = store.name
    try:
        store.ping()
        times = []
        for i in range(_ROUNDS):
            key = f"dshc:doctor:{time.time_ns()}:{i}"
            t = time.perf_counter()
            store.set(key, b"doctor", 10)
            back = store.get(key)
            times.append((time.perf_counter() - t) / 2)
            if back != b"doctor":
                return Check("cache", FAIL, f"{where}: a value written was not read back ({back!r:.40})")
        memory = store.info("memory")
    except StoreError as e:
        return Check("cache", FAIL, f"{where} cannot be used: {e}. The plugin bypasses the cache while "
                     "it fails; check DEEPSEEK_CACHE_REDIS_URL (and _PASSWORD, _CA) in the plugin's environment")
    times.sort()
    median = times[len(times) // 2]
    data = {"redis": where, "median_ms": round(median * 1000, 2), "deadline_ms": round(deadline * 1000, 1),
            "maxmemory": memory.get("maxmemory"), "policy": memory.get("maxmemory_policy")}
    problems = []
    if median > deadline / 2:
        problems.append(f"a command takes {median * 1000:.1f} ms, near or past the plugin's deadline of "
                        f"{deadline * 1000:g} ms (DEEPSEEK_CACHE_TIMEOUT_MS): run the Redis beside the plugin")
    if not memory.get("maxmemory"):
        problems.append("maxmemory is not set: the Redis grows until the machine runs out; set "
                        "maxmemory (e.g. 256mb) and maxmemory-policy allkeys-lru")
    elif memory.get("maxmemory_policy") not in _EVICTING:
        problems.append(f"maxmemory-policy is {memory.get('maxmemory_policy')}: when full, writes fail "
                        "instead of evicting old answers; set allkeys-lru")
    if problems:
        return Check("cache", WARN, f"{where}: " + "; ".join(problems), data)
    return Check("cache", OK, f"{where}: {median * 1000:.2f} ms a command, maxmemory "
                 f"{memory.get('maxmemory')} bytes with {memory.get('maxmemory_policy')}", data)
