"""Drive a Dify plugin directory over the daemon's stdio protocol, without Dify.

The plugin is launched exactly as ``dify-plugin-daemon``'s local runtime does it
(``internal/core/local_runtime/subprocess.go``): ``[python, "-m", "main"]`` with ``cwd`` set to the
plugin directory, the caller's environment plus ``INSTALL_METHOD=local``, stdin/stdout pipes.
stderr goes to an in-memory buffer for diagnostics (the daemon keeps the last 1 KiB of it).

Protocol summary (see ``/work/shared/research/sdk.md`` section 2):

* daemon -> plugin: one JSON object per line (``\\n``-terminated) on stdin; there is no handshake.
* plugin -> daemon: the manifest JSON first (no ``event`` key), then messages ``{"event": "log" |
  "heartbeat" | "error" | "session", ...}``. The SDK writer follows each message with an empty line
  (``\\n\\n``); ``logging`` lines end with a single ``\\n``. Blank lines are ignored, as the daemon's
  ``bufio.Scanner`` does. A line must be shorter than 5 MiB (``MAX_LINE_BYTES``) or the daemon's
  scanner fails and the instance is killed.
* Readiness = the first ``heartbeat`` (the daemon's ``OnInstanceReady``).
* Each request gets zero or more ``stream``/``error`` session messages and exactly one ``end``.
* On EOF of stdin the SDK busy-loops instead of exiting, so :meth:`PluginProcess.close` kills.

Typical use::

    with PluginProcess("tests/protocol/toy_plugin").start() as p:
        r = p.invoke(*invoke_llm("toy", "toy-chat", {"api_key": "good"}, [user_message("hi")]))
        # or: r = p.invoke_llm("toy", "toy-chat", {"api_key": "good"}, [user_message("hi")])
        assert r.ended and r.error is None

Timestamps: every session message dict handed out by :meth:`PluginProcess.stream` and stored in
:attr:`SessionResult.messages` carries two extra keys: ``"_t"`` = ``time.monotonic()`` taken by the
reader thread right after the line was read from the pipe, and ``"_seq"`` = the 1-based index of
that line among all non-blank stdout lines (a total order across sessions). ``SessionResult.t_sent`` is the
``time.monotonic()`` just before the request line was written, so ``msg["_t"] - r.t_sent`` is the
latency as the daemon would see it (plus one pipe hop). One reader thread handles lines in order,
so under heavy output ``_t`` can lag the true arrival by the reader's backlog (about 15 us of
harness CPU per line).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_LINE_BYTES",
    "PluginDiedError",
    "PluginError",
    "PluginProcess",
    "PluginStartError",
    "SessionResult",
    "SessionTimeout",
    "assistant_message",
    "build_envelope",
    "get_ai_model_schemas",
    "get_llm_num_tokens",
    "invoke_llm",
    "system_message",
    "tool_message",
    "user_message",
    "validate_model_credentials",
    "validate_provider_credentials",
]

#: ``PLUGIN_RUNTIME_MAX_BUFFER_SIZE`` default in the daemon (``bufio.Scanner`` max token size).
#: The scanner needs the line *and* its ``\n`` in the buffer, so a line is accepted only when
#: ``len(line_bytes) + 1 <= MAX_LINE_BYTES``.
MAX_LINE_BYTES = 5 * 1024 * 1024

_STDERR_KEEP = 4 * 1024 * 1024  # keep at most the last 4 MiB of stderr
_FINISHED_KEEP = 4096  # finished sessions remembered for late-message detection


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
class PluginError(RuntimeError):
    """Base class; ``result`` holds the partial :class:`SessionResult` when there is one."""

    result: SessionResult | None = None


class PluginStartError(PluginError):
    """The process exited or sent no heartbeat within ``ready_timeout``."""


class PluginDiedError(PluginError):
    """stdout reached EOF (process exited or was killed) while a session was waiting."""


class SessionTimeout(PluginError, TimeoutError):
    """No ``end`` for a session within its timeout."""


# --------------------------------------------------------------------------------------------
# request builders: return (action, data) with every field the Go daemon always sends
# --------------------------------------------------------------------------------------------
def user_message(content: Any) -> dict:
    return {"role": "user", "content": content}


def system_message(content: Any) -> dict:
    return {"role": "system", "content": content}


def assistant_message(content: Any = "", tool_calls: list[dict] | None = None) -> dict:
    return {"role": "assistant", "content": content, "tool_calls": tool_calls or []}


def tool_message(content: str, tool_call_id: str, name: str | None = None) -> dict:
    msg = {"role": "tool", "content": content, "tool_call_id": tool_call_id}
    if name is not None:
        msg["name"] = name
    return msg


def invoke_llm(
    provider: str,
    model: str,
    credentials: dict,
    prompt_messages: list[dict],
    model_parameters: dict | None = None,
    tools: list[dict] | None = None,
    stop: list[str] | None = None,
    stream: bool = True,
    *,
    json_schema: dict | None = None,
    **extra: Any,
) -> tuple[str, dict]:
    """``invoke_llm`` as the daemon sends it (``requests.RequestInvokeLLM``).

    Go marshals nil slices/maps as ``null``: ``tools``, ``stop`` and ``json_schema`` are ``null``
    when not given. Optional daemon fields with ``omitempty`` (``credential_type``,
    ``tool_choice``) are only sent when passed through ``extra``.
    """
    data = {
        "provider": provider,
        "model": model,
        "model_type": "llm",
        "credentials": credentials,
        "model_parameters": model_parameters if model_parameters is not None else {},
        "prompt_messages": prompt_messages,
        "tools": tools,
        "stop": stop,
        "json_schema": json_schema,
        "stream": stream,
    }
    data.update(extra)
    return "invoke_llm", data


def validate_provider_credentials(provider: str, credentials: dict, **extra: Any) -> tuple[str, dict]:
    return "validate_provider_credentials", {"provider": provider, "credentials": credentials, **extra}


def validate_model_credentials(
    provider: str, model: str, credentials: dict, model_type: str = "llm", **extra: Any
) -> tuple[str, dict]:
    return "validate_model_credentials", {
        "provider": provider,
        "model": model,
        "model_type": model_type,
        "credentials": credentials,
        **extra,
    }


def get_llm_num_tokens(
    provider: str,
    model: str,
    credentials: dict,
    prompt_messages: list[dict],
    tools: list[dict] | None = None,
    **extra: Any,
) -> tuple[str, dict]:
    """The daemon sends ``tools: []`` (not null) when there are none for this action."""
    return "get_llm_num_tokens", {
        "provider": provider,
        "model": model,
        "model_type": "llm",
        "credentials": credentials,
        "prompt_messages": prompt_messages,
        "tools": tools if tools is not None else [],
        **extra,
    }


def get_ai_model_schemas(
    provider: str, model: str, credentials: dict, model_type: str = "llm", **extra: Any
) -> tuple[str, dict]:
    return "get_ai_model_schemas", {
        "provider": provider,
        "model": model,
        "model_type": model_type,
        "credentials": credentials,
        **extra,
    }


def build_envelope(
    action: str,
    data: dict,
    session_id: str | None = None,
    *,
    user_id: str = "test-user",
    invoke_type: str = "model",
) -> dict:
    """The daemon's request envelope (``session_manager/session.go`` + ``io_tunnel/mapping.go``)."""
    return {
        "session_id": session_id or str(uuid.uuid4()),
        "conversation_id": None,
        "message_id": None,
        "app_id": None,
        "endpoint_id": None,
        "context": None,
        "event": "request",
        "data": {"user_id": user_id, "type": invoke_type, "action": action, **data},
    }


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass
class SessionResult:
    """Everything one request produced.

    ``messages``: the session messages ``{"type", "data", "_t", "_seq"}`` in arrival order, up to and
    including ``end``. ``chunks``: ``data`` of every ``stream`` message. ``error``: ``data`` of the
    first ``error`` message (``{"error_type", "message", "args"}``) or None. ``raw_lines``: the raw
    stdout lines (decoded) of this session's messages; ``line_lengths`` their byte lengths without
    the ``\\n``. ``late_messages``: session messages that arrived *after* ``end`` (filled in
    asynchronously by the reader thread; should stay empty). ``plugin_errors``: top-level
    ``{"event": "error"}`` messages that named this session. ``stdout_non_json``: non-JSON stdout
    lines seen between sending the request and ``end``.
    """

    session_id: str
    messages: list[dict] = field(default_factory=list)
    chunks: list[Any] = field(default_factory=list)
    error: dict | None = None
    ended: bool = False
    raw_lines: list[str] = field(default_factory=list)
    line_lengths: list[int] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    late_messages: list[dict] = field(default_factory=list)
    plugin_errors: list[dict] = field(default_factory=list)
    stdout_non_json: list[str] = field(default_factory=list)
    t_sent: float = 0.0
    t_end: float | None = None
    failure: str | None = None  # "timeout" | "died" when the session did not end

    @property
    def t_first(self) -> float | None:
        """Arrival time of the first session message (``time.monotonic()``)."""
        return self.messages[0]["_t"] if self.messages else None

    @property
    def duration(self) -> float | None:
        return None if self.t_end is None else self.t_end - self.t_sent


