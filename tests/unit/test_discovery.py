"""The served-model directory: cached answers, and ``known`` for callers that must not wait."""

import threading
import time

from deepseek_engine.discovery import ModelDirectory
from deepseek_engine.errors import UnreachableError
from deepseek_engine.settings import parse_endpoints

EP = parse_endpoints("http://gpu-1:8000/v1")[0]
MODELS = [{"id": "deepseek-r1", "max_model_len": 4096}]


class Fetch:
    """Counts calls; answers MODELS, or raises while ``down``; blocks until ``go`` is set."""

    def __init__(self, down: bool = False) -> None:
        self.calls, self.down, self.go = 0, down, threading.Event()
        self.go.set()

    def __call__(self):
        self.calls += 1
        self.go.wait(5)
        if self.down:
            raise UnreachableError("connect timed out", endpoint=EP.name)
        return EP, MODELS


def _until(cond, seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()


def test_known_answers_at_once_and_fills_in_the_background():
    d, fetch = ModelDirectory(), Fetch()
    fetch.go.clear()  # a slow server
    t = time.monotonic()
    assert d.known(("k",), fetch) is None  # nothing yet: not waited for
    assert time.monotonic() - t < 0.1
    fetch.go.set()
    assert _until(lambda: d.known(("k",), fetch) == (EP, MODELS))
    assert fetch.calls == 1
    assert d.get(("k",), fetch) == (EP, MODELS) and fetch.calls == 1  # the same cache


def test_a_stale_answer_is_served_while_one_refresh_runs():
    d, fetch = ModelDirectory(ttl=0.0, retry=10.0), Fetch()
    d.get(("k",), fetch)
    fetch.go.clear()
    for _ in range(5):  # stale at once (ttl 0): the old answer, however old
        assert d.known(("k",), fetch) == (EP, MODELS)
    assert _until(lambda: fetch.calls == 2)
    fetch.go.set()
    time.sleep(0.05)
    assert fetch.calls == 2  # one refresh, not one per call


def test_a_failing_fetch_is_retried_after_a_pause_not_on_every_call():
    d, fetch = ModelDirectory(retry=0.2), Fetch(down=True)
    for _ in range(10):
        assert d.known(("k",), fetch) is None
    assert _until(lambda: fetch.calls == 1) and fetch.calls == 1
    time.sleep(0.25)
    assert d.known(("k",), fetch) is None
    assert _until(lambda: fetch.calls == 2)


def _together(d, fetch, n: int = 8) -> list:
    """``n`` callers of ``get`` at once (a burst after a restart); what each got or raised."""
    out: list = [None] * n

    def one(i):
        try:
            out[i] = d.get(("k",), fetch)
        except Exception as e:  # noqa: BLE001 - what each caller saw is the result under test
            out[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, out


def _burst(d, fetch) -> list:
    """Eight callers while the server is slow to answer: every one arrives while it is asked."""
    fetch.go.clear()
    threads, out = _together(d, fetch)
    assert _until(lambda: fetch.calls >= 1)
    time.sleep(0.05)
    fetch.go.set()
    for t in threads:
        t.join(5)
    return out


def test_a_burst_of_first_requests_lists_the_models_once():
    d, fetch = ModelDirectory(), Fetch()
    assert _burst(d, fetch) == [(EP, MODELS)] * 8 and fetch.calls == 1


def test_a_burst_shares_the_one_failure_and_the_next_call_asks_again():
    d, fetch = ModelDirectory(), Fetch(down=True)
    out = _burst(d, fetch)
    assert fetch.calls == 1 and all(isinstance(e, UnreachableError) for e in out), out
    fetch.down = False
    assert d.get(("k",), fetch) == (EP, MODELS) and fetch.calls == 2  # a failure is not cached


def test_a_waiter_whose_fetch_was_stopped_asks_on_its_own():
    d = ModelDirectory()
    started, release = threading.Event(), threading.Event()

    def stopped():  # the first caller's request is cancelled mid-fetch (gevent's GreenletExit)
        started.set()
        release.wait(5)
        raise KeyboardInterrupt

    def leader():
        try:
            d.get(("k",), stopped)
        except KeyboardInterrupt:
            pass

    t = threading.Thread(target=leader)
    t.start()
    assert started.wait(5)
    fetch = Fetch()
    threads, out = _together(d, fetch, n=2)
    time.sleep(0.05)
    release.set()
    for th in (t, *threads):
        th.join(5)
    assert out == [(EP, MODELS)] * 2 and 1 <= fetch.calls <= 2  # not the other caller's stop
