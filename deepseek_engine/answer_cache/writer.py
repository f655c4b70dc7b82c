"""Writes after the answer is delivered: a bounded queue drained by one background worker. A
full queue drops the write (a later repeat fills the entry), so a slow Redis never holds a
request or grows the plugin's memory."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["Writer"]

log = logging.getLogger(__name__)


class Writer:
    def __init__(self, write: Callable[[str, bytes, int], None], capacity: int = 256) -> None:
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def offer(self, key: str, value: bytes, ttl: int) -> bool:
        """Queue a write; False when the queue is full and it was dropped."""
        self._start()
        try:
            self._queue.put_nowait((key, value, ttl))
        except queue.Full:
            return False
        return True

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued write is done (tests and benchmarks); False on timeout."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True, name="deepseek-answer-cache")
                    self._thread.start()

    def _run(self) -> None:
        while True:
            key, value, ttl = self._queue.get()
            try:
                self._write(key, value, ttl)
            except Exception:  # the worker must outlive any one write; logged
                log.exception("answer cache: a write failed unexpectedly")
            finally:
                self._queue.task_done()
