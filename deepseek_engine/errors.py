"""Typed failures, each naming the endpoint and saying what to do; never carrying a secret.

The Dify edge maps each class to one Dify error (see models/llm/llm.py). ``retryable`` says whether
another attempt (on another endpoint) may succeed, as long as nothing was shown to the user yet;
``retry_here`` whether that attempt may be on the endpoint that just failed; ``credential_fault``
whether the failure belongs to the credential's own settings rather than to the server (it then
counts against that credential alone, not against the endpoint for every workspace).

Secrets: a server's words reach errors and logs in many places (error bodies, in-band errors,
malformed chunks, a gateway that quotes the Authorization header). So the secrets of the request
being served are held in a scope (``secret_scope``, a context variable: per greenlet under the
plugin's gevent patching) for its whole duration, and every engine error is scrubbed of them when
it is built, as is every log record that passes a ``ScrubFilter``. Secrets the process obtains
itself (OAuth2 access tokens) are remembered and scrubbed everywhere. ``scrub`` also removes any
value quoted from an Authorization header, whatever its source. What still escapes as an exception
that is not the engine's own is reported by ``report_unexpected``: typed at the edge, one line.
"""

from __future__ import annotations

import contextvars
import html
import json
import logging
import re
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "EngineError", "ConfigError", "ConnectError", "UnreachableError", "TLSError", "EndpointsDownError",
    "TimeoutError_",
    "FirstTokenTimeout", "IdleTimeout", "TotalTimeout", "StreamBrokenError", "AuthError",
    "RateLimitError", "BadRequestError", "ModelNotFoundError", "ServerError", "UnavailableError",
    "error_from_response", "structured_refusal", "server_message", "scrub", "public_message", "secret_scope",
    "remember_secret", "scoped", "carry_scope", "ScrubFilter", "SCRUB_FILTER", "report_unexpected",
    "report_thread_crash",
]


class EngineError(Exception):
    retryable = False
    retry_here = True
    credential_fault = False

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None,
                 retry_after: float | None = None, hint: str | None = None) -> None:
        message = scrub(message)  # whoever quoted a server: the request's secrets never get in
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
# shorter values (a password "pw") would blank out ordinary words: never secrets worth the name
_MIN_SECRET = 4
# a secret cut short (by a clip, or by a library that shortens values in its messages, as
# pydantic does: "sk-SECRET-7f...c)'") leaves its head or tail: a piece this long or longer goes too
_MIN_PIECE = 8
# the secrets of the request this greenlet (thread) serves: its credentials' (secret_scope)
_SCOPE: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("deepseek_engine_secrets",
                                                                        default=frozenset())
# secrets scrubbed everywhere, whatever the scope: the last _REMEMBERED the process was issued
_REMEMBERED: dict[str, None] = {}  # insertion-ordered: the oldest goes first
_REMEMBERED_MAX = 256
_REMEMBERED_LOCK = threading.Lock()


@contextmanager
def secret_scope(secrets: Iterable[str]) -> Iterator[None]:
    """Within the block, ``secrets`` are scrubbed from every engine error built and every log
    record filtered (``ScrubFilter``)."""
    token = _SCOPE.set(frozenset(secrets))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def remember_secret(value: str) -> None:
    """Scrub ``value`` from every text from now on, in every scope: for secrets the process itself
    obtains, such as OAuth2 access tokens. Those are shared by every request of their credentials
    and outlive any one of them, and a server may quote one into an answer that is cached (a model
    list) and shown to a later request. The most recent ``_REMEMBERED_MAX`` are kept."""
    with _REMEMBERED_LOCK:
        _REMEMBERED[value] = None
        while len(_REMEMBERED) > _REMEMBERED_MAX:
            del _REMEMBERED[next(iter(_REMEMBERED))]


def scoped[T](steps: Iterator[T], secrets: Iterable[str]) -> Iterator[T]:
    """``steps`` with ``secrets`` in scope while each step runs. A generator's body runs in the
    context of whoever resumes it, so a scope opened inside one would leak into its caller between
    steps (and could not be closed from another greenlet): the scope is entered per step instead."""
    held = frozenset(secrets)
    try:
        while True:
            token = _SCOPE.set(held)  # not secret_scope: a step is a streamed chunk, and this is cheaper
            try:
                item = next(steps)
            except StopIteration:
                return
            finally:
                _SCOPE.reset(token)
            yield item
    finally:
        close = getattr(steps, "close", None)
        if close is not None:  # the caller stopped early: the steps' own clean-up runs in scope too
            with secret_scope(held):
                close()


