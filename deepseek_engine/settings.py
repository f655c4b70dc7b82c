"""Credentials from the Dify console, validated into one immutable ``Settings``.

Every field gets a message an operator can act on; values that are secrets never appear in one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets as _secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from .errors import ConfigError
from .families import KINDS
from .tls import TLSConfig

__all__ = ["AnswerCacheSettings", "Endpoint", "Timeouts", "Settings", "parse_settings", "parse_endpoints",
           "display_url", "credential_secrets"]

MAX_ENDPOINTS = 64
_SPLIT = re.compile(r"[\s,;]+")
_OPTION = re.compile(r"^([a-z_]+)=(.*)$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    # both may carry user:password: never in a repr (a log of the settings would show it)
    url: str = field(repr=False)  # OpenAI base URL, e.g. http://gpu-1:8000/v1 (no trailing slash)
    root: str = field(repr=False)  # the URL without its /v1: where /health, /metrics, /tokenize live
    name: str  # for messages and logs: host:port/path, never credentials
    weight: float = 1.0  # relative capacity: a node with twice the GPUs gets weight=2
    zone: str = ""  # a label for messages and metrics
    priority: int = 0  # 0 = primary; higher groups take traffic only when lower ones cannot
    # the Basic credentials the URL's user:password stands for, worked out once (sent with chat)
    basic: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Defaults suit R1: long queueing + prefill, long reasoning, but a stall ends fast."""

    connect: float = 10.0
    first_token: float = 300.0
    idle: float = 60.0
    total: float = 1800.0


@dataclass(frozen=True, slots=True)
class OAuth2:
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    audience: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerCacheSettings:
    """The credential's use of the answer cache (answer_cache/, docs/cache.md)."""

    mode: str = "off"  # off, shadow (counts would-be hits, never serves), on
    ttl: int = 3600  # seconds an entry lives (DEFAULT_ANSWER_CACHE_TTL)
    sampled: bool = False  # also cache answers drawn at a temperature above 0


ANSWER_CACHE_MODES = ("off", "shadow", "on")
DEFAULT_ANSWER_CACHE_TTL = 3600
MAX_ANSWER_CACHE_TTL = 86400


@dataclass(frozen=True, slots=True)
class Settings:
    endpoints: tuple[Endpoint, ...]
    api_key: str | None = field(default=None, repr=False)
    served_model_name: str | None = None
    timeouts: Timeouts = Timeouts()
    context_size: int | None = None  # customizable models only
    max_tokens_to_sample: int | None = None
    tool_calling: bool = False
    # customizable models' kind: "none" (chat), "reasoning" (always), "hybrid" (thinking on
    # demand); None: decided by the model's name (families.custom_family)
    reasoning: str | None = None
    vision: bool = False  # customizable models: the served model takes images (images.py)
    structured_output: bool = True  # customizable models: the server constrains to a JSON schema
    tls: TLSConfig = TLSConfig()
    oauth2: OAuth2 | None = None
    routing_policy: str | None = None  # a name in routing/factory.py; None: the default policy
    answer_cache: AnswerCacheSettings = AnswerCacheSettings()
    # who is asking: a keyed hash of the credential's identity (key, OAuth2 client, TLS settings),
    # for the shared state one credential's settings may only change for itself (credential_scope)
    scope: str = field(default="", repr=False, compare=False)

    def secrets(self) -> list[str]:
        """Every secret value, so anything shown can be checked or scrubbed against them."""
        out = [self.api_key, _key_body(self.tls.client_key), self.oauth2.client_secret if self.oauth2 else None]
        out += [p for e in self.endpoints for p in _userinfo(e.url)]
        return [s for s in out if s and len(s) >= 4]


_SCOPE_KEY = _secrets.token_bytes(32)  # per process: a scope cannot be guessed from a credential


def credential_scope(api_key: str | None, oauth2: OAuth2 | None, tls: TLSConfig, *,
                     key: bytes = _SCOPE_KEY) -> str:
    """A short keyed hash naming one credential's identity, never revealing it. ``key``: this
    process's own by default; the answer cache passes the operator's, the same in every process."""
    identity = repr((api_key, oauth2 and (oauth2.token_url, oauth2.client_id, oauth2.client_secret,
                                          oauth2.scope, oauth2.audience), tls.key))
    return hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()[:24]


