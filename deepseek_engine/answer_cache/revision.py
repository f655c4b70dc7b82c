"""The served model's revision, for the key: what ``/v1/models`` says about the served id (vLLM's
``root``, the weights' path, and its context length), as last read, never waiting on a server. A
redeployment under the same name with another path or context changes every key; weights changed
in place need ``DEEPSEEK_CACHE_EPOCH`` bumped (docs/cache.md)."""

from __future__ import annotations

from ..discovery import known_models
from ..settings import Settings

__all__ = ["revision_of", "served_revision"]


def served_revision(served_id: str, listing: list[dict] | None) -> str:
    """Pure: the revision of ``served_id`` in a ``/v1/models`` listing ("" when unknown)."""
    for m in listing or ():
        if m.get("id") == served_id:
            return f"{m.get('root') or ''}|{m.get('max_model_len') or ''}"
    return ""


def revision_of(settings: Settings, served_id: str) -> str | None:
    """``served_id``'s revision as last read, or None while ``/v1/models`` was never read for
    these endpoints (its first read starts in the background: the request bypasses the cache)."""
    known = known_models(settings)
    return served_revision(served_id, known[1]) if known else None
