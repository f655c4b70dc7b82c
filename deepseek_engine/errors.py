"""Typed failures, each naming the endpoint and saying what to do; never carrying a secret.

The Dify edge maps each class to one Dify error (see models/llm/llm.py). ``retryable`` says whether
another attempt (on another endpoint) may succeed, as long as nothing was shown to the user yet;
``retry_here`` whether that attempt may be on the endpoint that just failed; ``credential_fault``
whether the failure belongs to the credential's own settings rather than to the server (it then
counts against that credential alone, not against the endpoint for every workspace).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable

__all__ = [
    "EngineError", "ConfigError", "ConnectError", "UnreachableError", "TLSError", "EndpointsDownError",
    "TimeoutError_",
    "FirstTokenTimeout", "IdleTimeout", "TotalTimeout", "StreamBrokenError", "AuthError",
    "RateLimitError", "BadRequestError", "ModelNotFoundError", "ServerError", "UnavailableError",
    "error_from_response", "server_message", "scrub", "public_message",
]


class EngineError(Exception):
    retryable = False
    retry_here = True
    credential_fault = False

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None,
                 retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status = status
        self.retry_after = retry_after
        self.hint = hint  # what to do: shown after the message, left out of multi-endpoint summaries

    def __str__(self) -> str:
        text = f"{self.message}; {self.hint}" if self.hint else self.message
        return f"[{self.endpoint}] {text}" if self.endpoint else text


class ConfigError(EngineError):
    """A credential value is invalid; the message says which field and how to fix it."""


class ConnectError(EngineError):
    """Refused, reset, unresolvable or too slow to connect."""
    retryable = True


class UnreachableError(ConnectError):
    """Could not open a connection at all (refused, no such host, connect timeout): the
    endpoint is set aside at once, so a dead host costs a user at most one connect timeout."""


class TLSError(UnreachableError):
    """The server's certificate is not trusted by this credential's TLS settings (its CA bundle):
    the credential's fault, not the server's, as long as other credentials trust it."""
    credential_fault = True


class EndpointsDownError(ConnectError):
    """Every endpoint failed; the message lists each one and why."""
    retryable = False


class TimeoutError_(EngineError):
    retryable = True


class FirstTokenTimeout(TimeoutError_):
    """Queueing + prefill took longer than the first-token budget. Never retried on the same
    endpoint: that would double the wait the operator set."""
    retry_here = False


class IdleTimeout(TimeoutError_):
    """The stream stalled: no bytes for longer than the idle budget."""


class TotalTimeout(TimeoutError_):
    retryable = False


class StreamBrokenError(EngineError):
    """The stream ended early or carried something that is not the protocol."""
    retryable = True


class AuthError(EngineError):
    """401/403, a rejected client certificate, an OAuth2 token endpoint's refusal."""
    credential_fault = True


class RateLimitError(EngineError):
    retryable = True


class BadRequestError(EngineError):
    """400/404/413/422: the same request fails anywhere."""


class ModelNotFoundError(BadRequestError):
    credential_fault = True  # the model a credential names; others may name one that is served


class ServerError(EngineError):
    retryable = True


class UnavailableError(ServerError):
    """502/503/504: the server or its gateway cannot serve now (loading, draining, upstream down).
    Still failing after the retries, it reaches Dify as a connection error, so Dify's load
    balancing cools this credential down and tries another; other 5xx do not."""


_MAX_MESSAGE = 400
# the value of an Authorization header a server or gateway quoted back, whatever its source (an
# OAuth2 token is no setting): 8+ token characters with a digit or symbol, so that prose such as
# "Basic authentication required" stays as it is
_AUTH_VALUE = re.compile(r"\b(Bearer|Basic)\s+(?=[^\s\"',;)\]}]*[0-9_~+/=-])[^\s\"',;)\]}]{8,}",
                         re.IGNORECASE)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets nor any credential quoted from an Authorization header:
    for everything shown outside the process (error messages, logs, the doctor's report)."""
    # shorter values (a password "pw") would blank out ordinary words: never secrets worth the name
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, "***")
    return _AUTH_VALUE.sub(lambda m: m.group(1) + " ***", text)


def public_message(e: Exception, settings=None) -> str:  # noqa: ANN001 - Settings imports this module
    """``str(e)`` as it may leave the process (to Dify, to a log): scrubbed of the settings' secrets."""
    return scrub(str(e), settings.secrets() if settings is not None else ())


def connection_reason(exc: BaseException) -> str:
    """What a transport exception means, in a few words ("connection refused", "TLS certificate
    rejected", ...), else its own text, cut short."""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    for needle, short in (("refused", "connection refused"), ("reset", "connection reset"),
                          ("name or service", "host name not found"),
                          ("nodename nor servname", "host name not found"),
                          ("temporary failure in name", "host name not found"),
                          ("no route", "no route to host"), ("unreachable", "network unreachable"),
                          ("certificate", "TLS certificate rejected")):
        if needle in low:
            return short
    return text[:200]


_TAG = re.compile(r"<[^>]+>")
_TITLE = re.compile(r"<title>(.*?)</title>|<h1>(.*?)</h1>", re.IGNORECASE | re.DOTALL)


def server_message(body: str) -> str:
    """The human part of an error body: OpenAI/vLLM/SGLang/FastAPI JSON, an HTML page, or text."""
    text = body.strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested past the limit
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("msg") or err.get("detail")
        else:
            msg = err
        if msg is None:
            msg = data.get("message") or data.get("detail")
        if isinstance(msg, list):  # FastAPI validation errors
            msg = "; ".join(str(m.get("msg", m)) if isinstance(m, dict) else str(m) for m in msg)
        if msg:
            return _clip(str(msg))
    if "<" in text and ">" in text:
        m = _TITLE.search(text)
        found = (m.group(1) or m.group(2)) if m else _TAG.sub(" ", text)
        return _clip(html.unescape(" ".join(found.split())))
    return _clip(" ".join(text.split()))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from inference servers; fall back to backoff


def error_from_response(status: int, body: str, endpoint: str,
                        retry_after: str | None = None) -> EngineError:
    """The typed error for a non-2xx answer (pure: unit-testable without a server)."""
    msg = server_message(body) or f"HTTP {status}"
    said = f"(HTTP {status}): {msg}"
    if status in (401, 403):
        return AuthError(f"the server refused the credentials {said}. Check the API key "
                         "(vLLM/SGLang --api-key, or the gateway's token).",
                         endpoint=endpoint, status=status)
    if status == 429:
        return RateLimitError(f"the server is overloaded or rate limiting {said}. "
                              "Retry later or add replicas.", endpoint=endpoint, status=status,
                              retry_after=_retry_after(retry_after))
    if status == 404 and ("model" in msg.lower()):
        return ModelNotFoundError(f"{msg} Check the served model name (vLLM --served-model-name), "
                                  "or leave it blank to use what the server serves.",
                                  endpoint=endpoint, status=status)
    if status in (400, 404, 405, 413, 422):
        hint = ""
        low = msg.lower()
        if "context" in low and ("length" in low or "size" in low) or "too long" in low:
            hint = " Shorten the conversation or lower max_tokens."
        return BadRequestError(f"the server rejected the request {said}{hint}",
                               endpoint=endpoint, status=status)
    if status >= 500:
        cls = UnavailableError if status in (502, 503, 504) else ServerError
        return cls(f"server error {said}. The GPU server or its gateway is failing or "
                   "restarting; check its logs.", endpoint=endpoint, status=status,
                   retry_after=_retry_after(retry_after))
    return BadRequestError(f"unexpected answer {said}", endpoint=endpoint, status=status)
