"""The simulator: an asyncio HTTP/1.1 server in a background thread."""

from __future__ import annotations

import asyncio
import bisect
import json
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from . import script
from .config import FAULT_KINDS, Fault, RecordedRequest, SimConfig
from .httpio import LAST_CHUNK, BadRequest, chunk, read_request, reset, response_head

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}
_DEFAULT_MESSAGES = {
    429: "rate limited",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_MALFORMED = b'data: {"id": broken\n\n'
_TAIL_NULL = ',"logprobs":null,"finish_reason":null}]}'
_TAIL_VLLM = ',"logprobs":null,"finish_reason":null,"token_ids":null}]}'
_SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("transfer-encoding", "chunked"),
    ("cache-control", "no-cache"),
]
_VLLM_SSE_HEADERS = [_SSE_HEADERS[0], _SSE_HEADERS[1], ("vary", "Origin")]
# vLLM's buckets of vllm:time_to_first_token_seconds
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
# Faults that act on the response body; they fire "after N events" in a stream.
_BODY_FAULTS = ("malformed_chunk", "drop_mid_stream", "stall_mid_stream", "error_event", "no_done")


def _dumps(obj: Any) -> str:
    # Compact and raw UTF-8, like pydantic's model_dump_json in vLLM/SGLang.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


async def _sleep(seconds: float, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sleep, but give up (ConnectionResetError) as soon as the client goes away.

    Long waits (ttft, stalls) must not keep a cancelled request "running":
    like uvicorn, a client EOF counts as a disconnect.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        left = end - loop.time()
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.05))
        if reader.at_eof() or writer.transport.is_closing():
            raise ConnectionResetError("client went away")


class _Limited:
    """Wraps the piece generator: stops at max_tokens and remembers why it stopped."""

    __slots__ = ("it", "limit", "n", "truncated", "tools")

    def __init__(self, gen: Iterator, limit: int):
        self.it, self.limit = gen, limit
        self.n, self.truncated, self.tools = 0, False, False

    def __iter__(self):
        for piece in self.it:
            if self.n >= self.limit:
                self.truncated = True
                return
            self.n += 1
            if piece[0] == "th":
                self.tools = True
            yield piece

    @property
    def finish_reason(self) -> str:
        return "length" if self.truncated else ("tool_calls" if self.tools else "stop")


_EMPTY = '{"content":""}'


Deltas = Iterator[tuple[str, int, str | None]]  # (delta JSON, tokens in it, finish reason on the last one)


def _sglang_deltas(pieces: _Limited, n: int, rfield: str | None, tool_reply: bool) -> Deltas:
    """SGLang's deltas: up to ``n`` tokens of one kind each; an empty content delta where reasoning
    turns into the answer; a finish chunk of its own. ``tool_reply`` is unused (same signature as
    ``_vllm_deltas``)."""
    kind, idx, buf = None, None, []
    last_kind = None

    def flush():
        text = "".join(buf)
        if kind == "r":
            return '{"%s":%s}' % (rfield, _dumps(text))
        if kind == "c":
            return '{"content":%s}' % _dumps(text)
        return '{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}' % (idx, _dumps(text))

    for piece in pieces:
        k = piece[0]
        if k == "th":
            if buf:
                yield flush(), len(buf), None
                buf = []
            kind = last_kind = "th"
            call = {"id": piece[2], "type": "function", "index": piece[1],
                    "function": {"name": piece[3], "arguments": ""}}
            yield _dumps({"tool_calls": [call]}), 1, None
            continue
        pidx = piece[1] if k == "ta" else None
        if buf and (k != kind or pidx != idx or len(buf) >= n):
            yield flush(), len(buf), None
            buf = []
        if not buf:
            if k == "c" and last_kind == "r" and rfield:
                yield _EMPTY, 0, None
            kind, idx, last_kind = k, pidx, k
        buf.append(piece[-1])
    if buf:
        yield flush(), len(buf), None
    finish = pieces.finish_reason
    yield ("{}" if finish == "tool_calls" else _EMPTY), 0, finish


