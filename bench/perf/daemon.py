"""A lean daemon for load: hundreds of concurrent sessions over one plugin's stdio without the
load generator becoming the bottleneck.

The test harness (``tests/protocol/harness.py``) hands every message to the calling thread
through a queue: two thread switches per streamed chunk. At 256 GPU-paced streams that is
~8,500 switches a second under one GIL, and the harness, not the plugin, set the latency it
measured (the runtime floor alone "added" 0.6 s p50 to time to first token on this machine).
Here the reader thread keeps only each session's arrival times and wakes the caller once, at
``end``; everything else (start-up, heartbeats, logs, other requests) is the harness's.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from tests.protocol.harness import PluginProcess, build_envelope, invoke_llm


@dataclass
class LeanResult:
    """One session as the load generator keeps it."""

    t_sent: float = 0.0
    t_end: float | None = None
    text_times: list[float] = field(default_factory=list)  # arrival of each chunk with text
    chunks: int = 0
    error: object = None
    ended: bool = False
    failure: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


class LeanDaemon(PluginProcess):
    """``PluginProcess`` whose ``lean_invoke`` sessions are recorded by arrival time only."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lean: dict[str, LeanResult] = {}

    def _handle_line(self, raw: bytes, t: float) -> None:
        if self._lean and b'"session"' in raw:
            try:
                msg = json.loads(raw)
            except ValueError:
                msg = None
            r = self._lean.get(msg.get("session_id")) if isinstance(msg, dict) else None
            if r is not None and msg.get("event") == "session":
                body = msg.get("data") or {}
                kind = body.get("type")
                if kind == "stream":
                    r.chunks += 1
                    if ((body.get("data") or {}).get("delta") or {}).get("message", {}).get("content"):
                        r.text_times.append(t)
                elif kind == "error":
                    r.error = r.error or body.get("data")
                elif kind == "end":
                    r.t_end, r.ended = t, True
                    r.done.set()
                return
        super()._handle_line(raw, t)

    def _wake_all(self) -> None:
        super()._wake_all()
        for r in list(self._lean.values()):
            r.failure = r.failure or "died"
            r.done.set()

    def lean_invoke(self, provider: str, model: str, creds: dict, prompt: list, params: dict,
                    timeout: float = 120.0) -> LeanResult:
        envelope = build_envelope(*invoke_llm(provider, model, creds, prompt, params))
        sid = envelope["session_id"]
        r = self._lean[sid] = LeanResult()
        try:
            r.t_sent = time.monotonic()
            self.send_request(envelope)
            if not r.done.wait(timeout):
                r.failure = "timeout"
        finally:
            self._lean.pop(sid, None)
        return r
