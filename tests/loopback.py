"""A tiny loopback HTTP/1.1 server for the cases the simulator does not script: every answer is
bytes a test builds from the request, written in one ``sendall`` (so what a test puts in one
answer reaches the client in one network read), then the connection closes. An answer given as
a list (or any iterable) of byte strings is written piece by piece, ``PACE`` seconds apart (one
read each); a number among the pieces is a pause of that many seconds instead of ``PACE`` (a
hostile upstream that trickles, or holds the connection open). A client that goes away ends the
answer.

    with Loopback(lambda req: response(200, b"...", "text/event-stream")) as srv:
        srv.base_url        # "http://127.0.0.1:PORT/v1"
        srv.requests        # [Request(method, path, headers (lower-case keys), body)]
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Loopback", "Request", "response", "sse"]

PACE = 0.02


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def sse(*events: object) -> bytes:
    """``data:`` events: dicts as JSON, bytes as they are."""
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
                    for e in events)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True


class Loopback:
    def __init__(self, answer: Callable[[Request], bytes]) -> None:
        self.requests: list[Request] = []
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline().decode("latin-1").split()
                if len(line) < 2:
                    return
                headers: dict[str, str] = {}
                while (h := self.rfile.readline().decode("latin-1").strip()):
                    k, _, v = h.partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = self.rfile.read(int(headers.get("content-length") or 0))
                req = Request(line[0], line[1], headers, body)
                owner.requests.append(req)
                out = answer(req)
                if isinstance(out, bytes):
                    self.wfile.write(out)  # one write: wfile is unbuffered (wbufsize 0)
                    return
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no merging
                pause = 0.0  # before the first piece: none
                for piece in out:
                    if isinstance(piece, (int, float)):
                        pause = piece
                        continue
                    time.sleep(pause)
                    pause = PACE
                    try:
                        self.wfile.write(piece)
                    except OSError:  # the client went away
                        return
                time.sleep(pause)  # PACE, or a pause given last: the connection held open

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> Loopback:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