def _vllm_deltas(pieces: _Limited, n: int, rfield: str | None, tool_reply: bool) -> Deltas:
    """vLLM's deltas.

    Up to ``n`` consecutive tokens per delta whatever their kind, so one delta can hold reasoning and
    content (vLLM merges outputs when its API process lags behind the engine, with --stream-interval
    and with MTP). The finish reason rides on the delta of the last token when the reply is cut
    ("length"), or when the end-of-sentence token fell into the last, not full, group ("stop").
    Unmerged (n == 1), a tool reply has the empty content deltas of its special tokens: ``</think>``,
    ``<｜tool▁calls▁begin｜>`` and the tokens after the arguments.
    """
    empties = n == 1 and tool_reply
    r: list[str] = []  # the pending group: text (reasoning, content) ...
    c: list[str] = []
    a: list[str] = []  # ... or one call's argument pieces ...
    head = None  # ... or a call's name delta
    idx, k, prev = 0, 0, None  # call index of the arguments, tokens pending, kind of the last text

    def flush() -> str:
        if head is not None:
            return head
        if a:
            return '{"tool_calls":[{"index":%d,"function":{"arguments":%s}}]}' % (idx, _dumps("".join(a)))
        if not r:
            return '{"content":%s}' % _dumps("".join(c))
        if not c:
            return '{"%s":%s}' % (rfield, _dumps("".join(r)))
        return '{"content":%s,"%s":%s}' % (_dumps("".join(c)), rfield, _dumps("".join(r)))

    for piece in pieces:
        kind = piece[0]
        if kind == "r" or kind == "c":
            if k and (k >= n or a or head is not None):
                yield flush(), k, None
                r, c, a, head, k = [], [], [], None, 0
            if empties and kind == "c" and prev == "r":
                yield _EMPTY, 0, None
            prev = kind
            (r if kind == "r" else c).append(piece[1])
        elif kind == "ta":
            if k and (k >= n or head is not None or not a or idx != piece[1]):
                yield flush(), k, None
                r, c, a, head, k = [], [], [], None, 0
            idx = piece[1]
            a.append(piece[2])
        else:  # "th": the name delta, never merged
            if k:
                yield flush(), k, None
                r, c, a, head, k = [], [], [], None, 0
            if empties and piece[1] == 0:
                yield _EMPTY, 0, None
            head = _dumps({"tool_calls": [{"id": piece[2], "type": "function", "index": piece[1],
                                           "function": {"name": piece[3]}}]})
        k += 1
    finish = pieces.finish_reason
    if k and (finish == "length" or (finish == "stop" and k < n)):
        yield flush(), k, finish
        return
    if k:
        yield flush(), k, None
    if finish == "tool_calls":
        if empties:
            yield _EMPTY, 0, None
        yield _EMPTY, 0, finish
    else:  # parsed: the end-of-sentence token has no text at all; raw: empty content
        yield ("{}" if rfield else _EMPTY), 0, finish


_FLOAT_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INT_FIELDS = ("max_tokens", "max_completion_tokens")
RequestError = tuple  # (status, message, keyword arguments of Simulator._error_body)


