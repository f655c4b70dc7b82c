"""Credentials read once: the caller sends the same credentials with every request (Dify sends
the provider's or the model's form values each time), so their settings and secrets are parsed
once per distinct set and cached (parsing costs a request tens of microseconds otherwise)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from .settings import Settings, credential_secrets, parse_settings

__all__ = ["per_credentials", "secrets_for", "settings_for"]



def per_credentials[T](fn: Callable[[Mapping], T]) -> Callable[[Mapping], T]:
    """``fn(credentials)``, cached by the credentials' items. Invalid ones raise again each time
    (an exception is never cached)."""
    cached = functools.lru_cache(maxsize=64)(lambda items: fn(dict(items)))

    def get(credentials: Mapping) -> T:
        try:
            return cached(tuple(sorted(credentials.items())))
        except TypeError:  # an unhashable value: nothing to cache by
            return fn(credentials)
    return get


settings_for: Callable[[Mapping], Settings] = per_credentials(parse_settings)
# what a request's secret scope starts with: read from the raw credentials, so that it covers
# credentials that fail to parse too
secrets_for: Callable[[Mapping], frozenset[str]] = per_credentials(credential_secrets)
