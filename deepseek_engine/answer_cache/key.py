"""Which requests the answer cache may serve, and the key of one: pure functions, no I/O.

The key is a hash over a versioned, canonical form of exactly what decides the answer: the model
and its served revision, and the final request body the plugin sends (messages, sampling, stop,
tools, response format, thinking settings). What does not decide it stays out: the stream flag,
the user id (Dify's end user, not a tenant) and routing. Every key is scoped by a keyed hash of
the credential, so two workspaces never share or probe each other's entries (LiteLLM #29955).
"""

from __future__ import annotations

import hashlib
import hmac
import json

__all__ = ["KEY_PREFIX", "SCHEMA", "answer_key", "cache_scope", "canonical", "uncacheable"]

SCHEMA = 1  # bump when the canonical form or the stored value changes: old entries become misses
KEY_PREFIX = f"dshc:v{SCHEMA}:"
# in the body, but not what decides the answer
_NOT_IN_KEY = frozenset({"stream", "stream_options", "user"})


def uncacheable(body: dict, *, sampled: bool) -> str | None:
    """Why the answer to ``body`` must not be cached (a short reason for the bypass counter),
    or None when it may be: one choice, no log probabilities, and temperature 0 unless the
    credential opted in to caching ``sampled`` answers (one draw then answers every repeat)."""
    if body.get("n", 1) != 1:
        return "n"
    if body.get("logprobs") or body.get("top_logprobs"):
        return "logprobs"
    if not sampled and body.get("temperature") != 0:  # unset: the server's default, which samples
        return "sampled"
    return None


def canonical(body: dict, *, revision: str, epoch: str) -> bytes:
    """The canonical form hashed into a key: sorted keys, no whitespace, UTF-8, versioned."""
    kept = {k: v for k, v in body.items() if k not in _NOT_IN_KEY}
    doc = {"schema": SCHEMA, "epoch": epoch, "revision": revision, "body": kept}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def answer_key(scope: str, body: dict, *, revision: str, epoch: str = "") -> str:
    """The Redis key of ``body``'s answer for the credential ``scope`` (``cache_scope``)."""
    digest = hashlib.sha256(canonical(body, revision=revision, epoch=epoch)).hexdigest()
    return f"{KEY_PREFIX}{scope}:{digest}"


def cache_scope(identity: str, endpoints: tuple[str, ...], secret: bytes) -> str:
    """A keyed hash of the credential's ``identity`` (``Settings.scope``, or one made with the
    operator's cache secret) and the endpoints it reaches: credentials without a key (auth none)
    on different servers are different scopes too."""
    material = json.dumps([identity, sorted(endpoints)], separators=(",", ":")).encode()
    return hmac.new(secret, material, hashlib.sha256).hexdigest()[:32]