_END_OF_STREAM = object()  # queue sentinel: stdout EOF / process closed


class _SessionState:
    __slots__ = ("queue", "result", "done")

    def __init__(self, result: SessionResult) -> None:
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.result = result
        self.done = False


# --------------------------------------------------------------------------------------------
# the process
# --------------------------------------------------------------------------------------------
class PluginProcess:
    """One plugin instance speaking the stdio protocol.

    Public state (all filled by a single background reader thread):

    * ``manifest``: the first stdout line (a JSON object without ``event``), or None.
    * ``logs``: every ``{"event": "log", ...}`` message (whole message dicts).
    * ``heartbeats`` / ``heartbeat_times``: count and ``time.monotonic()`` of each heartbeat.
    * ``plugin_errors``: every top-level ``{"event": "error"}`` message (e.g. an unparsable request).
    * ``non_json_lines``: stdout lines that are not a JSON object (protocol violations, e.g. print()).
    * ``unknown_events``: JSON objects with an unknown ``event`` value.
    * ``orphan_messages``: session messages for a session id nobody is waiting on.
    * ``line_lengths``: byte length (without ``\\n``) of every non-blank stdout line, in order.
    * ``max_line_length``, ``blank_lines``, ``stdout_lines``.
    * ``ready_after``: seconds from spawn to the first heartbeat.
    """

    def __init__(
        self,
        plugin_dir: str | os.PathLike,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> None:
        self.plugin_dir = Path(plugin_dir).resolve()
        self.python = python
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None

        self.manifest: dict | None = None
        self.logs: list[dict] = []
        self.heartbeats = 0
        self.heartbeat_times: list[float] = []
        self.plugin_errors: list[dict] = []
        self.non_json_lines: list[str] = []
        self.unknown_events: list[dict] = []
        self.orphan_messages: list[dict] = []
        self.line_lengths: list[int] = []
        self.max_line_length = 0
        self.blank_lines = 0
        self.stdout_lines = 0
        self.t_spawn: float | None = None
        self.ready_after: float | None = None

        self._lock = threading.Lock()  # guards session table + shared lists
        self._write_lock = threading.Lock()
        self._sessions: dict[str, _SessionState] = {}
        self._finished: OrderedDict[str, SessionResult] = OrderedDict()
        self._ready = threading.Event()
        self._eof = threading.Event()
        self._stderr = bytearray()
        self._threads: list[threading.Thread] = []
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def command(self) -> list[str]:
        return [self.python, "-m", "main"]

    def build_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["INSTALL_METHOD"] = "local"  # appended last by the daemon, so it always wins
        return env

    def start(self, ready_timeout: float = 30.0) -> PluginProcess:
        if self.proc is not None:
            raise RuntimeError("already started")
        self.t_spawn = time.monotonic()
        self.proc = subprocess.Popen(
            self.command,
            cwd=self.plugin_dir,
            env=self.build_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=-1,  # buffered: readline() on an unbuffered pipe reads 1 byte per syscall
        )
        for target, name in ((self._read_stdout, "stdout"), (self._read_stderr, "stderr")):
            t = threading.Thread(target=target, name=f"plugin-{name}-{self.proc.pid}", daemon=True)
            t.start()
            self._threads.append(t)

        deadline = time.monotonic() + ready_timeout
        while not self._ready.is_set():
            if self._eof.is_set() or self.proc.poll() is not None:
                self._eof.wait(2.0)
                code = self.proc.poll()
                self.close()
                raise PluginStartError(
                    f"plugin exited before its first heartbeat (exit code {code}); "
                    f"stderr tail:\n{self.stderr_tail()}\nnon-JSON stdout: {self.non_json_lines[-5:]}"
                )
            if time.monotonic() >= deadline:
                self.close()
                raise PluginStartError(
                    f"no heartbeat within {ready_timeout}s; stderr tail:\n{self.stderr_tail()}"
                )
            self._ready.wait(0.05)
        return self

    def close(self) -> None:
        """Kill (SIGKILL, as the daemon does) and reap the process; idempotent."""
        if self._closed:
            return
        self._closed = True
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL should not time out
                pass
        # the readers see EOF once the process is dead; join them before closing their pipes
        # (a grandchild holding the pipes open would delay EOF: then we close after the timeout)
        for t in self._threads:
            t.join(timeout=5)
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    if pipe is not None:
                        pipe.close()
                except (OSError, ValueError):
                    pass
        self._wake_all()

    def __enter__(self) -> PluginProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    # ---- stderr ------------------------------------------------------------------------------
    @property
    def stderr_text(self) -> str:
        with self._lock:
            return self._stderr.decode("utf-8", errors="replace")

    def stderr_tail(self, n: int = 4000) -> str:
        return self.stderr_text[-n:]

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr
        while True:
            try:
                data = fd.read1(65536)  # whatever is available, do not wait for 64 KiB
            except (OSError, ValueError):
                break
            if not data:
                break
            with self._lock:
                self._stderr += data
                if len(self._stderr) > _STDERR_KEEP:
                    del self._stderr[: len(self._stderr) - _STDERR_KEEP]

    # ---- stdout reader -----------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        reader = self.proc.stdout
        try:
            while True:
                try:
                    raw = reader.readline()
                except (OSError, ValueError):
                    break
                if not raw:
                    break
                t = time.monotonic()
                self._handle_line(raw, t)
        finally:
            self._eof.set()
            self._wake_all()

    def _handle_line(self, raw: bytes, t: float) -> None:
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):  # bufio.ScanLines drops a trailing \r too
            raw = raw[:-1]
        if not raw.strip():
            with self._lock:
                self.blank_lines += 1
            return
        n = len(raw)
        text = raw.decode("utf-8", errors="replace")
        with self._lock:
            self.stdout_lines += 1
            self.line_lengths.append(n)
            if n > self.max_line_length:
                self.max_line_length = n
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            with self._lock:
                self.non_json_lines.append(text)
            return

        event = msg.get("event")
        if event is None and self.manifest is None and self.stdout_lines == 1:
            self.manifest = msg
            return
        if event == "heartbeat":
            with self._lock:
                self.heartbeats += 1
                self.heartbeat_times.append(t)
            if not self._ready.is_set():
                self.ready_after = t - (self.t_spawn or t)
                self._ready.set()
            return
        if event == "log":
            with self._lock:
                self.logs.append(msg)
            return
        if event == "error":
            sid = msg.get("session_id")
            # route under the lock so a session that is just finishing cannot miss it
            with self._lock:
                self.plugin_errors.append(msg)
                state = self._sessions.get(sid) if sid else None
                if state is not None:
                    state.queue.put(("plugin_error", msg, text, n, t))
                elif sid and sid in self._finished:
                    self._finished[sid].plugin_errors.append(msg)
            return
        if event == "session":
            sid = msg.get("session_id")
            body = msg.get("data")
            if not isinstance(body, dict):
                body = {"type": None, "data": body}
            smsg = dict(body)
            smsg["_t"] = t
            smsg["_seq"] = self.stdout_lines
            with self._lock:
                state = self._sessions.get(sid)
                if state is not None:
                    state.queue.put(("session", smsg, text, n, t))
                elif sid in self._finished:
                    self._finished[sid].late_messages.append(smsg)
                else:
                    self.orphan_messages.append({**msg, "_t": t})
            return
        with self._lock:
            self.unknown_events.append(msg)

    def _wake_all(self) -> None:
        with self._lock:
            states = list(self._sessions.values())
        for st in states:
            st.queue.put(_END_OF_STREAM)

    # ---- writing -----------------------------------------------------------------------------
    def send_raw(self, line: str | bytes) -> None:
        """Write bytes to the plugin's stdin as-is (append ``\\n`` yourself)."""
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError("not started")
        data = line.encode("utf-8") if isinstance(line, str) else line
        with self._write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def send_request(self, envelope: dict) -> None:
        self.send_raw(json.dumps(envelope, ensure_ascii=False, separators=(",", ":")) + "\n")

    # ---- sessions ----------------------------------------------------------------------------
    def _session_events(
        self, envelope: dict, timeout: float, result: SessionResult
    ) -> Iterator[tuple[str, dict, str, int, float]]:
        sid = envelope["session_id"]
        state = _SessionState(result)
        with self._lock:
            if sid in self._sessions:
                raise ValueError(f"session id {sid!r} already in flight")
            self._sessions[sid] = state
            non_json_mark = len(self.non_json_lines)
        try:
            if self._eof.is_set():
                result.failure = "died"
                raise PluginDiedError(f"plugin stdout is closed; stderr tail:\n{self.stderr_tail()}")
            result.t_sent = time.monotonic()
            try:
                self.send_request(envelope)
            except (OSError, ValueError) as e:  # broken pipe / closed stdin
                result.failure = "died"
                raise PluginDiedError(
                    f"cannot write to plugin stdin ({e!r}); stderr tail:\n{self.stderr_tail()}"
                ) from e
            deadline = result.t_sent + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    result.failure = "timeout"
                    raise SessionTimeout(
                        f"session {sid} got no 'end' within {timeout}s "
                        f"({len(result.messages)} messages so far); stderr tail:\n{self.stderr_tail()}"
                    )
                try:
                    item = state.queue.get(timeout=min(remaining, 0.5))
                except queue.Empty:
                    continue
                if item is _END_OF_STREAM:
                    result.failure = "died"
                    raise PluginDiedError(
                        f"plugin stdout closed during session {sid} (exit code {self.returncode}); "
                        f"stderr tail:\n{self.stderr_tail()}"
                    )
                yield item
                if item[0] == "session" and item[1].get("type") == "end":
                    return
        finally:
            with self._lock:
                self._sessions.pop(sid, None)
                self._finished[sid] = result
                while len(self._finished) > _FINISHED_KEEP:
                    self._finished.popitem(last=False)
                result.stdout_non_json = self.non_json_lines[non_json_mark:]
            # items queued before we unregistered belong to the session but came after we stopped
            while True:
                try:
                    item = state.queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _END_OF_STREAM and item[0] == "session":
                    result.late_messages.append(item[1])
                elif item is not _END_OF_STREAM and item[0] == "plugin_error":
                    result.plugin_errors.append(item[1])

    @staticmethod
    def _record(result: SessionResult, item: tuple[str, dict, str, int, float]) -> None:
        kind, msg, text, n, t = item
        result.raw_lines.append(text)
        result.line_lengths.append(n)
        if kind == "plugin_error":
            result.plugin_errors.append(msg)
            return
        result.messages.append(msg)
        mtype = msg.get("type")
        if mtype == "stream":
            result.chunks.append(msg.get("data"))
        elif mtype == "error":
            result.errors.append(msg.get("data"))
            if result.error is None:
                result.error = msg.get("data")
        elif mtype == "end":
            result.ended = True
            result.t_end = t

    def stream(
        self,
        action: str,
        data: dict,
        timeout: float = 60.0,
        *,
        session_id: str | None = None,
        user_id: str = "test-user",
        invoke_type: str = "model",
        result: SessionResult | None = None,
    ) -> Iterator[dict]:
        """Send one request and yield its session messages as they arrive.

        Yields the message dicts ``{"type": "stream"|"error"|"end"|"invoke", "data": ..., "_t":
        <time.monotonic() at arrival>, "_seq": <stdout line number>}``; the request is written
        when iteration starts; stops after ``end``. Raises :class:`SessionTimeout` if
        ``end`` does not arrive within ``timeout`` seconds of sending, :class:`PluginDiedError` if
        stdout closes first. Pass ``result=SessionResult(...)`` to also have everything recorded.
        """
        envelope = build_envelope(action, data, session_id, user_id=user_id, invoke_type=invoke_type)
        res = result if result is not None else SessionResult(session_id=envelope["session_id"])
        res.session_id = envelope["session_id"]
        try:
            for item in self._session_events(envelope, timeout, res):
                self._record(res, item)
                if item[0] == "session":
                    yield item[1]
        except PluginError as e:
            e.result = res
            raise

    def invoke(
        self,
        action: str,
        data: dict,
        timeout: float = 60.0,
        *,
        session_id: str | None = None,
        user_id: str = "test-user",
        invoke_type: str = "model",
        allow_incomplete: bool = False,
    ) -> SessionResult:
        """Send one request and block until its ``end``.

        On timeout / process death raises :class:`SessionTimeout` / :class:`PluginDiedError` with
        the partial result in ``.result``, unless ``allow_incomplete=True``, in which case the
        partial result is returned with ``ended=False`` and ``failure`` set.
        """
        res = SessionResult(session_id="")
        try:
            for _ in self.stream(
                action, data, timeout, session_id=session_id, user_id=user_id,
                invoke_type=invoke_type, result=res,
            ):
                pass
        except PluginError:
            if not allow_incomplete:
                raise
        return res

    # ---- convenience wrappers (build the daemon's request + run it) --------------------------
    def invoke_llm(self, *args: Any, timeout: float = 60.0, **kwargs: Any) -> SessionResult:
        return self.invoke(*invoke_llm(*args, **kwargs), timeout=timeout)

    def stream_llm(self, *args: Any, timeout: float = 60.0, **kwargs: Any) -> Iterator[dict]:
        return self.stream(*invoke_llm(*args, **kwargs), timeout=timeout)

    def validate_provider_credentials(self, *args: Any, timeout: float = 60.0, **kwargs: Any) -> SessionResult:
        return self.invoke(*validate_provider_credentials(*args, **kwargs), timeout=timeout)

    def validate_model_credentials(self, *args: Any, timeout: float = 60.0, **kwargs: Any) -> SessionResult:
        return self.invoke(*validate_model_credentials(*args, **kwargs), timeout=timeout)

    def get_llm_num_tokens(self, *args: Any, timeout: float = 60.0, **kwargs: Any) -> SessionResult:
        return self.invoke(*get_llm_num_tokens(*args, **kwargs), timeout=timeout)

    def get_ai_model_schemas(self, *args: Any, timeout: float = 60.0, **kwargs: Any) -> SessionResult:
        return self.invoke(*get_ai_model_schemas(*args, **kwargs), timeout=timeout)

    # ---- misc --------------------------------------------------------------------------------
    def wait_for(self, predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
        """Poll ``predicate()`` until true or timeout (for asserting on async reader state)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())

    def in_flight(self) -> list[str]:
        with self._lock:
            return list(self._sessions)
