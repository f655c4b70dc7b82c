"""How far behind the process is: one signal for every stream in it, whichever workspace's.

Dify runs one plugin process for every workspace, so its CPU is shared by all their streams. Each
GPU-paced token costs the process a wake-up, a read and a chunk for the caller's runtime; when
hundreds of streams are open, that is more than one core can do, and every stream's tokens queue
behind the others'. ``Pressure.window()`` then asks each stream to let tokens gather for a while
(``completion.Batch``: fewer, fuller chunks), up to ``MERGE_WINDOW`` between two updates, and
nothing when the process keeps up (one token per chunk, as it arrives).

The signal is the process's own scheduling lag: a ticker that sleeps ``TICK`` and measures how late
it wakes (under the SDK's gevent, how long the ready greenlets keep the hub busy; without gevent,
the GIL and the OS scheduler). It runs only while ``BUSY_STREAMS`` or more streams are open, and
reads the median of its last ``SAMPLES`` ticks, so one descheduling of a loaded machine does not
count as load. Nothing in it comes from a credential or a request: no workspace's settings can
change what another's streams get.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["MERGE_WINDOW", "BUSY_STREAMS", "PRESSURE", "Pressure", "window_for"]

# the longest a stream's reader waits between two updates to let tokens gather (seconds): with
# the process's own lag on top, updates stay about 0.1 s apart, the delay under which a response
# still reads as immediate (Card, Moran & Newell; Nielsen's 0.1 s limit) and ten updates a second,
# faster than anyone reads; see docs/performance.md for what it saves
MERGE_WINDOW = 0.08
BUSY_STREAMS = 8  # fewer open streams cost a few % of a core: lag is then not of their making
LAG_IDLE = 0.002  # seconds of lag a process that keeps up shows (a timer's own slack)
GAIN = 10  # window per second of lag: 10 ms behind merges for the whole window
TICK = 0.01
SAMPLES = 5


def window_for(lag: float, streams: int) -> float:
    """Seconds a stream's reader may let tokens gather, for ``lag`` seconds of scheduling lag
    with ``streams`` open: none when the process keeps up, more the further it falls behind,
    never more than ``MERGE_WINDOW``."""
    if streams < BUSY_STREAMS or lag <= LAG_IDLE:
        return 0.0
    return min(MERGE_WINDOW, (lag - LAG_IDLE) * GAIN)


class Pressure:
    """The process's scheduling lag while many streams are open (``opened``/``closed`` count
    them); ``window()`` for each stream's reader. ``clock``/``sleep`` are injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.streams = 0
        self.lag = 0.0
        self._clock = clock
        self.sleep = sleep or _sleep  # a stream's reader waits with it too (``Batch.gather``)
        self._ticking = False
        self._lock = threading.Lock()

    def window(self) -> float:
        return window_for(self.lag, self.streams)

    def opened(self) -> None:
        with self._lock:
            self.streams += 1
            start = self.streams >= BUSY_STREAMS and not self._ticking
            self._ticking = self._ticking or start
        if start:  # a daemon thread; under gevent's patching a greenlet on the same hub
            threading.Thread(target=self._tick, name="deepseek-pressure", daemon=True).start()

    def closed(self) -> None:
        with self._lock:
            self.streams -= 1

    def _tick(self) -> None:
        late: deque[float] = deque(maxlen=SAMPLES)
        try:
            while True:
                with self._lock:  # decided under the lock that ``opened`` starts a ticker with
                    if self.streams < BUSY_STREAMS:
                        self._ticking = False
                        self.lag = 0.0
                        return
                t = self._clock()
                self.sleep(TICK)
                late.append(max(0.0, self._clock() - t - TICK))
                self.lag = statistics.median(late)
        except BaseException:  # the process ends: the next busy stream starts another
            self._ticking = False
            raise


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up at each call: gevent's once the SDK has patched the process


PRESSURE = Pressure()  # the process's: every stream of every workspace reads the same
