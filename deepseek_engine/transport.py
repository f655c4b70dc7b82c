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
"""

from __future__ import annotations

import select
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx

from .errors import AuthError, ConnectError, EngineError, TLSError, UnreachableError, connection_reason

__all__ = ["read_budget", "set_read_budget", "pooled_client", "ClientRegistry", "CLIENTS",
           "DEFAULT_LIMITS", "connection_error", "connect_timeout"]

# what to do about a connection failure (EngineError.hint: after the message, kept short)
_CHECK_SERVER = "check that the server is running and the URL and port are right"
_REASON_HINTS = {"host name not found": "check the host name in the URL",
                 "TLS certificate rejected": "check tls_ca_bundle, or the server's certificate"}
CHECK_LOGS = "check the server's logs if it happens again"

_budget = threading.local()  # greenlet-local once gevent has patched threading

DEFAULT_LIMITS = httpx.Limits(max_connections=1024, max_keepalive_connections=256,
                              keepalive_expiry=120.0)


def set_read_budget(value: tuple[float | None, float | None] | None) -> None:
    """Set (idle, deadline) for the reads that follow in this thread/greenlet; None restores."""
    _budget.value = value


@contextmanager
def read_budget(idle: float | None, deadline: float | None) -> Iterator[None]:
    """Reads inside the block time out after ``idle`` seconds of silence or at ``deadline``."""
    previous = getattr(_budget, "value", None)
    _budget.value = (idle, deadline)
    try:
        yield
    finally:
        _budget.value = previous


def readable_now(sock) -> bool:  # noqa: ANN001
    """Whether ``sock`` has bytes (or EOF) to read right now, in one real poll(2).

    Under the SDK's gevent patching ``select.poll`` is a cooperative emulation that registers
    watchers with the hub: about 12 us per call against 0.5 us for the OS's; a zero-timeout
    check needs no hub."""
    monkey = sys.modules.get("gevent.monkey")
    poll = monkey.get_original("select", "poll") if monkey is not None else select.poll
    p = poll()
    p.register(sock.fileno(), select.POLLIN)
    return bool(p.poll(0))


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

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):  # noqa: ANN001
        timeout = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):  # noqa: ANN201
        if info == "is_readable":
            # httpcore asks this of idle pooled connections (a readable idle socket means the
            # server closed it); answered with a real poll, not gevent's emulation
            sock = self._stream.get_extra_info("socket")
            return True if sock is None else readable_now(sock)
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # noqa: ANN001
        timeout = _until_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address,
                                                         socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # noqa: ANN001
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

    def _assign_requests_to_connections(self):  # noqa: ANN202
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
    transport._pool = _Pool(  # noqa: SLF001
        ssl_context=transport._pool._ssl_context,  # noqa: SLF001
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        http1=True,
        http2=False,
        network_backend=_DeadlineBackend(),
    )
    return transport


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
