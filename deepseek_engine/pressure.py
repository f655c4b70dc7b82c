"""How far behind the process is: one signal for every stream in it, whichever workspace's.

Dify runs one plugin process for every workspace, so its CPU is shared by all their streams. Each
GPU-paced token costs the process a wake-up, a read and a chunk for the caller's runtime; when
hundreds of streams are open, that is more than one core can do, and every stream's tokens queue
behind the others'. ``Pressure.window()`` then asks each stream to let tokens gather for a while
(``completion.Batch``: fewer, fuller chunks), up to ``MERGE_WINDOW`` between two updates, and
nothing when the process keeps up (one token per chunk, as it arrives).

Two signals, both the process's own, read by a ticker that runs only while ``BUSY_STREAMS`` or
more streams are open: its scheduling lag (the ticker sleeps ``TICK`` and measures how late it
wakes: under the SDK's gevent, how long the ready greenlets keep the hub busy; without gevent, the
GIL and the OS scheduler; the median of the last ``SAMPLES`` ticks, so one descheduling of a loaded
machine does not count), and the share of a core it uses (many streams ready at once: a process
near a whole core queues every token even before any lag shows). Nothing in it comes from a
credential or a request: no workspace's settings can change what another's streams get.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["MERGE_WINDOW", "BUSY_STREAMS", "PRESSURE", "Pressure", "window_for"]

# the most time between two pieces of one stream that merging may cause (seconds; the reader's
# wait is shortened by the lag, so the piece is due a window after the last): under the 0.1 s
# within which a response still reads as immediate (Card, Moran & Newell; Nielsen), twelve
# updates a second, faster than anyone reads; docs/performance.md has what it saves
MERGE_WINDOW = 0.08
BUSY_STREAMS = 8  # fewer open streams cost a few % of a core: lag is then not of their making
LAG_IDLE = 0.002  # seconds of lag a process that keeps up shows (a timer's own slack)
GAIN = 10  # window per second of lag: 10 ms behind merges for the whole window
# share of a core from which the process merges, and at which it merges for the whole window: one
# GIL-bound process queues its work well before it uses the whole core
CPU_BUSY, CPU_FULL = 0.5, 0.8
TICK = 0.01
SAMPLES = 5


def window_for(lag: float, streams: int, cpu: float = 0.0) -> float:
    """Seconds a stream's reader may let tokens gather, for ``lag`` seconds of scheduling lag,
    ``cpu`` (the share of a core the process uses) and ``streams`` open: none when the process
    keeps up, more the further it falls behind, never more than ``MERGE_WINDOW``."""
    if streams < BUSY_STREAMS:
        return 0.0
    by_lag = (lag - LAG_IDLE) * GAIN if lag > LAG_IDLE else 0.0
    by_cpu = (cpu - CPU_BUSY) / (CPU_FULL - CPU_BUSY) * MERGE_WINDOW if cpu > CPU_BUSY else 0.0
    return min(MERGE_WINDOW, max(by_lag, by_cpu))


class Pressure:
    """The process's scheduling lag and CPU share while many streams are open (``opened``/
    ``closed`` count them); ``window()`` for each stream's reader. ``clock``/``sleep``/``cpu_time``
    are injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None,
                 cpu_time: Callable[[], float] = time.process_time) -> None:
        self.streams = 0
        self.lag = 0.0
        self.cpu = 0.0  # share of a core used over the last SAMPLES ticks
        self._clock = clock
        self._cpu_time = cpu_time
        self.sleep = sleep or _sleep  # a stream's reader waits with it too (``Batch.gather``)
        self._ticking = False
        self._lock = threading.Lock()

    def window(self) -> float:
        return window_for(self.lag, self.streams, self.cpu)

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
        marks: deque[tuple[float, float]] = deque([(self._clock(), self._cpu_time())], maxlen=SAMPLES + 1)
        try:
            while True:
                with self._lock:  # decided under the lock that ``opened`` starts a ticker with
                    if self.streams < BUSY_STREAMS:
                        self._ticking = False
                        self.lag = self.cpu = 0.0
                        return
                t = self._clock()
                self.sleep(TICK)
                now = self._clock()
                late.append(max(0.0, now - t - TICK))
                self.lag = statistics.median(late)
                marks.append((now, self._cpu_time()))
                (t0, c0), (t1, c1) = marks[0], marks[-1]
                self.cpu = (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
        except BaseException:  # the process ends: the next busy stream starts another
            self._ticking = False
            raise


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up at each call: gevent's once the SDK has patched the process


PRESSURE = Pressure()  # the process's: every stream of every workspace reads the same
