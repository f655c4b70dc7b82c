"""Adaptive merging (issue 16): a busy process lets a stream's tokens gather between pieces,
never for longer than ``MERGE_WINDOW``; a process that keeps up sends each token as it arrives.
Time is a fake clock here: what the batch decides, not how fast this machine is."""

import time

import pytest

from deepseek_engine.answer import Piece
from deepseek_engine.completion import Batch, Completion
from deepseek_engine.pressure import BUSY_STREAMS, MERGE_WINDOW, PRESSURE, Pressure, window_for
from tests.unit.test_discovery import _until as until


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Lag:
    """A pressure signal fixed at ``window``: a simulated lag. Its sleep moves the fake clock."""

    def __init__(self, window: float, clock: Clock) -> None:
        self.w, self.clock, self.slept, self.streams, self.lag = window, clock, [], 0, 0.0

    def window(self) -> float:
        return self.w

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.t += seconds

    def opened(self) -> None:
        self.streams += 1

    def closed(self) -> None:
        self.streams -= 1


def stream(window: float, gap: float, n: int = 60, work: float = 0.0005):
    """A stream of ``n`` tokens ``gap`` seconds apart, read as ``Completion.pieces`` reads it: a
    read waits for the next token unless some have arrived; what arrived together is reported
    ready (``more_ready``); each token costs ``work`` seconds. Returns (time out, tokens) per piece."""
    clock = Clock()
    start = clock.t
    lag = Lag(window, clock)
    batch = Batch(pressure=lag, clock=clock)
    arrivals = [start + i * gap for i in range(n)]
    out, i = [], 0
    while i < n:
        clock.t = max(clock.t, arrivals[i])  # a read waits for the next token
        ready = [k for k in range(i, n) if arrivals[k] <= clock.t]
        for j, k in enumerate(ready):
            clock.t += work
            batch.add(Piece(f"t{k} ", []))
            if batch.due(more_ready=j < len(ready) - 1):
                out.append((clock.t, batch.take().text.split()))
                batch.gather()
        i = ready[-1] + 1
    batch.close()
    assert lag.streams == 0 and all(s <= MERGE_WINDOW for s in lag.slept)
    assert [t for _, piece in out for t in piece] == [f"t{k}" for k in range(n)]  # all, in order
    return out


def test_idle_each_token_is_its_own_piece_as_it_arrives():
    out = stream(0.0, gap=0.03)
    assert [len(p) for _, p in out] == [1] * 60
    assert all(t - (1000.0 + k * 0.03) < 0.002 for k, (t, _) in enumerate(out))  # not held


@pytest.mark.parametrize("gap", [0.005, 0.02, 0.03, 0.05])
def test_under_lag_pieces_merge_and_updates_are_never_further_apart_than_the_window(gap):
    out = stream(MERGE_WINDOW, gap)
    sizes = [len(p) for _, p in out]
    assert sizes[0] == 1  # the first token is never held: time to first token is not the price
    assert max(sizes) >= int(MERGE_WINDOW / gap)  # merged: about a window's worth a piece
    assert len(out) <= 60 * gap / MERGE_WINDOW + 3
    gaps = [b - a for (a, _), (b, _) in zip(out, out[1:], strict=False)]
    assert max(gaps) <= MERGE_WINDOW + 0.01, max(gaps)  # plus the fake work of one read


def test_a_token_slower_than_the_window_is_never_held_for_the_next():
    out = stream(MERGE_WINDOW, gap=0.2, n=10)
    assert [len(p) for _, p in out] == [1] * 10
    assert all(t - (1000.0 + k * 0.2) < 0.002 for k, (t, _) in enumerate(out))


def test_the_window_grows_with_the_lag_and_the_cpu_used_and_is_bounded():
    assert window_for(0.5, BUSY_STREAMS - 1, 1.0) == 0.0  # a few streams: not theirs to fix
    assert window_for(0.001, 500, 0.3) == 0.0  # keeping up: one token a piece
    steps = [window_for(lag, 256) for lag in (0.003, 0.005, 0.008, 0.02, 1.0)]
    assert steps == sorted(steps) and 0 < steps[0] < MERGE_WINDOW and steps[-1] == MERGE_WINDOW
    steps = [window_for(0.0, 256, cpu) for cpu in (0.55, 0.65, 0.75, 0.9, 1.5)]
    assert steps == sorted(steps) and 0 < steps[0] < MERGE_WINDOW and steps[-1] == MERGE_WINDOW


def test_the_signal_is_the_processes_own_not_a_requests():
    """One process serves every workspace: every request reads the same signal, which takes
    nothing from credentials, a model or parameters."""
    a = Completion({"endpoint_urls": "http://a:1/v1"}, "deepseek-r1", [], {"merge_window": 0}, catalogue=True)
    b = Completion({"endpoint_urls": "http://b:1/v1"}, "deepseek-v3", [], {}, catalogue=True)
    assert a.pressure is b.pressure is PRESSURE
    assert window_for.__code__.co_varnames[:3] == ("lag", "streams", "cpu")


def test_the_lag_is_measured_only_while_many_streams_are_open():
    """A ticker whose sleeps wake 20 ms late (a process behind) reads 20 ms of lag and the share
    of a core used, starts with the BUSY_STREAMS-th stream, and stops (back to 0) when they close."""
    clock = Clock()

    def late_sleep(seconds: float) -> None:
        time.sleep(0.001)
        clock.t += seconds + 0.02

    p = Pressure(clock=clock, sleep=late_sleep, cpu_time=lambda: clock.t * 0.25)  # a quarter of a core
    for _ in range(BUSY_STREAMS - 1):
        p.opened()
    time.sleep(0.05)
    assert p.lag == 0.0 and p.window() == 0.0
    p.opened()
    assert until(lambda: abs(p.lag - 0.02) < 1e-9 and abs(p.cpu - 0.25) < 1e-6, 10.0)
    assert p.window() == MERGE_WINDOW
    for _ in range(BUSY_STREAMS):
        p.closed()
    assert until(lambda: p.lag == 0.0 and p.cpu == 0.0 and not p._ticking, 10.0)
