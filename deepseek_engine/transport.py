"""Pooled HTTP clients that live for the whole plugin process, with phase-aware read deadlines.

Dify creates a model instance per request, so pools cannot live on it: one ``httpx.Client`` per
endpoint set is kept here and reused by every invocation and session (keep-alive across calls).
Under the SDK's gevent patching sockets and locks are cooperative, so one client serves many
concurrent greenlets.

httpx applies one read timeout to a whole response, but a streamed completion has two phases:
waiting for the first token (queueing + prefill: may take minutes on R1) and then gaps between
tokens (seconds). ``read_budget`` sets, for the current thread/greenlet, the timeout of the
next socket reads and an absolute deadline; the network backend below applies it to each read.
The deadline also cuts every connect, TLS handshake and write short, so a call made inside
``read_budget(None, deadline)`` ends by ``deadline`` as a whole: httpx's timeouts are per
operation, and a server that sends one byte every second would hold a per-read timeout forever.

``Words`` is the one place httpx's exceptions become the engine's typed errors. Every use of a
private attribute of httpx, httpcore or h11 is in this module (the pool, the last section), behind
tests/wire/test_transport_internals.py.
"""

from __future__ import annotations

import functools
import logging
import select
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Self

import httpcore
import httpx

from .errors import (
    AuthError,
    ConnectError,
    EngineError,
    StreamBrokenError,
    TLSError,
    UnreachableError,
    connection_reason,
)

__all__ = ["read_budget", "set_read_budget", "idle_budget", "pooled_client", "one_shot_transport", "ClientRegistry",
           "CLIENTS", "DEFAULT_LIMITS", "connection_error", "connect_timeout", "Words", "SENDING", "ANSWER", "STREAM",
           "drain", "InternalsChanged", "sender", "ssl_context_of", "receive_buffer", "arrival_check"]

log = logging.getLogger(__name__)

# what to do about a connection failure (EngineError.hint: after the message, kept short)
_CHECK_SERVER = "check that the server is running and the URL and port are right"
_REASON_HINTS = {"host name not found": "check the host name in the URL",
                 "TLS certificate rejected": "check tls_ca_bundle, or the server's certificate"}
CHECK_LOGS = "check the server's logs if it happens again"
_CHECK_PROXY = "check the server's logs and the read timeout of any proxy in between"
_END_GRACE = 0.05  # seconds the body's end may take after [DONE] (the end waits that long at most)
_AFTER_DONE = 64 * 1024  # bytes read after [DONE] for the body's end; more is a server going on

_budget = threading.local()  # greenlet-local once gevent has patched threading

DEFAULT_LIMITS = httpx.Limits(max_connections=1024, max_keepalive_connections=256,
                              keepalive_expiry=120.0)


def set_read_budget(value: tuple[float | None, float | None] | None) -> None:
    """Set (idle, deadline) for the reads that follow in this thread/greenlet; None restores."""
    _budget.value = value


def idle_budget(idle: float, deadline: float) -> tuple[None, float]:
    """The read budget for the next event of a stream that is answering: ``idle`` seconds from
    now however many reads it takes, never past ``deadline``. Per read, comments (keep-alives)
    or an event's bytes trickled one at a time kept a stalled stream open for ever."""
    return None, min(deadline, time.monotonic() + idle)


@contextmanager
def read_budget(idle: float | None, deadline: float | None) -> Iterator[None]:
    """Reads inside the block time out after ``idle`` seconds of silence or at ``deadline``."""
    previous = getattr(_budget, "value", None)
    _budget.value = (idle, deadline)
    try:
        yield
    finally:
        _budget.value = previous


def readable_now(sock) -> bool:
    """Whether ``sock`` has bytes (or EOF) to read right now, in one real poll(2).

    Under the SDK's gevent patching ``select.poll`` is a cooperative emulation that registers
    watchers with the hub, many times dearer than the OS's (docs/performance.md); a zero-timeout
    check needs no hub."""
    return bool(_poller(sock).poll(0))


