"""The simulator: an asyncio HTTP/1.1 server in a background thread, its connections and the
route of each request (the answers live in ``chat``, ``endpoints`` and ``metrics``)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import zlib
from typing import Any

from . import chat, endpoints
from .chat import Batch
from .config import Fault, RecordedRequest, SimConfig
from .errors import error_body, send_error
from .faults import FaultQueue
from .httpio import BadRequest, dumps, read_request, response_head, send
from .metrics import Metrics
from .prefix_cache import PrefixCache
from .validation import authorized


class Simulator:
    """A DeepSeek-style OpenAI-compatible endpoint on a loopback socket.

    See the package docstring for the API. All state is read/written from the
    caller's thread without locks except the fault queue: the GIL makes the
    simple appends/increments safe enough for a test double.
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 ssl_context=None):
        self.config = config if config is not None else SimConfig()
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.requests: list[RecordedRequest] = []
        self.connections_opened = 0
        self.open_connections = 0
        self.healthy = True
        self.batch = Batch()
        self.faults = FaultQueue()
        self.metrics = Metrics()
        self.kv = PrefixCache(self.config.kv_blocks, self.config.block_size)
        self.started_at = time.time()
        cfg = self.config
        self.fingerprint = "vllm-0.32.0-%08x" % zlib.crc32(f"{cfg.served_model}/{cfg.max_model_len}".encode())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    # ----------------------------------------------------------------- public API
    @property
    def root_url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Simulator:
        """Bind and serve in a background thread. After stop(), start() binds the same port again."""
        if self.running:
            return self
        # a (re)started server process: its prefix cache starts empty
        self.kv = PrefixCache(self.config.kv_blocks, self.config.block_size)
        self.started_at = time.time()
        ready = threading.Event()
        error: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, error), name="deepseek-sim", daemon=True)
        self._thread.start()
        ready.wait()
        if error:
            self._thread.join()
            self._thread = None
            raise error[0]
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener, abort every open connection (unsent data is dropped), end the thread."""
        if not self.running or self._loop is None:
            return
        loop = self._loop
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            fut.result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def inject(self, kind: str, count: int = 1, **params: Any) -> None:
        """Queue a fault for the next ``count`` POST /v1/chat/completions requests (FIFO)."""
        self.faults.inject(kind, count, **params)

    def clear_faults(self) -> None:
        self.faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        return self.faults.pending()

    @property
    def in_flight(self) -> int:
        """Chat requests being generated now."""
        return self.batch.in_flight

    @property
    def waiting(self) -> int:
        """Chat requests queued behind ``max_running``."""
        return self.batch.waiting

    # ------------------------------------------------------------- thread / loop
    def _run(self, ready: threading.Event, error: list) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve_conn, self.host, self.port, reuse_address=True, backlog=1024,
                                     ssl=self.ssl_context)
            )
        except BaseException as e:  # noqa: BLE001 - a bind error: start() raises it in the caller's thread
            error.append(e)
            loop.close()
            ready.set()
            return
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            # connections accepted while _shutdown ran (after it took its list): ended here, not
            # destroyed pending with the loop
            while left := asyncio.all_tasks(loop):
                for t in left:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        except TimeoutError:
            pass

    # ---------------------------------------------------------------- connection
    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections_opened += 1
        self.open_connections += 1
        try:
            while not writer.transport.is_closing():
                try:
                    req = await read_request(reader, writer)
                except BadRequest as e:
                    body = error_body(self.config.flavor, 400, f"Bad request: {e}")
                    writer.write(response_head(400, [("content-type", "application/json"),
                                                     ("content-length", str(len(body)))], False) + body)
                    break
                if req is None or not await self._dispatch(req, reader, writer):
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.CancelledError):
            pass
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()  # flushes, then FIN

    # ------------------------------------------------------------------ routing
    async def _dispatch(self, req, reader, writer) -> bool:
        """Answer one request; returns whether the connection stays open."""
        parsed: Any = None
        if req.body:
            try:
                parsed = json.loads(req.body)
            except ValueError as e:
                parsed = e  # not JSON: the error says where (vLLM reports it)
        self.requests.append(RecordedRequest(req.method, req.target, dict(req.headers),
                                             None if isinstance(parsed, ValueError) else parsed, req.body))
        keep = req.keep_alive
        path, method = req.path, req.method
        cfg = self.config

        if path == "/v1/chat/completions":
            if method != "POST":
                return await send(writer, 405, b'{"detail":"Method Not Allowed"}', keep)
            return await chat.answer(self, req, parsed, reader, writer, keep)
        if path == "/health":
            return await send(writer, 200 if self.healthy else 503, b"", keep)
        if path == "/v1/models":
            if not authorized(cfg, req):
                return await send_error(writer, cfg.flavor, 401, "Unauthorized", keep)
            return await send(writer, 200, dumps(endpoints.model_list(cfg)).encode(), keep)
        if path == "/metrics":
            if self.config.metrics_status != 200:
                return await send(writer, self.config.metrics_status,
                                  b"<html><body><h1>Bad Gateway</h1></body></html>", keep, ctype="text/html")
            metrics = self.metrics.render(cfg, self.batch.in_flight, self.batch.waiting, self.kv, self.started_at)
            return await send(writer, 200, metrics.encode(), keep, ctype="text/plain; version=0.0.4; charset=utf-8")
        if path == "/tokenize" and method == "POST":
            status, payload = endpoints.tokenize(cfg, parsed)
            return await send(writer, status, payload, keep)
        if cfg.flavor == "vllm" and path == "/ping":
            return await send(writer, 200, b"", keep)
        if cfg.flavor == "vllm" and path == "/version":
            return await send(writer, 200, b'{"version":"0.32.0"}', keep)
        return await send(writer, 404, b'{"detail":"Not Found"}', keep)
