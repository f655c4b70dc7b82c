"""A transparent HTTP relay on loopback that records what real vLLM sent back.

The plugin talks to the relay instead of to vLLM; every request and the raw response bytes
(SSE included, relayed as they arrive) are kept in :attr:`RecordingProxy.exchanges`. Tests use it
to tell apart what vLLM sent from what the plugin made of it, and to document vLLM's real wire
shapes. HTTP/1.1 with keep-alive, like vLLM's own server; chunked responses are re-chunked as they
come, so streaming timing is preserved (plus one loopback hop).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.protocol.plugin_util import invokes as invokes_among
from tests.protocol.plugin_util import is_invoke

#: times vLLM itself lost a streamed tool call (vllm-project/vllm#48020); the tier's summary lists them
VLLM_TOOL_STREAM_LOSSES: list[str] = []

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
        "content-length", "host"}


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response: bytes = b""
    done: bool = False  # the response ended (set before its end is relayed, so no one sees it first)
    forwarded: bytes | None = None  # the body as forwarded, when patch_json changed it
    sent: list[float] = field(default_factory=list)  # time.monotonic() of each paced event written
    cut: bytes = b""  # the last event relayed before the relay cut this stream off (cut_at)

    @property
    def json(self) -> dict | None:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def sse_events(self) -> list[dict | str]:
        """The ``data:`` payloads of an SSE response, parsed (``"[DONE]"`` stays a string)."""
        out: list[dict | str] = []
        for line in self.response.decode("utf-8", "replace").splitlines():
            if line.startswith("data:"):
                data = line[5:].strip()
                try:
                    out.append(json.loads(data))
                except ValueError:
                    out.append(data)
        return out

    def deltas(self) -> list[dict]:
        return [e["choices"][0].get("delta") or {} for e in self.sse_events()
                if isinstance(e, dict) and e.get("choices")]

    def tool_call_arguments(self) -> dict[int, tuple[str, str]]:
        """``{index: (name, arguments)}`` as vLLM streamed them, merged over the deltas."""
        calls: dict[int, list[str]] = {}
        for d in self.deltas():
            for tc in d.get("tool_calls") or []:
                c = calls.setdefault(tc.get("index", 0), ["", ""])
                fn = tc.get("function") or {}
                c[0] += fn.get("name") or ""
                c[1] += fn.get("arguments") or ""
        return {k: (v[0], v[1]) for k, v in calls.items()}


class RecordingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.exchanges: list[Exchange] = []
        #: merged into every chat request body on its way to vLLM (e.g. ``{"stream_interval": 3}``)
        self.patch_json: dict | None = None
        #: when set, SSE events are relayed one by one this many seconds apart (a slow GPU's pace)
        self.pace_events: float | None = None
        #: when set, the next invoke's stream is cut off after the SSE event holding these bytes
        #: (a marker, not a count: a loaded vLLM merges tokens into fewer events)
        self.cut_at: bytes | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # as vLLM's own server (uvicorn on asyncio) does: with Nagle on, a paced event waits for
            # the ACK of the one before and the delayed-ACK timer (40-200 ms) can send two together
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # quiet
                pass

            def _relay(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                ex = Exchange(self.command, self.path, {k: v for k, v in self.headers.items()}, body)
                patch = proxy.patch_json
                if patch and self.command == "POST" and self.path.endswith("/chat/completions"):
                    try:
                        body = json.dumps({**json.loads(body), **patch}).encode()
                    except ValueError:
                        pass
                    ex.forwarded = body
                with proxy._lock:
                    proxy.exchanges.append(ex)
                up = http.client.HTTPConnection(*proxy.upstream, timeout=300)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    up.request(self.command, self.path, body=body or None, headers=headers)
                    resp = up.getresponse()
                    ex.status = resp.status
                    ex.response_headers = {k: v for k, v in resp.getheaders()}
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    length = resp.getheader("Content-Length")
                    if length is not None:
                        data = resp.read()
                        ex.response, ex.done = data, True
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                    else:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        buf = bytearray()
                        pending = b""
                        pace = proxy.pace_events
                        cut = None
                        if is_invoke(ex):
                            cut, proxy.cut_at = proxy.cut_at, None  # one invoke's stream only
                        while True:
                            piece = resp.read1(65536)
                            if not piece:
                                ex.done = True
                                break
                            buf += piece
                            ex.response = bytes(buf)
                            if b"data: [DONE]" in buf[-len(piece) - 16:]:
                                # the stream's end, before it is relayed: the plugin ends the
                                # stream at [DONE] and may answer before the body's last chunk
                                ex.done = True
                            if pace or cut:  # one SSE event per HTTP chunk, `pace` seconds apart
                                pending += piece
                                *events, pending = pending.split(b"\n\n")
                                for ev in events:
                                    ev += b"\n\n"
                                    self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                                    self.wfile.flush()
                                    ex.sent.append(time.monotonic())
                                    if cut is not None and cut in ev:
                                        # a GPU node dying mid-answer: no terminating chunk
                                        ex.done, ex.cut = True, ev  # before the plugin can see the cut
                                        self.close_connection = True
                                        self.connection.shutdown(socket.SHUT_RDWR)
                                        return
                                    if pace:
                                        time.sleep(pace)
                                continue
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                            self.wfile.flush()
                        if pending:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(pending), pending))
                        self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                finally:
                    up.close()

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                import sys

                if isinstance(sys.exc_info()[1], OSError):
                    return  # a client or vLLM closed the connection: nothing to report
                super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> RecordingProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def chats(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.endswith("/chat/completions")]

    def invokes(self, since: int = 0) -> list[Exchange]:
        """The chat requests made for Dify invokes, from the ``since``-th chat request on."""
        return invokes_among(self.chats()[since:])

    def last_invoke(self, pred=None) -> Exchange:
        """The last chat request made for a Dify invoke."""
        for e in reversed(self.invokes()):
            if pred is None or pred(e):
                return e
        raise LookupError(f"no invoke recorded among {[(e.method, e.path) for e in self.exchanges]}")

    def by_request_id(self, request_id: str) -> Exchange | None:
        for e in reversed(self.exchanges):
            if e.headers.get("X-Request-Id") == request_id:
                return e
        return None

    @contextlib.contextmanager
    def patched(self, **fields):
        """Chat requests forwarded with ``fields`` merged in, e.g. ``stream_interval=3``: vLLM then
        puts 3 tokens in each delta, as a server started with ``--stream-interval 3`` (or one using
        speculative decoding, or lagging behind its engine) does."""
        self.patch_json = fields
        try:
            yield self
        finally:
            self.patch_json = None

    @contextlib.contextmanager
    def paced(self, seconds: float):
        self.pace_events = seconds
        try:
            yield self
        finally:
            self.pace_events = None

    def clear(self) -> None:
        with self._lock:
            self.exchanges.clear()

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
