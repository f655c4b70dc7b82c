"""What deepseek_engine/transport.py reads of httpx's, httpcore's and h11's internals still holds.

The engine reaches past these libraries' public API in a few places, all in transport.py: h11's
receive buffer (tokens that arrived together go out as one chunk), the pool's SSL context (an
OAuth2 token endpoint trusted as the model endpoints are), the pool transport's handle_request
(a chat request past the client's layers), httpcore's pool bookkeeping (linear, not quadratic)
and the network backend's ``is_readable`` (a server-closed idle connection is dropped). At run
time a path that no longer resolves degrades quietly (with one warning); here it fails, naming the
versions installed and pinned. Over a real loopback socket, against a server that writes exactly
the bytes each test needs.
"""

from __future__ import annotations

import inspect
import re
import socket
import ssl
import threading
from importlib.metadata import version
from pathlib import Path

import httpcore
import httpx
import pytest

from deepseek_engine import transport
from deepseek_engine.transport import (
    InternalsChanged,
    arrival_check,
    pooled_client,
    receive_buffer,
    sender,
    ssl_context_of,
)

ROOT = Path(__file__).resolve().parents[2]
LIBS = ("httpx", "httpcore", "h11")


def _pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s#]+).*", line)
        if m and m.group(1).lower() in LIBS:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def broke(what: str) -> str:
    """The failure message: what no longer holds, and the versions it was written against."""
    pins = _pinned()
    versions = ", ".join(f"{n} {version(n)} (pinned {pins.get(n, '?')})" for n in LIBS)
    return (f"{what}: deepseek_engine/transport.py relies on it. Installed: {versions}. Adapt "
            "transport.py to these versions, or keep requirements.txt's pins.")


class RawServer:
    """HTTP/1.1 on loopback, written by hand: each accepted connection serves requests in turn,
    answering each with the parts of ``answer`` (bytes), a part sent whenever ``go`` is set."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts
        self.go = threading.Semaphore(0)
        self.accepted = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    more = conn.recv(65536)
                    if not more:
                        return
                    buf += more
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                need = int(length.group(1)) if length else 0
                while len(buf) < need:
                    buf += conn.recv(65536)
                buf = buf[need:]
                for part in self.parts:
                    if not self.go.acquire(timeout=10):
                        return
                    conn.sendall(part)
        except OSError:
            return

    def send(self, n: int = 1) -> None:
        for _ in range(n):
            self.go.release()

    def close(self) -> None:
        self._sock.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
# headers and the first event; then two events in one write (two HTTP chunks, as uvicorn sends
# each event: one network read, two items of iter_raw); then the end of the body
STREAM = [HEAD + chunk(EVENT), chunk(EVENT) + chunk(EVENT), b"0\r\n\r\n"]


@pytest.fixture
def server():
    s = RawServer(STREAM)
    yield s
    s.close()


@pytest.fixture
def client():
    c = pooled_client()
    yield c
    c.close()


def _post(url: str) -> httpx.Request:
    return httpx.Request("POST", url + "/v1/chat/completions", content=b"{}",
                         extensions={"timeout": {"connect": 5, "read": 5, "write": 5, "pool": 5}})


def test_handle_request_of_the_pool_transport_takes_a_request_and_streams_its_answer(server, client):
    send = sender(client)
    assert list(inspect.signature(send).parameters) == ["request"], broke(
        "httpx.HTTPTransport.handle_request(request) changed its signature")
    server.send(3)
    resp = send(_post(server.url))
    assert isinstance(resp, httpx.Response) and resp.status_code == 200, broke(
        "the pool transport's handle_request no longer answers an httpx.Response")
    assert not resp.is_stream_consumed, broke("handle_request reads the body before it returns")
    assert b"".join(resp.iter_raw()) == EVENT * 3
    resp.close()


def test_h11_s_receive_buffer_is_reachable_and_holds_what_arrived_unread(server, client):
    """The second write holds two events in one network read: after iter_raw's first item the
    other is in h11's buffer, and ``arrival_check`` says more is ready; after it, nothing is."""
    server.send(1)
    resp = sender(client)(_post(server.url))
    reads = resp.iter_raw()
    try:
        received = receive_buffer(resp)
    except InternalsChanged as e:
        pytest.fail(broke(f"h11's receive buffer under a response of handle_request: {e}"))
    arrived = arrival_check(resp)
    assert next(reads) == EVENT
    assert not arrived(), "nothing more was sent yet: more_ready would hold a token back"
    server.send(1)
    assert next(reads) == EVENT
    # the second event of that write is in h11's buffer (the socket has nothing more to read)
    assert EVENT in bytes(received._data), broke(
        "h11's ReceiveBuffer._data no longer holds what was received and not yet parsed")
    assert arrived(), broke("a buffered event is no longer seen in h11's receive buffer")
    assert next(reads) == EVENT
    assert not arrived()
    server.send(1)
    assert next(reads, None) is None
    resp.close()