def _max_tokens(body: dict) -> int | None:
    """The output limit of a request that passed validation (max_completion_tokens is the new name)."""
    v = body.get("max_completion_tokens")
    v = body.get("max_tokens") if v is None else v
    return None if v is None else int(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pydantic_error(type_: str, loc: str, msg: str, value: Any, ctx: dict | None = None) -> RequestError:
    """FastAPI's 400 for a body that fails the request model, as vLLM words it."""
    err: dict[str, Any] = {"type": type_, "loc": loc, "msg": msg, "input": value}
    if ctx:
        err["ctx"] = ctx
    return 400, "1 validation error:\n  " + repr(err), {"type_": "Bad Request", "param": loc}


def _vllm_request_error(body: Any, cfg: SimConfig) -> RequestError | None:
    """What vLLM 0.32 answers to a bad chat request: pydantic's checks first, then its own."""
    if isinstance(body, ValueError):
        return _pydantic_error("json_invalid", f"body.{getattr(body, 'pos', 0)}", "JSON decode error", {},
                               {"error": getattr(body, "msg", str(body))})
    if body is None:
        return _pydantic_error("missing", "body", "Field required", None)
    if not isinstance(body, dict):
        return _pydantic_error("model_attributes_type", "body",
                               "Input should be a valid dictionary or object to extract fields from", body)
    if "messages" not in body:
        return _pydantic_error("missing", "body.messages", "Field required", body)
    messages = body["messages"]
    if not isinstance(messages, list):
        return _pydantic_error("list_type", "body.messages", "Input should be a valid list", messages)
    if not messages or not all(isinstance(m, dict) for m in messages):
        return 400, "messages: Field required", {"param": "messages"}
    for name in _FLOAT_FIELDS:
        v = body.get(name)
        if v is None or isinstance(v, (int, float)):
            continue
        if isinstance(v, str):
            try:
                float(v)
                continue
            except ValueError:
                return _pydantic_error("float_parsing", "body." + name,
                                       "Input should be a valid number, unable to parse string as a number", v)
        return _pydantic_error("float_type", "body." + name, "Input should be a valid number", v)
    for name in _INT_FIELDS:
        v = body.get(name)
        if v is None or _is_int(v):
            continue
        if isinstance(v, float) and v.is_integer():
            continue  # pydantic's lax mode; _max_tokens makes it an int
        if isinstance(v, str):
            return _pydantic_error("int_parsing", "body." + name,
                                   "Input should be a valid integer, unable to parse string as an integer", v)
        if isinstance(v, float):
            return _pydantic_error("int_from_float", "body." + name,
                                   "Input should be a valid integer, got a number with a fractional part", v)
        return _pydantic_error("int_type", "body." + name, "Input should be a valid integer", v)
    model = body.get("model")
    if model is not None and model != cfg.served_model:
        return 404, _vllm_no_model(model, cfg), {"param": "model"}
    max_tokens = _max_tokens(body)
    if max_tokens is not None and max_tokens < 1:
        return 400, (f"max_tokens must be at least 1, got {max_tokens}. "
                     f"(parameter=max_tokens, value={max_tokens})"), {"param": "max_tokens"}
    if not cfg.tool_parser and body.get("tools") and body.get("tool_choice") in (None, "auto"):
        return 400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set', {}
    if max_tokens is not None and max_tokens > cfg.max_model_len:
        return 400, (f"max_tokens={max_tokens} cannot be greater than max_model_len={cfg.max_model_len}. "
                     f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})"), \
            {"param": "max_tokens"}
    if body.get("continue_final_message") and body.get("add_generation_prompt", True):
        return 400, ("Cannot set both `add_generation_prompt` and `continue_final_message` to True."), {}
    final = messages[-1].get("content") if body.get("continue_final_message") else None
    if isinstance(final, str) and "</think>" in final:  # R1's template drops up to </think>
        return 400, ("continue_final_message is set but the final message does not appear in the chat after "
                     "applying the chat template! This can happen if the chat template deletes portions of "
                     "the final message. Please verify the chat template and final message in your chat to "
                     f"ensure they are compatible.Final message to continue: {final}"), {}
    return None


def _vllm_no_model(model: Any, cfg: SimConfig) -> str:
    return f"The model `{model}` does not exist. Valid aliases: {cfg.served_model}."


def _sglang_request_error(body: Any, cfg: SimConfig) -> RequestError | None:
    if not isinstance(body, dict):
        return 400, "JSON decode error: request body is not a JSON object", {}
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return 400, "messages: Field required", {"param": "messages"}
    model = body.get("model")
    if model is not None and model != cfg.served_model:
        return 404, f"The model `{model}` does not exist.", {}
    v = body.get("max_completion_tokens")
    v = body.get("max_tokens") if v is None else v
    if v is not None and (not _is_int(v) or v < 1):
        return 400, f"max_tokens must be at least 1, got {v}.", {"param": "max_tokens"}
    return None


