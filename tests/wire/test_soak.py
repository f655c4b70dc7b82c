"""Soak: a few thousand requests over three endpoints, two of them failing at random. While one
endpoint is healthy nothing is lost, and the process's open file descriptors stay flat."""

import os
import random
import threading

from deepseek_engine import AnswerAssembler, ChatClient, build_body, parse_settings
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryPolicy
from deepseek_sim import SimConfig, Simulator
from tests.wire.wireutil import WANT

REQUESTS = 2000
WORKERS = 16
BEFORE_OUTPUT = [dict(kind="status", status=503), dict(kind="status", status=429, headers={"Retry-After": "0"}),
                 dict(kind="reset_before_headers"), dict(kind="html_502"), dict(kind="drop_mid_stream", after=1)]
ANYWHERE = BEFORE_OUTPUT + [dict(kind="drop_mid_stream", after=12), dict(kind="malformed_chunk", after=12),
                            dict(kind="error_event", after=12)]


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_soak(registry):
    rng = random.Random(7)
    sims = [Simulator(SimConfig(served_model="deepseek-r1")).start() for _ in range(3)]
    flaky = sims[1:]  # sims[0] stays healthy
    try:
        settings = parse_settings({"endpoint_urls": ",".join(s.base_url for s in sims)})
        client = ChatClient(settings, registry=registry, health=HealthBook(base_cooldown=0.05),
                            policy=RetryPolicy(backoff_base=0.001, backoff_cap=0.01), prober=None)
        body = build_body("deepseek-r1", [{"role": "user", "content": "hi"}], {})
        lock = threading.Lock()
        outcomes = {"ok": 0, "bad": []}

        def one(i: int) -> None:
            # first half streams (only faults before the first token can be hidden from a
            # streaming user), second half is blocking (any fault can be retried)
            buffered = i >= REQUESTS // 2
            with lock:  # fault the next request of a flaky endpoint now and then
                if rng.random() < 0.08:  # under the 10% retry budget, by design
                    rng.choice(flaky).inject(**rng.choice(ANYWHERE if buffered else BEFORE_OUTPUT))
            a = AnswerAssembler(True)
            try:
                text = "".join(p.text for p in (a.feed(d) for d in client.stream(body, buffered=buffered)) if p)
                text += a.finish().text
            except Exception as e:  # noqa: BLE001 - every failure is recorded and asserted on
                with lock:
                    outcomes["bad"].append(repr(e))
                return
            with lock:
                if text == WANT:
                    outcomes["ok"] += 1
                else:
                    outcomes["bad"].append(text)

        def run_phase(lo: int, hi: int) -> None:
            threads = [threading.Thread(target=lambda k=k: [one(i) for i in range(lo + k, hi, WORKERS)])
                       for k in range(WORKERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        run_phase(0, 50)  # warm the pool before measuring descriptors
        outcomes["ok"] = 0
        start_fds = fds()
        run_phase(0, REQUESTS // 2)
        run_phase(REQUESTS // 2, REQUESTS)
        assert outcomes["bad"] == []
        assert outcomes["ok"] == REQUESTS
        assert sum(len(s.requests) for s in flaky) > REQUESTS / 3  # the flaky ones took real traffic
        assert fds() <= start_fds + WORKERS * 3  # bounded by the pool, not by the request count
    finally:
        for s in sims:
            s.stop()
