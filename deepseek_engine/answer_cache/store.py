"""The Redis the answer cache keeps its entries in, configured only from the plugin's environment
(never from a workspace's form): a URL (``redis://`` or ``rediss://`` for TLS), an optional
password and CA file, and short deadlines on every connect and command, with no retries: a Redis
that is down or hangs costs a request one deadline, and the circuit (``circuit.py``) stops even
that after a few."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..settings import display_url

__all__ = ["RedisStore", "StoreConfig", "StoreError", "store_config"]

DEFAULT_TIMEOUT_MS = 50.0


class StoreError(Exception):
    """The store failed (down, slow, refused, full): the cache is bypassed for this call."""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = field(repr=False)  # may carry a password
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT_MS / 1000  # seconds, each connect and each command

    @property
    def name(self) -> str:
        """For messages: host:port/db, never the password."""
        return display_url(self.url)


def store_config(env: Mapping[str, str]) -> StoreConfig | None:
    """The store the environment names (``DEEPSEEK_CACHE_REDIS_URL``, ``..._PASSWORD``,
    ``..._CA``, ``DEEPSEEK_CACHE_TIMEOUT_MS``), or None when it names none. A malformed value
    raises ValueError naming the variable."""
    url = env.get("DEEPSEEK_CACHE_REDIS_URL", "").strip()
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("DEEPSEEK_CACHE_REDIS_URL must start with redis://, rediss:// (TLS) or "
                         f"unix://, e.g. redis://cache-redis:6379/0; got {display_url(url)!r}")
    raw = env.get("DEEPSEEK_CACHE_TIMEOUT_MS", "").strip()
    try:
        ms = float(raw) if raw else DEFAULT_TIMEOUT_MS
    except ValueError:
        ms = -1.0
    if not 1 <= ms <= 5000:
        raise ValueError(f"DEEPSEEK_CACHE_TIMEOUT_MS must be 1 to 5000 milliseconds, got {raw[:20]!r}")
    ca = env.get("DEEPSEEK_CACHE_REDIS_CA", "").strip() or None
    if ca and not url.startswith("rediss://"):
        raise ValueError("DEEPSEEK_CACHE_REDIS_CA is for TLS: write DEEPSEEK_CACHE_REDIS_URL as rediss://..., "
                         "or unset DEEPSEEK_CACHE_REDIS_CA")
    return StoreConfig(url=url, password=env.get("DEEPSEEK_CACHE_REDIS_PASSWORD") or None, ca_file=ca,
                       timeout=ms / 1000)


class RedisStore:
    """GET and SET EX on one Redis; every failure is a ``StoreError`` (never the password)."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.name = config.name
        extra = {"ssl_ca_certs": config.ca_file} if config.ca_file else {}
        if config.password:
            extra["password"] = config.password
        # no connection here: the first command opens one (plugin start never waits on Redis)
        self.client = redis.Redis.from_url(
            config.url, socket_timeout=config.timeout, socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0, **extra)

    def get(self, key: str) -> bytes | None:
        return self._call(self.client.get, key)

    def set(self, key: str, value: bytes, ttl: int) -> None:
        self._call(self.client.set, key, value, ex=ttl)

    def ping(self) -> None:
        self._call(self.client.ping)

    def info(self, section: str) -> dict:
        return self._call(self.client.info, section)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (redis.RedisError, OSError) as e:
            # redis-py's words name host:port, never the password; the cause is dropped all the same
            raise StoreError(f"{type(e).__name__}: {str(e)[:200]}") from None
        except Exception as e:  # noqa: BLE001 - a client library's own fault: still no failed request
            raise StoreError(f"the Redis client failed: {type(e).__name__}") from None

    def close(self) -> None:
        self.client.close()
