"""A circuit around the cache's store: after ``threshold`` errors in a row, the cache is bypassed
for ``cooldown`` seconds, then one request tries it again. A Redis down or hanging then costs a
request nothing, instead of a deadline each (LiteLLM #35273)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Circuit"]


class Circuit:
    def __init__(self, threshold: int = 5, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self._errors = 0
        self._open_until = 0.0  # while open: when the next trial may go
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self._errors >= self.threshold

    def allows(self) -> bool:
        """Whether a call may go to the store now: always while closed; while open, one trial
        once the cooldown has passed (the next one waits another cooldown unless it succeeds)."""
        if self._errors < self.threshold:
            return True
        with self._lock:
            now = self.clock()
            if now < self._open_until:
                return False
            self._open_until = now + self.cooldown
            return True

    def success(self) -> bool:
        """Record a call that worked; True when it closes an open circuit."""
        was_open = self._errors >= self.threshold
        self._errors = 0
        return was_open

    def failure(self) -> bool:
        """Record a failed call; True when this one opens the circuit."""
        with self._lock:
            self._errors += 1
            if self._errors == self.threshold:
                self._open_until = self.clock() + self.cooldown
                return True
            if self._errors > self.threshold:
                self._open_until = self.clock() + self.cooldown  # a failed trial: wait again
            return False