@functools.cache
def _os_poll():
    """The OS's ``select.poll``, looked up once: gevent's ``get_original`` costs more than the
    poll object itself. Once taken it stays the OS's, whatever is patched later."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey.get_original("select", "poll") if monkey is not None else select.poll


def _poller(sock):
    """The OS's own ``poll`` object for reads of ``sock`` (kept by a stream's ``arrival_check``:
    made once, a check is then one syscall, a quarter of the time)."""
    p = _os_poll()()
    p.register(sock.fileno(), select.POLLIN)
    return p


def connection_error(e: httpx.HTTPError, endpoint: object) -> EngineError:
    """The typed error for a connection that failed before the server answered (``endpoint``:
    its name), for requests and probes alike, so a TLS failure explains itself whoever met it."""
    endpoint = str(endpoint)
    text = str(e).lower()
    if "alert" in text and any(k in text for k in ("certificate", "unknown ca", "access denied",
                                                    "handshake failure")):
        return AuthError("the server rejected this client's TLS certificate (mutual TLS): check "
                         "tls_client_cert and tls_client_key, and that the server trusts their CA",
                         endpoint=endpoint)
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        why = "expired" if "expired" in text else "not trusted" if "issuer" in text or "self" in text \
            else "not valid for this host" if "hostname" in text or "ip address" in text else "rejected"
        return TLSError(f"the server's TLS certificate is {why}: set tls_ca_bundle to the CA "
                        "that signed it (or fix the server's certificate)", endpoint=endpoint)
    if isinstance(e, httpx.ConnectError):
        reason = connection_reason(e)
        return UnreachableError(f"could not connect: {reason}", endpoint=endpoint,
                                hint=_REASON_HINTS.get(reason, _CHECK_SERVER))
    return ConnectError("the connection closed before the server answered (reset or restarting)",
                        endpoint=endpoint, hint=CHECK_LOGS)


def connect_timeout(seconds: float, endpoint: object) -> UnreachableError:
    return UnreachableError(f"could not connect within {seconds:g}s", endpoint=str(endpoint),
                            hint="check the URL, and that no firewall drops the connection")


# what a call is doing, for the words of a connection that breaks: before the server answered,
# while its whole answer (an error page, a JSON body) is read, or while its event stream is read
SENDING, ANSWER, STREAM = "sending", "answer", "stream"


class Words:
    """The one place httpx's exceptions become the engine's typed errors, as httpx's own
    ``map_httpcore_exceptions`` is for httpcore's: ``with words:`` around a call (or a whole read
    loop) raises, for any ``httpx.HTTPError``, the error ``typed`` words for what the call was
    doing (``stage``, which the call moves on as it goes). Subclasses word the timeouts and the
    failures of their kind of call; each method builds the error for one branch of httpx's tree."""

    __slots__ = ("endpoint", "connect", "stage")

    def __init__(self, endpoint: str, connect: float) -> None:
        self.endpoint = endpoint  # its name, for the error
        self.connect = connect  # the connect timeout in force, for its message
        self.stage = SENDING

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, e: BaseException | None, tb: object) -> None:
        if isinstance(e, httpx.HTTPError):
            raise self.typed(e) from None

    def typed(self, e: httpx.HTTPError) -> EngineError:
        if isinstance(e, httpx.ConnectTimeout):
            return connect_timeout(self.connect, self.endpoint)
        if isinstance(e, httpx.ReadTimeout):
            return self.read_timeout(e)
        if isinstance(e, httpx.TimeoutException):  # write or pool
            return self.timed_out(e)
        if isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
            return self.cut(e)
        if isinstance(e, httpx.DecodingError):  # also body.py's, for a body it cannot inflate
            return StreamBrokenError(f"the server's answer is garbled: {e}", endpoint=self.endpoint)
        return self.other(e)

    def read_timeout(self, e: httpx.ReadTimeout) -> EngineError:
        return self.timed_out(e)

    def timed_out(self, e: httpx.TimeoutException) -> EngineError:
        return self.other(e)

    def cut(self, e: httpx.TransportError) -> EngineError:
        """Closed, reset or refused: the words depend on how far the call got."""
        if self.stage is SENDING:
            return connection_error(e, self.endpoint)
        if self.stage is ANSWER:
            return StreamBrokenError("the connection was cut off while the server's answer was read",
                                     endpoint=self.endpoint, hint=CHECK_LOGS)
        return StreamBrokenError("the connection was cut off mid-stream (server restarted or a proxy "
                                 "dropped it)", endpoint=self.endpoint, hint=_CHECK_PROXY)

    def other(self, e: httpx.HTTPError) -> EngineError:
        return ConnectError(f"could not connect: {connection_reason(e)}", endpoint=self.endpoint)


