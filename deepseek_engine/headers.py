"""What every request sends for its identity, and keeps out of a server's words.

The base headers of a chat or listing request, the credential's own (an API key, an OAuth2 token:
``auth.py``), a fresh token once an endpoint refused the one sent, and the scrubbing of the
credential a request sent from what a server said back.
"""

from __future__ import annotations

from .auth import Auth
from .errors import scrub

__all__ = ["BASE_HEADERS", "request_headers", "refreshed", "without_credentials"]

# identity: the stream is parsed from the raw body (iter_raw), and a gateway that gzips an event
# stream also holds tokens back until its compressor flushes
BASE_HEADERS = {"Accept": "text/event-stream", "Accept-Encoding": "identity", "Content-Type": "application/json"}


def request_headers(auth: Auth) -> dict[str, str]:
    """The headers of a request now: may fetch an OAuth2 token, whose failures name the token
    endpoint, not a GPU endpoint."""
    return {**BASE_HEADERS, **auth.headers()}


def _sent_credential(headers: dict[str, str]) -> str:
    """The credential of a request's Authorization header (the token after "Bearer ", ...)."""
    return headers.get("Authorization", "").partition(" ")[2]


def refreshed(auth: Auth, headers: dict[str, str]) -> dict[str, str] | None:
    """``headers`` with a fresh token after an endpoint refused theirs (revoked, rotated or
    expired early), or None when this auth cannot refresh. Only the refused token is dropped:
    N requests refused at once cause one refetch, not N."""
    if not auth.refreshable:
        return None
    auth.invalidate(_sent_credential(headers))
    return {**headers, **auth.headers()}


def without_credentials(text: str, headers: dict[str, str]) -> str:
    """A server's own words without the credential this request sent: some gateways quote the
    Authorization header back in their error pages (a bare token, not only after "Bearer")."""
    sent = _sent_credential(headers)
    return scrub(text, [sent]) if sent else text
