"""Answer cache benchmark: what a hit saves, what the cache costs a miss, and whether a chat-like
trace (no repeats) notices it. Against the simulator in its own process (paced like a GPU for
the traces, unpaced for the cost of a miss) and a real redis-server on loopback.

    bench/cache                 # about 2 minutes; writes docs/cache-bench.md
    bench/cache --quick         # a smoke run

Scenarios:
  workflow trace   20 FAQ-like deterministic questions asked 5 times each in a shuffled order
                   (temperature 0, cache on): hit rate; time to first piece and to the whole
                   answer, hits against misses
  chat trace       conversations whose every request is new (the history grows), cache on and off
                   alternated: whole-answer time
  cost of a miss   the cache's own work on a miss's path (visit, lookup, queueing the write), per
                   request, with Redis up, down and hanging (after the circuit opened), against the
                   cache off; and a miss end to end on an unpaced simulator, cache on and off
                   alternated
"""

from __future__ import annotations

import argparse
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from deepseek_engine import ChatClient, Completion, Finished, build_body, parse_settings
from deepseek_engine.answer_cache import AnswerCache
from deepseek_engine.answer_cache.circuit import Circuit
from deepseek_engine.answer_cache.entry import Entry
from deepseek_engine.answer_cache.store import RedisStore, StoreConfig
from deepseek_engine.health import HealthBook
from deepseek_engine.transport import ClientRegistry
from tests.cache.redisserver import Mute, RedisServer

ROOT = Path(__file__).resolve().parents[1]
GPU = ["--ttft", "0.25", "--inter-token", "0.02"]  # a loaded GPU: 250 ms to first token, 50 tokens/s


def start_sim(args: list[str]) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "deepseek_sim", "--port", "0", *args],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().rsplit(" ", 1)[-1].strip()


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    out = subprocess.run([str(ROOT / "scripts" / "redis"), "install"], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


class Asker:
    def __init__(self, url: str, cache: AnswerCache) -> None:
        self.cache = cache
        self.registry = ClientRegistry()
        self.health = HealthBook()
        self.url = url

    def ask(self, messages: list[dict], mode: str) -> tuple[float, float, bool]:
        """(time to first piece, time to the whole answer, replayed from the cache)."""
        creds = {"endpoint_urls": self.url, "api_key": "sk-bench-0001", "answer_cache": mode}
        c = Completion(creds, "deepseek-r1", messages, {"temperature": 0}, catalogue=True, cache=self.cache,
                       make_client=lambda s: ChatClient(s, registry=self.registry, health=self.health, prober=None))
        t0 = time.perf_counter()
        first = None
        last = None
        for piece in c.pieces():
            if first is None:
                first = time.perf_counter() - t0
            last = piece
        assert isinstance(last, Finished)
        return first, time.perf_counter() - t0, last.cached


def workflow(asker: Asker, questions: int, repeats: int, rng: random.Random) -> dict:
    trace = [i for i in range(questions) for _ in range(repeats)]
    rng.shuffle(trace)
    asker.ask([{"role": "user", "content": "warm-up"}], "on")  # /v1/models read: revision known
    time.sleep(0.3)
    hits, misses = [], []
    for i in trace:
        faq = f"[[echo]] FAQ {i}: how do I reset my password?"
        first, whole, cached = asker.ask([{"role": "user", "content": faq}], "on")
        (hits if cached else misses).append((first, whole))
        asker.cache.writer.drain()
    return {"requests": len(trace), "hits": len(hits), "misses": len(misses),
            "hit_first": med([h[0] for h in hits]), "hit_whole": med([h[1] for h in hits]),
            "miss_first": med([m[0] for m in misses]), "miss_whole": med([m[1] for m in misses])}


def chat(asker: Asker, conversations: int, turns: int) -> dict:
    out: dict[str, list[float]] = {"off": [], "on": []}
    for c in range(conversations):
        history: list[dict] = []
        for t in range(turns):
            history.append({"role": "user", "content": f"conversation {c} turn {t}: tell me more"})
            for mode in (("off", "on") if (c + t) % 2 == 0 else ("on", "off")):  # alternated
                _, whole, cached = asker.ask(list(history), mode)
                assert not cached
                out[mode].append(whole)
            history.append({"role": "assistant", "content": "Hello! How can I help you today?"})
    return {m: med(v) for m, v in out.items()} | {"requests": len(out["on"])}


def miss_cost(cache: AnswerCache, n: int) -> float:
    """Median microseconds of the cache's work on a miss: visit, lookup, queueing the write."""
    settings = parse_settings({"endpoint_urls": "http://gpu:8000/v1", "api_key": "sk-bench-0001", "answer_cache": "on"})
    entry = Entry("<think>\nhm\n</think>\n\nan answer of a few words", [], "stop", 20, 10)
    times = []
    for i in range(n):
        body = build_body("deepseek-r1", [{"role": "user", "content": f"question {i} {time.time_ns()}"}],
                          {"temperature": 0})
        t = time.perf_counter()
        visit = cache.visit(settings, body, "deepseek-r1", revision="r")
        if visit is not None:
            visit.lookup()
            visit.keep(entry)
        times.append(time.perf_counter() - t)
    cache.writer.drain()
    return med(times) * 1e6


def end_to_end_miss(url: str, cache: AnswerCache, n: int) -> dict:
    asker = Asker(url, cache)
    asker.ask([{"role": "user", "content": "warm-up"}], "on")
    time.sleep(0.3)
    out: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(n):
        for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
            _, whole, cached = asker.ask([{"role": "user", "content": f"unique {mode} {i} {time.time_ns()}"}], mode)
            out[mode].append(whole)
    cache.writer.drain()
    paired = [on - off for on, off in zip(out["on"], out["off"], strict=True)]
    rng = random.Random(7)  # a 95% bootstrap interval of the paired median
    boots = sorted(med(rng.choices(paired, k=len(paired))) for _ in range(2000))
    return {m: med(v) * 1000 for m, v in out.items()} | {
        "paired": med(paired) * 1000, "low": boots[50] * 1000, "high": boots[1949] * 1000}


def make_cache(url: str, timeout_ms: float = 50) -> AnswerCache:
    return AnswerCache(RedisStore(StoreConfig(url=url, timeout=timeout_ms / 1000)), secret=b"bench" * 8,
                       circuit=Circuit())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "cache-bench.md"))
    args = ap.parse_args()
    q = args.quick
    rng = random.Random(17)
    server = RedisServer(redis_binary()).start()
    paced, paced_url = start_sim(GPU)
    fast, fast_url = start_sim([])
    try:
        wf = workflow(Asker(paced_url, make_cache(server.url)), 5 if q else 20, 5, rng)
        ch = chat(Asker(paced_url, make_cache(server.url)), 2 if q else 6, 3 if q else 5)
        n = 200 if q else 2000
        cost = {"cache off": miss_cost(_off(), n)}
        cost["Redis up"] = miss_cost(make_cache(server.url), n)
        e2e = end_to_end_miss(fast_url, make_cache(server.url), 30 if q else 150)
        down = make_cache(f"redis://127.0.0.1:{_free_port()}/0")
        miss_cost(down, 10)  # the circuit opens
        cost["Redis down (circuit open)"] = miss_cost(down, n)
        with Mute() as mute:
            hanging = make_cache(mute.url)
            t = time.perf_counter()
            miss_cost(hanging, 5)  # 5 deadlines: the circuit opens
            opening = (time.perf_counter() - t) / 5 * 1000
            cost["Redis hanging (circuit open)"] = miss_cost(hanging, n)
    finally:
        for p in (paced, fast):
            p.terminate()
            p.wait(5)
        server.close()
    report = render(wf, ch, cost, e2e, opening, q)
    Path(args.out).write_text(report)
    print(report)
    return 0