def basic_credentials(url: str) -> str | None:
    """The HTTP Basic credentials (base64 of ``user:password``) a URL's userinfo stands for."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return base64.b64encode(pair.encode()).decode()


def _key_body(pem: str | None) -> str:
    """A private key without its armor lines: "-----BEGIN PRIVATE KEY-----" is no secret, and
    pieces of it must not be scrubbed from the hints that quote it."""
    return re.sub(r"-----[A-Z0-9 ]+-----", "", pem or "").strip()


def _userinfo(url: str) -> list[str]:
    """A URL's password as typed, decoded, and as the HTTP Basic value sent for it. Read by hand
    (netloc as urlsplit cuts it), so that text urlsplit refuses is covered too."""
    netloc = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    user, _, password = netloc.rpartition("@")[0].partition(":")
    if not password:
        return []
    pair = f"{unquote(user)}:{unquote(password)}"
    return [password, unquote(password), base64.b64encode(pair.encode()).decode()]


def credential_secrets(creds: Mapping) -> frozenset[str]:
    """Every secret ``creds`` hold, in each form the plugin sends it (as typed, decoded, as a Basic
    value), read without validating anything, so that credentials that fail to parse are covered
    too: what a request's secret scope starts with (errors.secret_scope)."""
    def text(key: str) -> str:
        value = creds.get(key)
        return value.strip() if isinstance(value, str) else ""

    out = {text("api_key"), text("oauth2_client_secret")}
    for url in (*_SPLIT.split(text("endpoint_urls")), text("oauth2_token_url")):
        out.update(_userinfo(url))
    if text("oauth2_client_secret"):  # the Basic value of the token request (auth._fetch), and unquoted
        cid, secret = text("oauth2_client_id"), text("oauth2_client_secret")
        out.add(base64.b64encode(f"{quote(cid)}:{quote(secret)}".encode()).decode())
        try:
            out.add(base64.b64encode(f"{cid}:{secret}".encode("latin-1")).decode())
        except UnicodeEncodeError:
            pass  # never sent: parsing refuses it
    out.add(_key_body(text("tls_client_key")))
    return frozenset(s for s in out if len(s) >= 4)


# pure, and asked for per request (the router's in-flight gauge, twice): kept per whole URL
@lru_cache(maxsize=1024)
def display_url(url: str) -> str:
    """``host:port/path`` without user:password, query or scheme noise. Safe to echo whatever an
    operator typed: text without a scheme (``user:pw@gpu-1:8000``) is read as starting with a host."""
    try:
        parts = urlsplit(url if "://" in url else "//" + url)
    except ValueError:  # e.g. an IPv6 bracket left open: cut the scheme and user:password by hand
        rest = url.partition("://")[2] or url
        return re.split(r"[?#]", rest.rpartition("@")[2], maxsplit=1)[0].rstrip("/")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    shown = f"{host}{':' + str(port) if port else ''}{parts.path.rstrip('/')}"
    return "".join("?" if unicodedata.category(c) == "Cc" else c for c in shown)  # a message stays one line