def drain(reads: Iterator[bytes]) -> None:
    """The body's end after [DONE], when it comes within ``_END_GRACE``: the connection is then
    reused. A server that holds the body open or goes on sending is left as it is, and the
    caller's close drops the connection. (Only what was already in the socket was too little: a
    server's last chunk is often a write of its own, a few ms after [DONE] on a busy host.)"""
    seen = 0
    try:
        with read_budget(None, time.monotonic() + _END_GRACE):
            while seen <= _AFTER_DONE:
                raw = next(reads, None)
                if raw is None:
                    return
                seen += len(raw)
    except httpx.HTTPError:  # not here in time, or cut: the answer is whole, the connection closed
        return


def _cut(timeout: float | None, deadline: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` cut to what is left before ``deadline``; ``expired`` raised once it passed."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("deadline passed")
    return left if timeout is None or left < timeout else timeout


def _until_deadline(timeout: float | None, expired: type[Exception]) -> float | None:
    """``timeout`` cut to this thread's/greenlet's deadline, if it has one."""
    budget = getattr(_budget, "value", None)
    return timeout if budget is None else _cut(timeout, budget[1], expired)


class _DeadlineStream(httpcore.NetworkStream):
    __slots__ = ("_stream",)

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget = getattr(_budget, "value", None)
        if budget is not None:  # the budget's idle replaces httpx's read timeout
            timeout = _cut(budget[0], budget[1], httpcore.ReadTimeout)
        return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _until_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        timeout = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        if info == "is_readable":
            # httpcore asks this of idle pooled connections (a readable idle socket means the
            # server closed it); answered with a real poll, not gevent's emulation
            sock = self._stream.get_extra_info("socket")
            return True if sock is None else readable_now(sock)
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        timeout = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address,
                                                         socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        timeout = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _Pool(httpcore.ConnectionPool):
    """httpcore 1.0.9's pool with linear bookkeeping.

    ``_assign_requests_to_connections`` runs at every request start and end. httpcore's version
    re-counts the whole pool once per idle connection (quadratic) and polls every idle socket;
    after a burst of N concurrent streams N keep-alive connections stay idle (for
    ``keepalive_expiry``) and every later request pays for all of them. Here idle connections
    beyond ``max_keepalive_connections`` or past their keep-alive expiry are closed by time
    alone, and only the connection about to be handed out is polled for a server-side close;
    the most recently used idle connection is handed out first."""

    def _assign_requests_to_connections(self):
        closing = []
        keep = self._max_keepalive_connections
        now = time.monotonic()
        kept = []
        idle = 0
        for c in self._connections:
            if c.is_closed():
                continue
            if c.is_idle():
                expire_at = getattr(getattr(c, "_connection", None), "_expire_at", None)
                if idle >= keep or (expire_at is not None and now > expire_at):
                    closing.append(c)
                    continue
                idle += 1
            kept.append(c)
        self._connections = kept
        for pool_request in [r for r in self._requests if r.is_queued()]:
            origin = pool_request.request.url.origin
            chosen = None
            for c in reversed(self._connections):
                if c.can_handle_request(origin) and c.is_available():
                    if c.is_idle() and c.has_expired():  # the server closed it: drop, look on
                        self._connections.remove(c)
                        closing.append(c)
                        continue
                    chosen = c
                    break
            if chosen is None:
                if len(self._connections) >= self._max_connections:
                    spare = next((c for c in self._connections if c.is_idle()), None)
                    if spare is None:
                        continue  # stays queued until a connection frees up
                    self._connections.remove(spare)
                    closing.append(spare)
                chosen = self.create_connection(origin)
                self._connections.append(chosen)
            pool_request.assign_to_connection(chosen)
        return closing


def pooled_client(verify: object = True, limits: httpx.Limits = DEFAULT_LIMITS) -> httpx.Client:
    """An ``httpx.Client`` on this module's pool and deadline-aware network backend."""
    # trust_env off: GPU endpoints are internal; a daemon-wide HTTP(S)_PROXY meant for the
    # internet must not capture them.
    return httpx.Client(transport=_transport(limits, verify), trust_env=False, follow_redirects=False)


def _transport(limits: httpx.Limits, verify: object = True) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(verify=verify, limits=limits)
    # Same pool as httpx builds, plus our backend (httpx 0.28 has no parameter for it).
    transport._pool = _Pool(
        ssl_context=transport._pool._ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=_DeadlineBackend(),
    )
    return transport


def one_shot_transport(verify: object = True) -> httpx.HTTPTransport:
    """A transport for a rare call made outside the pools (an OAuth2 token fetch), on the
    deadline-aware backend so ``read_budget`` bounds it as a whole."""
    return _transport(httpx.Limits(max_connections=1, max_keepalive_connections=0), verify)


class ClientRegistry:
    """One ``httpx.Client`` per TLS configuration (system CAs, a pasted CA, a client certificate),
    created on first use and kept for the process; it pools connections per endpoint."""

    def __init__(self, limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._clients: dict[tuple, httpx.Client] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple, verify: object = True) -> httpx.Client:
        """The client for ``key`` (the TLS settings' identity); ``verify`` builds it once."""
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                if callable(verify):
                    verify = verify()
                client = self._clients[key] = pooled_client(verify, self._limits)
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


CLIENTS = ClientRegistry()


# -- what the engine reads of httpx's, httpcore's and h11's internals ------------------------
# Each use of a private attribute of a dependency is here, and tests/wire/test_transport_internals.py
# fails, naming the pinned versions (requirements.txt), when one of them no longer holds.
# (_transport and _Pool above also rely on them: httpx.HTTPTransport's _pool, httpcore's
# ConnectionPool bookkeeping.)

class InternalsChanged(RuntimeError):
    """A private attribute of httpx, httpcore or h11 is no longer where the pinned versions keep it."""


def sender(client: httpx.Client) -> Callable[[httpx.Request], httpx.Response]:
    """``client``'s pool transport's ``handle_request``: a request sent straight to the pool. The
    client's cookie, redirect, auth and event-hook layers do nothing for a chat request (no
    proxies either: trust_env is off) and cost about a tenth of a short one (bench/run's profile).
    The response's stream is then the transport's own (no ``Response.close`` hook of the client)."""
    return client._transport.handle_request


def ssl_context_of(client: httpx.Client) -> ssl.SSLContext:
    """The SSL context ``client``'s pool connects with (httpx builds it from ``verify``): an OAuth2
    token endpoint is then trusted as the model endpoints are."""
    return client._transport._pool._ssl_context


def receive_buffer(resp: httpx.Response):
    """h11's receive buffer under a streamed response: what arrived from the socket and h11 has
    not parsed yet. Raises ``InternalsChanged`` when the path to it no longer resolves."""
    stream = resp.stream
    stream = getattr(stream, "_stream", stream)  # httpx.Client wraps the transport's stream once more
    try:
        buffer = stream._httpcore_stream._stream._connection._h11_state._receive_buffer
        data = buffer._data
    except AttributeError as e:
        raise InternalsChanged(f"h11's receive buffer is out of reach under {type(stream).__name__}: {e}") from None
    if not isinstance(data, bytearray):  # arrival_check scans it in place
        raise InternalsChanged(f"h11's receive buffer keeps its bytes in a {type(data).__name__}, not a bytearray")
    return buffer


_warned = False


def _buffer_or_none(resp: httpx.Response):
    global _warned
    try:
        return receive_buffer(resp)
    except InternalsChanged as e:
        if not _warned:
            _warned = True
            log.warning("%s: merging tokens that arrived together falls back to the socket's state", e)
        return None


def _never() -> bool:
    return False


def arrival_check(resp: httpx.Response) -> Callable[[], bool]:
    """A check, for ``resp``'s streamed body, of whether the end of a further SSE event (or of the
    body) has already arrived: in h11's receive buffer, or as bytes (or EOF) on the socket.

    After each HTTP chunk h11 keeps that chunk's trailing CRLF until the next read, so a non-empty
    buffer alone promises nothing: taking it as "more is ready" held every token until the next
    one arrived (found against real vLLM)."""
    received = _buffer_or_none(resp)
    stream = resp.extensions.get("network_stream")
    try:
        sock = stream.get_extra_info("socket") if stream is not None else None
    except Exception:  # noqa: BLE001 - a stream without a socket: the buffer alone tells
        sock = None
    if received is None and sock is None:
        return _never
    poller = _poller(sock) if sock is not None else None

    def arrived() -> bool:
        if received is not None:
            data = received._data
            if b"\n\n" in data or b"\r\n\r\n" in data or b"\r\r" in data:
                return True
        return poller is not None and bool(poller.poll(0))

    return arrived
