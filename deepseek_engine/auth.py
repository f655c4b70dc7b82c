"""How requests prove who they are: nothing, a static bearer (an API key or a JWT issued
elsewhere), or OAuth2 client credentials.

OAuth2 tokens come from the token endpoint (the client credentials grant), once: cached until shortly before
they expire, shared by every invocation in the process (model instances are per request, so the
cache is process-wide), fetched by one caller while concurrent ones wait (no stampede), and
dropped once when an endpoint answers 401 so the next attempt fetches a fresh one (only the
refused token: N requests refused together cause one refetch).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from urllib.parse import quote

import httpx

from .body import ERROR_CAP, Body, read_capped
from .errors import AuthError, ConnectError, connection_reason, remember_secret, scrub
from .settings import display_url
from .transport import one_shot_transport, read_budget

__all__ = ["Auth", "NoAuth", "StaticBearer", "OAuth2ClientCredentials", "oauth2_source"]

REFRESH_MARGIN = 30.0  # seconds before expiry at which a token counts as expired


class Auth:
    refreshable = False

    def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self, token: str) -> None:
        """An endpoint refused ``token``: forget it (if it is the one still cached)."""


class NoAuth(Auth):
    pass


class StaticBearer(Auth):
    def __init__(self, token: str) -> None:
        self._header = {"Authorization": f"Bearer {token}"}

    def headers(self) -> dict[str, str]:
        return self._header

    def __repr__(self) -> str:
        return "StaticBearer(***)"


class OAuth2ClientCredentials(Auth):
    refreshable = True

    def __init__(self, token_url: str, client_id: str, client_secret: str, *, scope: str | None = None,
                 audience: str | None = None, verify: object = True, timeout: float = 10.0) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.audience = audience
        self.verify = verify
        self.timeout = timeout
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()
        self.fetches = 0  # observable by tests: one fetch, not a stampede

    def __repr__(self) -> str:
        return f"OAuth2ClientCredentials({display_url(self.token_url)!r}, client_id={self.client_id!r})"

    def headers(self) -> dict[str, str]:
        token = self._token
        if token is None or time.monotonic() >= self._expires_at:
            with self._lock:  # one caller fetches; the others wait and reuse its token
                if self._token is None or time.monotonic() >= self._expires_at:
                    self._fetch()
                token = self._token
        return {"Authorization": f"Bearer {token}"}

    def invalidate(self, token: str) -> None:
        # Only if it is still the refused token: of N requests refused together, the first drops
        # it and fetches a new one; the others, refused for the same old token, reuse the new one.
        with self._lock:
            if self._token == token:
                self._token = None

    def _fetch(self) -> None:
        """The client credentials grant (RFC 6749 section 4.4), the client authenticated with
        HTTP Basic (``client_secret_basic``, section 2.3.1: both parts form-encoded first)."""
        where = display_url(self.token_url)
        form = {"grant_type": "client_credentials"}
        form |= {k: v for k, v in (("scope", self.scope), ("audience", self.audience)) if v}
        basic = httpx.BasicAuth(quote(self.client_id), quote(self._secret))  # as Authlib did
        try:
            # one deadline for the whole fetch: httpx's timeouts are per read, and a trickling
            # token endpoint would hold this credential's lock, so every request that uses it
            with read_budget(None, time.monotonic() + self.timeout), \
                    httpx.Client(transport=one_shot_transport(self.verify), timeout=self.timeout,
                                 trust_env=False) as session, \
                    session.stream("POST", self.token_url, data=form, auth=basic,
                                   headers={"accept": "application/json"}) as r:
                status, body = r.status_code, read_capped(r, ERROR_CAP)
        except httpx.HTTPError as e:
            reason = (f"timed out (no token within {self.timeout:g}s)" if isinstance(e, httpx.TimeoutException)
                      else connection_reason(e))
            hint = ("its certificate is checked like the endpoints': put the CA that signed it in "
                    "tls_ca_bundle" if "certificate" in reason else
                    "check oauth2_token_url and that the identity provider is reachable from the plugin")
            raise ConnectError(f"could not reach the OAuth2 token endpoint: {reason}", endpoint=where,
                               hint=hint) from None
        token = _json_object(body)
        if token is not None and "error" in token:  # section 5.2, whatever the status
            said = token.get("error_description")
            raise AuthError(f"the OAuth2 token endpoint refused the client ({scrub(str(token['error']))[:100]}"
                            f"{': ' + scrub(str(said))[:200] if said else ''}). Check "
                            "oauth2_client_id, oauth2_client_secret and the scope.", endpoint=where)
        if status != 200:
            raise AuthError(f"the OAuth2 token endpoint answered HTTP {status}", endpoint=where)
        if token is None:
            raise AuthError("the OAuth2 token endpoint did not answer a token (JSON with "
                            "access_token)", endpoint=where)
        access = token.get("access_token")
        if not access:
            raise AuthError("the OAuth2 token endpoint answered without an access_token", endpoint=where)
        if not (isinstance(access, str) and access.isascii() and access.isprintable()):
            raise AuthError("the OAuth2 token endpoint answered an access_token that cannot be sent in "
                            "an HTTP header (not printable ASCII)", endpoint=where)
        ttl = token.get("expires_in") or 3600
        if isinstance(ttl, str) and ttl.isdigit():
            ttl = int(ttl)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl == ttl:  # NaN
            raise AuthError(f"the OAuth2 token endpoint answered an expires_in that is not a number "
                            f"({scrub(str(ttl))[:40]!r})", endpoint=where)
        self.fetches += 1
        remember_secret(access)  # before any server can quote it back
        self._token = access
        self._expires_at = time.monotonic() + max(1.0, ttl - min(REFRESH_MARGIN, ttl / 2))


def _json_object(body: Body) -> dict | None:
    """A token endpoint's JSON object, or None (not JSON, not an object, cut at the cap)."""
    if not body.whole:
        return None
    try:
        value = json.loads(body.data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


_SOURCES: dict[tuple, OAuth2ClientCredentials] = {}
_SOURCES_LOCK = threading.Lock()


def oauth2_source(token_url: str, client_id: str, client_secret: str, scope: str | None,
                  audience: str | None, verify: object, tls_key: tuple) -> OAuth2ClientCredentials:
    """The process-wide token source for these credentials (the secret only as a digest)."""
    key = (token_url, client_id, hashlib.sha256(client_secret.encode()).hexdigest(), scope,
           audience, tls_key)
    src = _SOURCES.get(key)
    if src is None:
        with _SOURCES_LOCK:
            src = _SOURCES.get(key)
            if src is None:
                src = _SOURCES[key] = OAuth2ClientCredentials(
                    token_url, client_id, client_secret, scope=scope, audience=audience, verify=verify)
    return src