def _off() -> AnswerCache:
    class Off(AnswerCache):
        def visit(self, settings, body, served, *, revision=None):  # the credential has it off
            return None
    return Off(None)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(wf: dict, ch: dict, cost: dict, e2e: dict, opening_ms: float, quick: bool) -> str:
    base = cost["cache off"]
    rows = "\n".join(f"| {k} | {v:.1f} µs | {v - base:+.1f} µs |" for k, v in cost.items())
    ratio = wf["hit_whole"] / wf["miss_whole"]
    how = "`bench/cache --quick` (a smoke run: indicative only)" if quick else "`bench/cache`"
    where = f"{platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    return f"""# Answer cache benchmark

Written by {how} on {where}. The machine
was shared with other work while it ran: ratios within one run are what to read. The simulator
runs in its own process; redis-server on loopback. See [cache.md](cache.md) for the design.

## Workflow trace: {wf['requests']} requests, hit rate {wf['hits'] / wf['requests']:.0%}

Deterministic FAQ-like questions repeated, against a simulator paced like a loaded GPU
({' '.join(GPU)}: seconds).

| | time to first piece (median) | whole answer (median) |
|---|---:|---:|
| miss (the GPU) | {wf['miss_first'] * 1000:.1f} ms | {wf['miss_whole'] * 1000:.1f} ms |
| hit (Redis) | {wf['hit_first'] * 1000:.2f} ms | {wf['hit_whole'] * 1000:.2f} ms |
| hit / miss | {wf['hit_first'] / wf['miss_first']:.4f}x | **{ratio:.4f}x** (target ≤ 0.1x) |

## Chat trace: {ch['requests']} requests each way, none repeated

| cache | whole answer (median) |
|---|---:|
| off | {ch['off'] * 1000:.1f} ms |
| on | {ch['on'] * 1000:.1f} ms |
| on − off | {(ch['on'] - ch['off']) * 1000:+.1f} ms |

## What the cache costs a miss

The cache's own work on a miss's path (the key, the lookup, queueing the write; the write itself
runs after the answer, in the background), median per request:

| Redis | cost | against off |
|---|---:|---:|
{rows}

Before the circuit opens, a hanging Redis costs a request up to its deadline (50 ms here): the
first 5 requests took {opening_ms:.1f} ms each on average (the background writes' timeouts count
towards the circuit too), then nothing.

A miss end to end on an unpaced simulator (alternated, median of each): cache off
{e2e['off']:.2f} ms, on {e2e['on']:.2f} ms; median of the paired differences (on − off)
{e2e['paired']:+.2f} ms (95% bootstrap interval {e2e['low']:+.2f} to {e2e['high']:+.2f} ms). This includes
the write that runs after each answer, in a background
thread that competes with the next request for the interpreter.
"""


if __name__ == "__main__":
    sys.exit(main())