class _Stream:
    """Writes SSE events of one response; applies sse_quirks and body faults."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: Fault | None,
                 quirks: bool, send_done: bool):
        self.r = reader
        self.w = writer
        self.kind = fault.kind if fault and fault.kind in _BODY_FAULTS else None
        self.params = fault.params if fault else {}
        default_after = None if self.kind == "no_done" else 2
        self.after = self.params.get("after", default_after)
        self.quirks = quirks
        self.send_done = send_done
        self.count = 0  # data events sent
        self.fired = False
        self.result: str | None = None  # None running, "end" clean end, "closed" connection gone
        self.shift = 0.0  # seconds added by stalls, so pacing continues normally afterwards

    async def pace(self, deadline: float) -> None:
        delay = deadline + self.shift - asyncio.get_running_loop().time()
        if delay > 0:
            await _sleep(delay, self.r, self.w)

    async def event(self, payload: str) -> bool:
        """Send ``data: payload``; True means the stream is over (a fault ended it)."""
        if self.kind and not self.fired and self.after is not None and self.count >= self.after:
            if await self._fire():
                return True
        data = "data: " + payload + "\n\n"
        if self.quirks:
            await self._quirky(data, payload)
        else:
            self.w.write(chunk(data.encode()))
        await self.w.drain()
        self.count += 1
        return False

    async def _quirky(self, data: str, payload: str) -> None:
        i, w = self.count, self.w
        if i % 4 == 0:
            w.write(chunk(b": keep-alive\n\n"))
        if i % 3 == 1 and payload.startswith("{"):
            # Multi-line data: SSE joins data lines with "\n", still valid JSON.
            cut = payload.find(',"choices":')
            if cut > 0:
                data = "data: " + payload[: cut + 1] + "\ndata: " + payload[cut + 1:] + "\n\n"
        raw = data.encode()
        if i % 4 == 1:
            # One HTTP chunk split across two TCP writes.
            framed = chunk(raw)
            half = len(framed) // 2
            w.write(framed[:half])
            await w.drain()
            await asyncio.sleep(0.01)
            w.write(framed[half:])
        elif i % 4 == 3:
            # One SSE event split across two HTTP chunks (may cut a UTF-8 sequence).
            half = len(raw) // 2
            w.write(chunk(raw[:half]))
            await w.drain()
            await asyncio.sleep(0.01)
            w.write(chunk(raw[half:]))
        else:
            w.write(chunk(raw))

    async def _fire(self) -> bool:
        self.fired = True
        w, p = self.w, self.params
        if self.kind == "malformed_chunk":
            w.write(chunk(_MALFORMED))
            then = p.get("then", "continue")
            if then == "end":
                return await self._end()
            if then == "drop":
                await w.drain()
                w.transport.close()
                self.result = "closed"
                return True
            return False
        if self.kind == "drop_mid_stream":
            await w.drain()
            if p.get("rst"):
                reset(w)
            else:
                w.transport.close()  # FIN after flushing, but no terminating zero chunk
            self.result = "closed"
            return True
        if self.kind == "stall_mid_stream":
            await w.drain()
            seconds = float(p.get("seconds", 1.0))
            await _sleep(seconds, self.r, w)
            self.shift += seconds
            return False
        if self.kind == "error_event":
            err = {"error": {"message": p.get("message", "Internal server error: the engine died"),
                             "type": p.get("type", "InternalServerError"), "param": None,
                             "code": int(p.get("code", 500))}}
            w.write(chunk(("data: " + _dumps(err) + "\n\n").encode()))
            if self.send_done:
                w.write(chunk(b"data: [DONE]\n\n"))
            return await self._end()
        if self.kind == "no_done":
            return await self._end()
        return False

    async def _end(self) -> bool:
        self.w.write(LAST_CHUNK)
        await self.w.drain()
        self.result = "end"
        return True

    async def finish(self) -> None:
        # A fault whose "after" was beyond the stream fires just before the end.
        if self.kind and self.kind != "no_done" and not self.fired and self.result is None:
            if await self._fire():
                return
        if self.result is None:
            await self._end()


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
        self.in_flight = 0  # chat requests currently being generated
        self.waiting = 0  # chat requests queued behind max_running
        self._slots: asyncio.Condition | None = None
        self._faults: deque[Fault] = deque()
        self._fault_lock = threading.Lock()
        self._prompt_total = 0
        self._gen_total = 0
        self._finished: Counter[str] = Counter()
        self._ttft_counts = [0] * (len(_TTFT_BUCKETS) + 1)
        self._ttft_sum = 0.0
        cfg = self.config
        self._fingerprint = "vllm-0.32.0-%08x" % zlib.crc32(f"{cfg.served_model}/{cfg.max_model_len}".encode())
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
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._fault_lock:
            self._faults.append(Fault(kind, count, dict(params)))

    def clear_faults(self) -> None:
        with self._fault_lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        with self._fault_lock:
            return [Fault(f.kind, f.count, dict(f.params)) for f in self._faults]

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
        except BaseException as e:  # report bind errors to start()
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
                    body = self._error_body(400, f"Bad request: {e}")
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

    # ------------------------------------------------------------------- helpers
    def _error_body(self, status: int, message: str, type_: str | None = None, param: str | None = None) -> bytes:
        type_ = type_ or _ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
        if self.config.flavor == "sglang":
            env = {"object": "error", "message": message, "type": type_, "param": param, "code": status}
        else:
            env = {"error": {"message": message, "type": type_, "param": param, "code": status}}
        return _dumps(env).encode()

    async def _send(self, writer, status: int, body: bytes, keep: bool,
                    ctype: str = "application/json", extra: list[tuple[str, str]] | None = None) -> bool:
        headers = [("content-type", ctype), ("content-length", str(len(body)))]
        if extra:
            override = {k.lower() for k, _ in extra}
            headers = [h for h in headers if h[0] not in override] + list(extra)
        writer.write(response_head(status, headers, keep) + body)
        await writer.drain()
        return keep

    async def _send_error(self, writer, status: int, message: str, keep: bool, **kw) -> bool:
        return await self._send(writer, status, self._error_body(status, message, **kw), keep)

    def _authorized(self, req) -> bool:
        key = self.config.api_key
        return not key or req.headers.get("authorization", "") == f"Bearer {key}"

    def _take_fault(self) -> Fault | None:
        with self._fault_lock:
            if not self._faults:
                return None
            f = self._faults[0]
            f.count -= 1
            if f.count <= 0:
                self._faults.popleft()
            return f

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
                return await self._send(writer, 405, b'{"detail":"Method Not Allowed"}', keep)
            return await self._chat(req, parsed, reader, writer, keep)
        if path == "/health":
            return await self._send(writer, 200 if self.healthy else 503, b"", keep)
        if path == "/v1/models":
            if not self._authorized(req):
                return await self._send_error(writer, 401, "Unauthorized", keep)
            return await self._send(writer, 200, _dumps(self._models()).encode(), keep)
        if path == "/metrics":
            if self.config.metrics_status != 200:
                return await self._send(writer, self.config.metrics_status,
                                        b"<html><body><h1>Bad Gateway</h1></body></html>", keep, ctype="text/html")
            return await self._send(writer, 200, self._metrics().encode(), keep,
                                    ctype="text/plain; version=0.0.4; charset=utf-8")
        if path == "/tokenize" and method == "POST":
            return await self._tokenize(parsed, writer, keep)
        if cfg.flavor == "vllm" and path == "/ping":
            return await self._send(writer, 200, b"", keep)
        if cfg.flavor == "vllm" and path == "/version":
            return await self._send(writer, 200, b'{"version":"0.32.0"}', keep)
        return await self._send(writer, 404, b'{"detail":"Not Found"}', keep)

    def _models(self) -> dict:
        cfg, now = self.config, int(time.time())
        card: dict[str, Any] = {"id": cfg.served_model, "object": "model", "created": now,
                                "owned_by": cfg.flavor, "root": cfg.served_model}
        if cfg.flavor == "vllm":
            card["root"] = cfg.model_path or "/models/" + cfg.served_model  # vLLM: the --model path
            card["parent"] = None
            card["max_model_len"] = cfg.max_model_len
            card["permission"] = [{
                "id": "modelperm-" + uuid.uuid4().hex, "object": "model_permission", "created": now,
                "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                "organization": "*", "group": None, "is_blocking": False,
            }]
        else:
            card["max_model_len"] = cfg.max_model_len
        return {"object": "list", "data": [card]}

    def _metrics(self) -> str:
        cfg = self.config
        model = cfg.served_model.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        running = float(cfg.num_running + self.in_flight)
        waiting = float(cfg.num_waiting + self.waiting)
        kv = max(float(cfg.kv_usage), self.in_flight / cfg.max_running if cfg.max_running else 0.0)
        if cfg.flavor == "vllm":
            lab = f'engine="0",model_name="{model}"'
            rows = [
                ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", [(lab, running)]),
                ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
                 [(lab, waiting)]),
                ("vllm:num_requests_waiting_by_reason", "gauge", "Number of requests waiting, by reason.",
                 [(f'engine="0",model_name="{model}",reason="capacity"', waiting),
                  (f'engine="0",model_name="{model}",reason="deferred"', 0.0)]),
                ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
                 [(lab, kv)]),
                ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
                 [(lab, float(self._prompt_total))]),
                ("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.",
                 [(lab, float(self._gen_total))]),
                ("vllm:request_success_total", "counter", "Count of successfully processed requests.",
                 [(f'engine="0",finished_reason="{r}",model_name="{model}"',
                   float(self._finished[r] + (self._finished["tool_calls"] if r == "stop" else 0)))
                  for r in ("stop", "length", "abort", "error", "repetition")]),
            ]
        else:
            lab = f'model_name="{model}"'
            rows = [
                ("sglang:num_running_reqs", "gauge", "The number of running requests.", [(lab, running)]),
                ("sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue.",
                 [(lab, waiting)]),
                ("sglang:token_usage", "gauge", "The token usage.", [(lab, kv)]),
                ("sglang:prompt_tokens_total", "counter", "Number of prefill tokens processed.",
                 [(lab, float(self._prompt_total))]),
                ("sglang:generation_tokens_total", "counter", "Number of generation tokens processed.",
                 [(lab, float(self._gen_total))]),
                ("sglang:num_requests_total", "counter", "Number of requests processed.",
                 [(lab, float(sum(self._finished.values())))]),
            ]
        out = []
        for name, typ, help_, samples in rows:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {typ}")
            out.extend(f"{name}{{{labels}}} {value!r}" for labels, value in samples)
        if cfg.flavor == "vllm":
            name = "vllm:time_to_first_token_seconds"
            out += [f"# HELP {name} Histogram of time to first token in seconds.", f"# TYPE {name} histogram"]
            total = 0
            for le, count in zip((*map(repr, _TTFT_BUCKETS), "+Inf"), self._ttft_counts):
                total += count
                out.append(f'{name}_bucket{{engine="0",le="{le}",model_name="{model}"}} {float(total)!r}')
            out.append(f'{name}_count{{engine="0",model_name="{model}"}} {float(total)!r}')
            out.append(f'{name}_sum{{engine="0",model_name="{model}"}} {self._ttft_sum!r}')
        return "\n".join(out) + "\n"

    def _observe_ttft(self, seconds: float) -> None:
        self._ttft_counts[bisect.bisect_left(_TTFT_BUCKETS, seconds)] += 1
        self._ttft_sum += seconds

    async def _tokenize(self, body: Any, writer, keep: bool) -> bool:
        cfg = self.config
        if not isinstance(body, dict):
            return await self._send_error(writer, 400, "JSON decode error", keep)
        model = body.get("model")
        if model is not None and model != cfg.served_model:
            if cfg.flavor == "vllm":
                return await self._send_error(writer, 404, _vllm_no_model(model, cfg), keep, param="model")
            return await self._send_error(writer, 404, f"The model `{model}` does not exist.", keep)
        if isinstance(body.get("messages"), list):
            tokens = script.token_ids_for_messages(body["messages"])
        elif isinstance(body.get("prompt"), str):
            tokens = script.token_ids_for_text(body["prompt"])
        else:
            return await self._send_error(writer, 400, "Either `prompt` or `messages` is required.", keep)
        out = {"count": len(tokens), "max_model_len": cfg.max_model_len, "tokens": tokens, "token_strs": None}
        return await self._send(writer, 200, _dumps(out).encode(), keep)

    # --------------------------------------------------------------------- chat
    async def _chat(self, req, body: Any, reader, writer, keep: bool) -> bool:
        fault = self._take_fault()
        kind = fault.kind if fault else None
        params = fault.params if fault else {}
        # Transport-level faults act before any validation, like a proxy or a dying server would.
        if kind == "reset_before_headers":
            reset(writer)
            return False
        if kind == "slow_headers":
            await _sleep(float(params.get("seconds", 1.0)), reader, writer)
        if kind == "status":
            status = int(params.get("status", 503))
            text = params.get("body")
            if text is None:
                payload = self._error_body(status, _DEFAULT_MESSAGES.get(status, _http_phrase(status)))
                ctype = "application/json"
            else:
                payload = text.encode() if isinstance(text, str) else bytes(text)
                ctype = "application/json" if payload.lstrip()[:1] in (b"{", b"[") else "text/plain; charset=utf-8"
            extra = [(str(k), str(v)) for k, v in (params.get("headers") or {}).items()]
            return await self._send(writer, status, payload, keep, ctype=ctype, extra=extra)
        if kind == "html_502":
            return await self._send(writer, 502, _NGINX_502, keep, ctype="text/html",
                                    extra=[("server", "nginx/1.24.0")])

        cfg = self.config
        if not self._authorized(req):
            return await self._send_error(writer, 401, "Unauthorized", keep)
        vllm = cfg.flavor == "vllm"
        err = (_vllm_request_error if vllm else _sglang_request_error)(body, cfg)
        if err is not None:
            status, message, kw = err
            return await self._send_error(writer, status, message, keep, **kw)
        messages = body["messages"]
        max_tokens = _max_tokens(body)
        n_prompt = script.prompt_tokens(messages)
        room = cfg.max_model_len - n_prompt
        if vllm and room <= 0:
            # vLLM counts the prompt up to the limit plus one, then gives up.
            seen = min(n_prompt, cfg.max_model_len + 1)
            msg = (f"This model's maximum context length is {cfg.max_model_len} tokens. However, your prompt "
                   f"contains at least {seen} input tokens, which exceeds this limit even without any output "
                   f"tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value={seen})")
            return await self._send_error(writer, 400, msg, keep, param="input_tokens")
        if not vllm and n_prompt >= cfg.max_model_len:  # SGLang's tokenizer manager, word for word
            msg = (f"The input ({n_prompt} tokens) is longer than the model's context length "
                   f"({cfg.max_model_len} tokens).")
            return await self._send_error(writer, 400, msg, keep)
        if not vllm and max_tokens is not None and n_prompt + max_tokens >= cfg.max_model_len:
            msg = (f"Requested token count exceeds the model's maximum context length of {cfg.max_model_len} "
                   f"tokens. You requested a total of {n_prompt + max_tokens} tokens: {n_prompt} tokens from "
                   f"the input messages and {max_tokens} tokens for the completion. Please reduce the number "
                   f"of tokens in the input messages or the completion to fit within the limit.")
            return await self._send_error(writer, 400, msg, keep)
        # vLLM 0.32 accepts prompt + max_tokens over the context and stops generating at its end.
        limit = room if max_tokens is None else min(max_tokens, room)
        tool_reply = script.wants_tools(body)
        t0 = asyncio.get_running_loop().time()
        pieces = _Limited(script.generate(body, cfg.shape, vllm), limit)
        if cfg.max_running > 0:
            if self._slots is None:
                self._slots = asyncio.Condition()
            self.waiting += 1
            try:
                async with self._slots:
                    await self._slots.wait_for(lambda: self.in_flight < self.config.max_running)
                    self.in_flight += 1
            finally:
                self.waiting -= 1
        else:
            self.in_flight += 1
        try:
            if body.get("stream") is True:
                opts = body.get("stream_options") or {}
                include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
                return await self._stream(reader, writer, keep, pieces, n_prompt, include_usage, fault, tool_reply,
                                          t0)
            self._observe_ttft(asyncio.get_running_loop().time() - t0 + cfg.ttft)
            return await self._complete(reader, writer, keep, pieces, n_prompt, fault)
        except (ConnectionError, OSError):
            self._finished["abort"] += 1  # the client went away mid-request
            raise
        finally:
            self.in_flight -= 1
            if self._slots is not None:
                async with self._slots:
                    self._slots.notify()
            self._prompt_total += n_prompt
            self._gen_total += pieces.n

    async def _complete(self, reader, writer, keep: bool, pieces: _Limited, n_prompt: int, fault: Fault | None) -> bool:
        cfg = self.config
        items = list(pieces)
        n = len(items)
        delay = cfg.ttft + max(0, n - 1) * cfg.inter_token  # the time a real server would generate for
        if delay > 0:
            await _sleep(delay, reader, writer)
        kind = fault.kind if fault else None
        params = fault.params if fault else {}
        if kind == "error_event":
            return await self._send_error(writer, 500, params.get("message", "Internal server error"), keep)
        if kind == "malformed_chunk":
            return await self._send(writer, 200, b'{"id": broken', keep)

        reasoning, content, calls = [], [], {}
        for it in items:
            k = it[0]
            if k == "r":
                reasoning.append(it[1])
            elif k == "c":
                content.append(it[1])
            elif k == "th":
                calls[it[1]] = {"id": it[2], "type": "function", "function": {"name": it[3], "arguments": ""}}
            else:
                calls[it[1]]["function"]["arguments"] += it[2]
        finish = pieces.finish_reason
        self._finished[finish] += 1
        text = "".join(content) if content else None
        thought = "".join(reasoning) if reasoning else None
        tool_calls = [calls[i] for i in sorted(calls)]
        choice: dict[str, Any] = {"index": 0, "message": None, "logprobs": None, "finish_reason": finish,
                                  "stop_reason": None}
        out: dict[str, Any] = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion",
                               "created": int(time.time()), "model": cfg.served_model, "choices": [choice]}
        if cfg.flavor == "vllm":
            if tool_calls and text is not None and not text.strip():
                text = None  # the "\n\n" before the call streams, but is not in the message
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": None,
                                       "audio": None, "function_call": None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            # older vLLM: reasoning_content; a server without a reasoning parser still has "reasoning": null
            message["reasoning_content" if cfg.shape == "reasoning_content" else "reasoning"] = thought
            choice.update(token_ids=None, routed_experts=None)
            out["service_tier"] = None
        else:
            message = {"role": "assistant", "content": text}
            if cfg.shape in ("reasoning", "reasoning_content"):
                message[cfg.shape] = thought
            message["tool_calls"] = tool_calls
        choice["message"] = message
        out["usage"] = {"prompt_tokens": n_prompt, "total_tokens": n_prompt + n, "completion_tokens": n}
        if cfg.flavor == "vllm":
            out.update(prompt_logprobs=None, prompt_token_ids=None, prompt_text=None, kv_transfer_params=None,
                       ec_transfer_params=None, metrics=None)
        body = _dumps(out).encode()
        if kind == "drop_mid_stream":
            # Full Content-Length promised, half delivered, then the connection goes away.
            writer.write(response_head(200, [("content-type", "application/json"),
                                             ("content-length", str(len(body)))], keep) + body[: len(body) // 2])
            await writer.drain()
            if params.get("rst"):
                reset(writer)
            else:
                writer.transport.close()
            return False
        if kind == "stall_mid_stream":
            writer.write(response_head(200, [("content-type", "application/json"),
                                             ("content-length", str(len(body)))], keep))
            await writer.drain()
            await _sleep(float(params.get("seconds", 1.0)), reader, writer)
            writer.write(body)
            await writer.drain()
            return keep
        return await self._send(writer, 200, body, keep)

    async def _stream(self, reader, writer, keep: bool, pieces: _Limited, n_prompt: int, include_usage: bool,
                      fault: Fault | None, tool_reply: bool, t0: float) -> bool:
        cfg = self.config
        vllm = cfg.flavor == "vllm"
        loop = asyncio.get_running_loop()
        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        model_json = _dumps(cfg.served_model)
        head = '{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s' % (cid, created, model_json)
        pre = head + ',"choices":[{"index":0,"delta":'
        tail = _TAIL_VLLM if vllm else _TAIL_NULL
        rfield = cfg.shape if cfg.shape in ("reasoning", "reasoning_content") else None
        out = _Stream(reader, writer, fault, cfg.sse_quirks, cfg.send_done)

        # Headers go out at once (Starlette does); the role chunk waits for the first token.
        writer.write(response_head(200, _VLLM_SSE_HEADERS if vllm else _SSE_HEADERS, keep))
        await writer.drain()
        deadline = loop.time() + cfg.ttft
        await out.pace(deadline)
        self._observe_ttft(loop.time() - t0)
        role = pre + '{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
        if await out.event(role + (',"prompt_token_ids":null,"prompt_text":null}' if vllm else "}")):
            return keep and out.result == "end"
        seen = 0
        deltas = _vllm_deltas if vllm else _sglang_deltas
        for delta, ntok, finish in deltas(pieces, max(1, cfg.chunk_tokens), rfield, tool_reply):
            if ntok:
                it = cfg.inter_token
                if it > 0:
                    # The event leaves when its last token is generated; the first token is at ttft.
                    deadline += (ntok - 1 if seen == 0 else ntok) * it
                    await out.pace(deadline)
                seen += ntok
            if finish is not None:
                break
            if await out.event(pre + delta + tail):
                return keep and out.result == "end"

        self._finished[finish] += 1
        usage = _dumps({"prompt_tokens": n_prompt, "total_tokens": n_prompt + pieces.n,
                        "completion_tokens": pieces.n})
        no_done = out.kind == "no_done"
        usage_chunk = cfg.usage == "on_request" and include_usage and not no_done
        final = pre + delta + ',"logprobs":null,"finish_reason":"%s"' % finish
        final += ',"token_ids":null}]' if vllm else "}]"
        if cfg.usage == "always_on_finish" and not no_done:
            final += ',"usage":' + usage
        if vllm and not usage_chunk:
            final += ',"system_fingerprint":"%s"' % self._fingerprint
        if await out.event(final + "}"):
            return keep and out.result == "end"
        if usage_chunk:
            last = head + ',"choices":[],"usage":' + usage
            if vllm:
                last += ',"system_fingerprint":"%s"' % self._fingerprint
            if await out.event(last + "}"):
                return keep and out.result == "end"
        if cfg.send_done and not no_done:
            if await out.event("[DONE]"):
                return keep and out.result == "end"
        await out.finish()
        return keep and out.result == "end"


def _http_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