def test_the_buffer_is_reachable_through_httpx_client_send_too(server, client):
    """``Client.send`` wraps the transport's stream once more (the path the GETs take)."""
    server.send(3)
    request = client.build_request("POST", server.url + "/v1/chat/completions", content=b"{}")
    resp = client.send(request, stream=True)
    try:
        receive_buffer(resp)
    except InternalsChanged as e:
        pytest.fail(broke(f"h11's receive buffer under a response of httpx.Client.send: {e}"))
    finally:
        resp.close()


def test_a_path_that_no_longer_resolves_is_loud_here_and_quiet_at_run_time(caplog):
    resp = httpx.Response(200, content=EVENT)  # no h11 under it, as if the path had moved
    with pytest.raises(InternalsChanged, match="receive buffer"):
        receive_buffer(resp)
    transport._warned = False
    arrived = arrival_check(resp)
    assert arrived() is False  # the stream goes on, merging only what one read returned
    assert "falls back" in caplog.text


def test_the_pool_keeps_the_ssl_context_it_was_given():
    ctx = ssl.create_default_context()
    c = pooled_client(ctx)
    try:
        assert ssl_context_of(c) is ctx, broke("httpcore's ConnectionPool no longer keeps _ssl_context")
    finally:
        c.close()


def test_the_pool_is_ours_and_its_bookkeeping_is_httpcore_s(server, client, monkeypatch):
    """``_Pool`` replaces httpcore's ``_assign_requests_to_connections`` and reads its pool's and
    connections' private state; the network backend under it is the deadline-aware one."""
    pool = client._transport._pool
    assert isinstance(pool, transport._Pool), broke("httpx.HTTPTransport no longer keeps its pool in _pool")
    for name in ("_connections", "_requests", "_max_connections", "_max_keepalive_connections"):
        assert hasattr(pool, name), broke(f"httpcore's ConnectionPool has no {name}")
    assert "_assign_requests_to_connections" in vars(httpcore.ConnectionPool), broke(
        "httpcore's ConnectionPool no longer assigns requests in _assign_requests_to_connections")
    calls = []
    real = transport._Pool._assign_requests_to_connections
    monkeypatch.setattr(transport._Pool, "_assign_requests_to_connections",
                        lambda self: (calls.append(1), real(self))[1])
    for _ in range(2):
        server.send(3)
        resp = sender(client)(_post(server.url))
        assert isinstance(resp.extensions["network_stream"], transport._DeadlineStream), broke(
            "the pool no longer connects through the network backend it was given")
        b"".join(resp.iter_raw())
        resp.close()
    assert calls, broke("httpcore no longer calls _assign_requests_to_connections")
    assert server.accepted == 1, "the second request did not reuse the kept-alive connection"
    [conn] = pool._connections
    assert conn.is_idle() and isinstance(conn._connection._expire_at, float), broke(
        "an idle connection no longer has _connection._expire_at (keep-alive expiry)")


def test_an_idle_connection_s_server_close_is_asked_of_the_backend(server, client, monkeypatch):
    """httpcore asks ``get_extra_info("is_readable")`` of an idle connection before reusing it:
    answered by a real poll, so a connection the server closed is dropped, not used."""
    asked = []
    real = transport._DeadlineStream.get_extra_info
    monkeypatch.setattr(transport._DeadlineStream, "get_extra_info",
                        lambda self, info: (asked.append(info), real(self, info))[1])
    for _ in range(2):
        server.send(3)
        resp = sender(client)(_post(server.url))
        b"".join(resp.iter_raw())
        resp.close()
    assert "is_readable" in asked, broke("httpcore no longer asks an idle connection whether it is readable")