def parse_endpoints(raw: object) -> tuple[Endpoint, ...]:
    """Base URLs separated by commas, semicolons, spaces or new lines, each optionally followed
    by ``weight=N``, ``zone=NAME`` and ``priority=N`` (e.g. ``http://gpu-9:8000/v1 priority=1``)."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError("endpoint_urls is empty: enter the base URL of at least one vLLM or "
                          "SGLang server, e.g. http://gpu-1:8000/v1")
    groups: list[tuple[str, list[str]]] = []
    for token in (t for t in _SPLIT.split(raw.strip()) if t):
        if "://" in token or not _OPTION.match(token):
            groups.append((token, []))
        elif not groups:
            raise ConfigError(f"endpoint_urls starts with the option {token!r}: put options "
                              "after the URL they apply to, e.g. http://gpu-1:8000/v1 weight=2")
        else:
            groups[-1][1].append(token)
    if len(groups) > MAX_ENDPOINTS:
        raise ConfigError(f"endpoint_urls lists {len(groups)} URLs; at most {MAX_ENDPOINTS} are supported")
    seen: dict[str, Endpoint] = {}
    for pos, (item, options) in enumerate(groups, 1):
        ep = _with_options(_endpoint(item, pos), options, pos)
        seen.setdefault(ep.url, ep)
    return tuple(seen.values())


def _with_options(ep: Endpoint, options: list[str], pos: int) -> Endpoint:
    where = f"endpoint_urls entry {pos} ({ep.name})"
    values: dict = {}
    for opt in options:
        key, value = _OPTION.match(opt).groups()
        if key == "weight":
            try:
                values["weight"] = float(value)
            except ValueError:
                values["weight"] = -1.0
            if not 0 < values["weight"] <= 1000:
                raise ConfigError(f"{where}: weight must be a number above 0 (up to 1000), got {value!r}")
        elif key == "priority":
            if not value.isdigit() or int(value) > 9:
                raise ConfigError(f"{where}: priority must be 0 (primary) to 9, got {value!r}")
            values["priority"] = int(value)
        elif key == "zone":
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
                raise ConfigError(f"{where}: zone must be a short name (letters, digits, - _ .), got {value!r}")
            values["zone"] = value
        else:
            raise ConfigError(f"{where}: unknown option {key!r}; use weight=, zone= or priority=")
    return replace(ep, **values) if values else ep


def _endpoint(item: str, pos: int) -> Endpoint:
    shown = display_url(item)  # never user:password, even when the scheme is missing
    where = f"endpoint_urls entry {pos} ({shown if '://' in item else repr(shown)})"
    if "://" not in item:
        raise ConfigError(f"{where} has no scheme: write it as http://{shown}"
                          f"{'' if '/v1' in shown else '/v1'}")
    parts = _split_url(item, where)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{where}: the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise ConfigError(f"{where} has no host name")
    _check_host(parts, where)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where} has an invalid port; use a number from 1 to 65535") from None
    if port == 0:
        raise ConfigError(f"{where} has an invalid port; use a number from 1 to 65535")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where} must not carry a query string or fragment")
    path = parts.path.rstrip("/") or "/v1"  # a bare host means the server's OpenAI routes
    url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    # /health and /metrics sit next to the OpenAI routes: a gateway's https://gw/ds/v1 -> https://gw/ds
    root = f"{parts.scheme}://{netloc}{path.removesuffix('/v1')}"
    return Endpoint(url=url, root=root, name=display_url(url), basic=basic_credentials(url))


def _split_url(url: str, where: str):
    """``urlsplit(url)``, refusing what the transport could never send, with what to fix."""
    for pos, c in enumerate(url, 1):
        if unicodedata.category(c) == "Cc":
            raise ConfigError(f"{where} contains a control character (U+{ord(c):04X}) at position {pos}: "
                              "retype the URL")
    try:
        return urlsplit(url)
    except ValueError as e:  # its text may quote the netloc, user:password included: not shown
        why = "an IPv6 address must be in brackets, e.g. http://[::1]:8000/v1" if "IPv6" in str(e) \
            else "it holds characters a URL cannot"
        raise ConfigError(f"{where} is not a valid URL: {why}") from None


def _check_host(parts, where: str) -> None:
    """The host as httpx reads it at every request (IDNA 2008 for international names): a name it
    refuses (``☃.invalid``, a broken ``xn--`` label) is refused here, not at each invocation."""
    host = parts.hostname
    try:
        httpx.URL(f"{parts.scheme}://{f'[{host}]' if ':' in host else host}/").host  # noqa: B018
    except (httpx.InvalidURL, ValueError):  # idna's errors are UnicodeErrors
        raise ConfigError(f"{where}: {host!r} is not a valid host name; check its spelling "
                          "(international names must be valid IDNA)") from None


def _sendable(value: str, field_name: str, *, latin1: bool = False) -> None:
    """``value`` fits where it is sent: an HTTP header (printable ASCII: what httpx encodes) or,
    ``latin1``, the client secret (sent percent-encoded in the token request's Basic header). The
    value itself is never shown."""
    for pos, c in enumerate(value, 1):
        if unicodedata.category(c) == "Cc" or ord(c) > (0xFF if latin1 else 0x7E):
            kind = "a line break, control" if unicodedata.category(c) == "Cc" else \
                "a non-Latin-1" if latin1 else "a non-ASCII"
            raise ConfigError(f"{field_name} contains a character that cannot be sent in an HTTP header "
                              f"({kind} character at position {pos}): paste the value alone, as issued")


def _number(creds: Mapping, key: str, kind: type, *, low: float, high: float, label: str):
    raw = creds.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = kind(str(raw).strip()) if kind is float else int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{key} must be a number ({label}), got {str(raw)[:40]!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{key} must be between {low:g} and {high:g} ({label}), got {value:g}")
    return value


def parse_timeouts(raw: object) -> Timeouts:
    """``"idle=30 first_token=600"`` (seconds, any of connect, first_token, idle, total)."""
    if raw is None or not str(raw).strip():
        return Timeouts()
    values: dict[str, float] = {}
    for item in (t for t in _SPLIT.split(str(raw).strip()) if t):
        key, sep, value = item.partition("=")
        if not sep or key not in Timeouts.__dataclass_fields__:
            raise ConfigError(f"timeouts: {item[:40]!r} is not one of connect=, first_token=, idle=, "
                              "total= (seconds), e.g. idle=30 first_token=600")
        try:
            seconds = float(value)
        except ValueError:
            raise ConfigError(f"timeouts: {key} must be a number of seconds, got {value[:20]!r}") from None
        if not 0.1 <= seconds <= 86400:
            raise ConfigError(f"timeouts: {key} must be between 0.1 and 86400 seconds, got {seconds:g}")
        values[key] = seconds
    return Timeouts(**values)


def _switch(creds: Mapping, key: str, *, default: bool) -> bool:
    raw = creds.get(key)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {str(raw)[:20]!r}")


def _oauth2(creds: Mapping) -> OAuth2:
    url = (creds.get("oauth2_token_url") or "").strip()
    if not url:
        raise ConfigError("oauth2_token_url is empty: enter the token endpoint of your identity "
                          "provider, e.g. https://idp.example.com/oauth2/token")
    where = f"oauth2_token_url ({display_url(url)})"
    parts = _split_url(url, where)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"oauth2_token_url must be an http(s) URL, got {display_url(url)!r}")
    _check_host(parts, where)
    client_id = (creds.get("oauth2_client_id") or "").strip()
    secret = (creds.get("oauth2_client_secret") or "").strip()
    if not client_id:
        raise ConfigError("oauth2_client_id is empty")
    if not secret:
        raise ConfigError("oauth2_client_secret is empty")
    if ":" in client_id:
        raise ConfigError("oauth2_client_id must not contain ':' (HTTP Basic authentication, which "
                          "sends it to the token endpoint, separates the id from the secret with it)")
    _sendable(client_id, "oauth2_client_id", latin1=True)
    _sendable(secret, "oauth2_client_secret", latin1=True)
    return OAuth2(url, client_id, secret, scope=(creds.get("oauth2_scope") or "").strip() or None,
                  audience=(creds.get("oauth2_audience") or "").strip() or None)


def _routing_policy(creds: Mapping) -> str | None:
    from .routing import policy_class  # here, not at the top: routing imports this module

    raw = creds.get("routing_policy")
    if raw is None or not str(raw).strip():
        return None  # the default
    name = str(raw).strip()
    policy_class(name)  # refuses a name no policy has, naming the choices
    return name


def _vision(creds: Mapping) -> bool:
    raw = creds.get("vision_support") or "no_support"
    if raw not in ("support", "no_support"):
        raise ConfigError(f"vision_support must be support or no_support, got {str(raw)[:20]!r}")
    return raw == "support"


def _structured(creds: Mapping) -> bool:
    raw = creds.get("structured_output_support") or "support"  # vLLM and SGLang do by default
    if raw not in ("support", "no_support"):
        raise ConfigError(f"structured_output_support must be support or no_support, got {str(raw)[:20]!r}")
    return raw == "support"


def parse_settings(creds: Mapping) -> Settings:
    endpoints = parse_endpoints(creds.get("endpoint_urls"))
    api_key = creds.get("api_key")
    if api_key is not None and not isinstance(api_key, str):
        raise ConfigError("api_key must be text")
    api_key = (api_key or "").strip() or None
    if api_key:
        _sendable(api_key, "api_key")
    served = (creds.get("served_model_name") or "").strip() or None
    if served and any(c.isspace() for c in served):
        raise ConfigError("served_model_name must not contain spaces (it is the id the server "
                          "lists at /v1/models, e.g. deepseek-ai/DeepSeek-R1)")
    timeouts = parse_timeouts(creds.get("timeouts"))
    tls = TLSConfig()
    if (creds.get("tls_mode") or "system") == "custom":  # fields hidden in the form are ignored
        tls = TLSConfig(
            verify=_switch(creds, "tls_verify", default=True),
            ca_bundle=(creds.get("tls_ca_bundle") or "").strip() or None,
            client_cert=(creds.get("tls_client_cert") or "").strip() or None,
            client_key=(creds.get("tls_client_key") or "").strip() or None,
        )
    oauth2 = _oauth2(creds) if (creds.get("auth_mode") or "api_key") == "oauth2" else None
    if (creds.get("auth_mode") or "api_key") not in ("api_key", "oauth2", "none"):
        raise ConfigError("auth_mode must be api_key, oauth2 or none")
    if creds.get("auth_mode") == "none":
        api_key = None
    settings = Settings(
        endpoints=endpoints,
        tls=tls,
        oauth2=oauth2,
        routing_policy=_routing_policy(creds),
        scope=credential_scope(api_key, oauth2, tls),
        api_key=api_key,
        served_model_name=served,
        timeouts=timeouts,
        context_size=_number(creds, "context_size", int, low=1, high=10_000_000, label="tokens"),
        max_tokens_to_sample=_number(creds, "max_tokens_to_sample", int, low=1, high=10_000_000,
                                     label="tokens"),
        tool_calling=(creds.get("function_calling") or "no_call") == "tool_call",
        reasoning=_kind(creds),
        vision=_vision(creds),
        structured_output=_structured(creds),
        answer_cache=_answer_cache(creds),
    )
    if settings.answer_cache.mode != "off" and not settings.secrets():
        # two workspaces with the same keyless credential cannot be told apart: one could probe
        # what the other asked (an exact repeat answered at once)
        raise ConfigError("the answer cache keeps each credential's entries apart by its secret, and "
                          "this credential has none: set an API key (start vLLM or SGLang with "
                          "--api-key and enter it here), OAuth2 or a client certificate, or leave "
                          "answer_cache off")
    return settings


def _answer_cache(creds: Mapping) -> AnswerCacheSettings:
    mode = str(creds.get("answer_cache") or "off").strip()
    if mode not in ANSWER_CACHE_MODES:
        raise ConfigError(f"answer_cache must be one of {', '.join(ANSWER_CACHE_MODES)}, got {mode[:20]!r}")
    ttl = _number(creds, "answer_cache_ttl", int, low=1, high=MAX_ANSWER_CACHE_TTL, label="seconds")
    return AnswerCacheSettings(mode=mode, ttl=ttl or DEFAULT_ANSWER_CACHE_TTL,
                               sampled=_switch(creds, "answer_cache_sampled", default=False))


def _kind(creds: Mapping) -> str | None:
    """The customizable model's kind; blank: it follows the model's name."""
    raw = creds.get("reasoning")
    if raw is None or not str(raw).strip():
        return None
    kind = str(raw).strip()
    if kind not in KINDS:
        raise ConfigError(f"reasoning (Model Kind) must be one of {', '.join(KINDS)} or blank, got {kind[:20]!r}")
    return kind