def carry_scope[T](fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` to run in another thread (a pool, a background warm-up) with the caller's secrets in
    scope: threads do not inherit context variables."""
    held = _SCOPE.get()

    def run(*args: object, **kwargs: object) -> T:
        token = _SCOPE.set(held)
        result = fn(*args, **kwargs)
        # no ``finally``: when ``fn`` raises, the scope stays for the thread's excepthook
        # (report_thread_crash) to report it scrubbed; a scope left behind only scrubs more
        _SCOPE.reset(token)
        return result
    return run


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets, those in scope or remembered (each also URL-encoded) nor
    any credential quoted from an Authorization header: for everything shown outside the process
    (error messages, logs, the doctor's report)."""
    found = {s for s in (*secrets, *_SCOPE.get(), *tuple(_REMEMBERED)) if s and len(s) >= _MIN_SECRET}
    found |= {quote(s, safe="") for s in found}
    # longest first: a secret's own head must not split a longer piece of it (or of another)
    for piece in sorted({p for s in found for p in _pieces(text, s)}, key=len, reverse=True):
        text = text.replace(piece, "***")
    return _AUTH_VALUE.sub(lambda m: m.group(1) + " ***", text)


def _pieces(text: str, secret: str) -> Iterator[str]:
    """``secret`` and its heads and tails of ``_MIN_PIECE`` characters or more, as far as in ``text``."""
    if secret in text:
        yield secret
    for cut in (lambda k: secret[:k], lambda k: secret[-k:]):
        for k in range(_MIN_PIECE, len(secret)):
            if cut(k) not in text:  # a longer piece holds this one: none further
                break
            yield cut(k)


def public_message(e: BaseException, settings=None) -> str:
    """``str(e)`` as it may leave the process (to Dify, to a log): scrubbed of the settings' secrets."""
    return scrub(str(e), settings.secrets() if settings is not None else ())


def report_unexpected(e: BaseException, settings=None) -> str:
    """The last line of defence, for an exception that is not the engine's own (an answer of a shape
    nothing expected, or a bug): one scrubbed line naming its class, without a traceback, for the
    Dify error; the plugin's log gets the same line and where it was raised."""
    text = " ".join(public_message(e, settings).split()) or "no details"
    message = f"unexpected failure ({type(e).__name__}): {_clip(text)}"
    frames = traceback.extract_tb(e.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "unknown place"
    logging.getLogger("deepseek_engine.errors").error("%s (raised at %s)", message, where)
    return message


def report_thread_crash(args: threading.ExceptHookArgs) -> None:
    """A ``threading.excepthook``: a thread's uncaught exception reported as ``report_unexpected``
    does (scrubbed, one line, in the log) instead of a raw traceback on stderr."""
    if not issubclass(args.exc_type, SystemExit) and args.exc_value is not None:
        report_unexpected(args.exc_value)


class ScrubFilter(logging.Filter):
    """Scrubs each record's final text (the message with its arguments in, an exception's text, a
    stack), whichever logger made it: a handler with this filter writes none of the secrets in
    scope nor any Authorization value. The record itself is changed, so handlers further up the
    logger tree see the scrubbed text too."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a log call with wrong arguments: still scrubbed
            text = f"{record.msg} {record.args}"
        record.msg, record.args = scrub(text), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


SCRUB_FILTER = ScrubFilter()


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
    """``text`` cut short, scrubbed first: a secret cut in two would escape the scrubber."""
    text = scrub(text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from inference servers; fall back to backoff


def structured_refusal(message: str) -> str:
    """What to change when a server refused structured output (its words, vLLM's or SGLang's;
    docs/structured_output.md), else ""."""
    low = message.lower()
    if "--grammar-backend none" in low:  # SGLang started without a grammar backend
        return (" The server runs no structured-output backend: start SGLang without --grammar-backend none "
                "(xgrammar is its default), or turn Structured output off for this model in Dify.")
    if "grammar" in low or "json schema" in low or "json_schema" in low or "structured output" in low:
        return (" The server's structured-output backend refused the JSON schema: simplify it (xgrammar takes "
                "no multipleOf, uniqueItems, contains or unusual string formats), or start vLLM with "
                "--structured-outputs-config '{\"backend\": \"guidance\"}' (SGLang: --grammar-backend llguidance).")
    return ""


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
        elif "is not a multimodal model" in low:  # vLLM's words for a text-only model given images
            hint = (" The served model takes no images: serve a vision model, or turn Vision off for this "
                    "model.")
        elif "image(s) may be provided" in low:  # a vision model's --limit-mm-per-prompt
            hint = " The served model takes fewer images than were sent: at most its --limit-mm-per-prompt."
        else:
            hint = structured_refusal(msg)
        return BadRequestError(f"the server rejected the request {said}{hint}",
                               endpoint=endpoint, status=status)
    if status >= 500:
        cls = UnavailableError if status in (502, 503, 504) else ServerError
        return cls(f"server error {said}. The GPU server or its gateway is failing or "
                   "restarting; check its logs.", endpoint=endpoint, status=status,
                   retry_after=_retry_after(retry_after))
    return BadRequestError(f"unexpected answer {said}", endpoint=endpoint, status=status)
