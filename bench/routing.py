"""Routing benchmark: this plugin's load-aware router vs round robin vs random.

Three simulated vLLM replicas, each in its own process on loopback: one fast, one three times
slower, one fast but with little batch capacity (it queues, and its /metrics says so). A fixed
number of concurrent users (closed loop) streams short R1 answers through the engine; only the
routing policy changes between runs (same retries, health checks and failover). Two more
scenarios kill the fast replica half way through: once with blocking callers, once streaming.

    bench/routing                  # ~3.5 minutes; writes docs/routing.md (+ docs/routing.png)
    bench/routing --quick          # a smoke run
    bench/routing --seconds 15     # shorter runs; the report states what was run

(``bench/routing`` is ``python -m bench.routing`` in the repo's .venv, with bench/requirements.txt.)
Measures time to first token (p50/p99), completed answers per second and errors seen by users.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from deepseek_engine import ChatClient, build_body, parse_settings
from deepseek_engine.errors import EngineError
from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.routing import Assess, PowerOfTwo, Router, RoutingPolicy
from deepseek_engine.routing.round_robin import RoundRobin
from deepseek_engine.transport import ClientRegistry

ROOT = Path(__file__).resolve().parents[1]
FLEET = {
    "fast": ["--ttft", "0.05", "--inter-token", "0.005", "--max-running", "8"],
    "slow (3x)": ["--ttft", "0.15", "--inter-token", "0.015", "--max-running", "8"],
    "near saturation": ["--ttft", "0.05", "--inter-token", "0.005", "--max-running", "2"],
}
WARMUP = 2.0  # seconds of load before measuring, the same for every policy


class RandomChoice(RoutingPolicy):
    """A uniformly random order: a baseline for this benchmark, not a policy operators select."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def rank(self, candidates: list, assess: Assess) -> list:
        c = list(candidates)
        self.rng.shuffle(c)
        return c


POLICIES = {"load-aware": PowerOfTwo, "round robin": RoundRobin, "random": RandomChoice}


def start_sim(args: list[str]) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-m", "deepseek_sim", "--port", "0", *args],
                         cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    return p, line.rsplit(" ", 1)[-1].strip()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def run(policy_cls, seconds: float, users: int, kill_after: float | None, buffered: bool) -> dict:
    sims = {name: start_sim(args) for name, args in FLEET.items()}
    try:
        urls = [url for _, url in sims.values()]
        settings = parse_settings({"endpoint_urls": ",".join(urls), "timeouts": "idle=5 first_token=10"})
        book = HealthBook()
        router = Router(book, policy_cls())
        prober = Prober(book, router, health_interval=1.0, metrics_interval=0.5)
        registry = ClientRegistry()
        make = lambda: ChatClient(settings, registry=registry, health=book, router=router, prober=prober)  # noqa: E731
        body = build_body("deepseek-r1", [{"role": "user", "content": "hi"}], {"max_tokens": 32})
        ttfts: list[float] = []
        errors: list[tuple[str, bool]] = []  # (error class, whether tokens had reached the user)
        done = 0
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        by_endpoint: dict[str, list[float]] = {u: [] for u in urls}

        def user() -> None:
            nonlocal done
            client = make()  # one per user: shares the pool, router and health book
            while time.monotonic() < stop_at:
                t = time.monotonic()
                measured = t >= t0 + WARMUP
                first = None
                try:
                    for d in client.stream(body, buffered=buffered):
                        if first is None and d.has_output:
                            first = time.monotonic() - t
                except EngineError as e:
                    with lock:
                        errors.append((type(e).__name__, first is not None))  # warm-up too
                    continue
                if not measured:
                    continue
                with lock:
                    done += 1
                    if first is not None:
                        ttfts.append(first)
                        by_endpoint[client.last_endpoint.url].append(first)

        time.sleep(1.0)  # first health/metrics round
        threads = [threading.Thread(target=user) for _ in range(users)]
        t0 = time.monotonic()
        stop_at = t0 + WARMUP + seconds
        for t in threads:
            t.start()
        if kill_after is not None:
            time.sleep(WARMUP + kill_after)
            sims["fast"][0].send_signal(signal.SIGKILL)
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0 - WARMUP
        prober.stop()
        names = dict(zip(urls, FLEET, strict=True))
        return {"p50": pct(ttfts, 0.5), "p99": pct(ttfts, 0.99), "rps": done / elapsed,
                "errors": len(errors), "mid_stream": sum(cut for _, cut in errors), "done": done,
                "split": {names[u]: (len(v), pct(v, 0.99)) for u, v in by_endpoint.items()}}
    finally:
        for p, _ in sims.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(5)


def decision_cost(n_endpoints: int = 8, rounds: int = 20000) -> tuple[float, float]:
    """Median and p99 microseconds of one routing decision (Router.order) over n endpoints,
    with every signal populated (EWMA, in-flight, fresh metrics and learnt capacities)."""
    from deepseek_engine.routing import ServerLoad
    from deepseek_engine.settings import parse_endpoints

    eps = parse_endpoints(",".join(f"http://gpu-{i}:8000/v1 weight={1 + i % 3}" for i in range(n_endpoints)))
    router = Router(HealthBook(), PowerOfTwo(random.Random(3)))
    for i, e in enumerate(eps):
        router.observe_ttft(e.url, 0.05 * (1 + i % 4))
        router.observe_load(e.url, ServerLoad(running=i % 5 + 1, waiting=i % 3, kv=0.5, at=time.monotonic() + 3600))
        for _ in range(i % 4):
            router.started(e.url)
    samples = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        router.order(eps)
        samples.append((time.perf_counter_ns() - t) / 1000)
    return statistics.median(samples), pct(samples, 0.99)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "routing.md"))
    a = ap.parse_args()
    seconds = 4.0 if a.quick else a.seconds
    random.seed(1)
    rows = []
    for scenario, kill, buffered in (("mixed fleet", None, False),
                                     (KILLED_BLOCKING, seconds / 2, True),
                                     (KILLED_STREAMING, seconds / 2, False)):
        for name, cls in POLICIES.items():
            r = run(cls, seconds, a.users, kill, buffered)
            rows.append((scenario, name, r))
            print(f"{scenario:48} {name:18} TTFT p50 {r['p50']*1000:7.1f} ms  p99 {r['p99']*1000:7.1f} ms  "
                  f"{r['rps']:6.2f} answers/s  errors {r['errors']} ({r['mid_stream']} mid-stream)  "
                  + "  ".join(f"{k}: {n} (p99 {q*1000:.0f} ms)" for k, (n, q) in r["split"].items()), flush=True)
    cost = decision_cost()
    print(f"routing decision over 8 endpoints: {cost[0]:.1f} µs median, {cost[1]:.1f} µs p99")
    write_report(rows, a, seconds, cost)
    return 0


KILLED_BLOCKING = "fast replica killed half way (blocking calls)"
KILLED_STREAMING = "fast replica killed half way (streaming)"

NOTES = """Notes:
- The router learns each replica's capacity from its /metrics (running requests / KV-cache use) and
  counts what this process sent since the last scrape, so it stops sending to a replica one request
  before that replica would queue, while another has room.
- When the fast replica is killed, no caller should see an error: a blocking call (as workflow and
  agent calls are) cut off by the dying replica is retried on another one (its "TTFT" column is the
  time to the whole answer); a *streaming* answer whose tokens were already flowing is continued on
  another replica from the last token shown (`continue_final_message`), so the user sees a pause,
  not an error; requests that had not received a token yet are retried elsewhere. The error column
  counts what still reached users, and in brackets how many of those cut a stream after its tokens
  were shown.
- Times are on a loaded {cores}-core machine with the simulators and the load generator sharing it;
  compare rows within one run, not across machines."""


def command() -> str:
    """How this run was started, as the documented wrapper (bench/routing = python -m bench.routing)."""
    return " ".join(["bench/routing", *map(shlex.quote, sys.argv[1:])])


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "?"
    except OSError:
        return "?"


AFFINITY_BEGIN = "<!-- bench/routing_affinity: begin"  # its section and the prose after it stay


def write_report(rows, a, seconds, cost) -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    lines = ["# Routing benchmark", "",
             f"Machine: {os.cpu_count()} cores ({cpu}), loopback only. Code: {_commit()}. Command: `{command()}` "
             f"({a.users} concurrent users, {seconds:g} s measured per run; in the dying-replica runs "
             f"the fast replica is killed {seconds / 2:g} s into the measurement).", "",
             "Fleet: three simulated vLLM replicas in their own processes: **fast** (TTFT 50 ms, 5 ms/token, "
             "8 concurrent), **slow** (3x: 150 ms, 15 ms/token, 8 concurrent), **near saturation** (fast but "
             "only 2 concurrent: the rest queue, and its /metrics reports the queue and a full KV cache). "
             "Same engine, retries and health checks in every run; only the routing policy differs. "
             f"Each run loads the fleet for {WARMUP:g} s before measuring (the router learns speeds and "
             "capacities; round robin and random get the same warm-up).", "",
             "| scenario | policy | TTFT p50 (ms) | TTFT p99 (ms) | answers/s "
             "| user-visible errors (cut after tokens were shown) |",
             "|---|---|---:|---:|---:|---:|"]
    for scenario, name, r in rows:
        lines.append(f"| {scenario} | {name} | {r['p50']*1000:.1f} | {r['p99']*1000:.1f} | {r['rps']:.2f} "
                     f"| {r['errors']} ({r['mid_stream']}) |")
    base = {n: r for s, n, r in rows if s == "mixed fleet"}
    ours, rr = base["load-aware"], base["round robin"]
    lines += ["", f"On the mixed fleet the load-aware router's p99 TTFT is **{ours['p99']/rr['p99']:.2f}x** round "
              f"robin's (target ≤ 0.5x) and its throughput **{ours['rps']/rr['rps']:.2f}x** (target ≥ 1.25x).", "",
              "Where the answers went (mixed fleet; count, TTFT p99):", ""]
    for name, r in base.items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {n} ({q*1000:.0f} ms)" for k, (n, q) in r["split"].items()))
    lines += ["", f"One routing decision (`Router.order` over 8 endpoints, every signal populated) costs "
              f"{cost[0]:.1f} µs median, {cost[1]:.1f} µs p99, in this process.", "",
              NOTES.format(cores=os.cpu_count()), ""]
    out = Path(a.out)
    kept = out.read_text() if out.exists() else ""
    tail = kept[kept.index(AFFINITY_BEGIN):] if AFFINITY_BEGIN in kept else ""  # bench/routing_affinity's
    out.write_text("\n".join(lines) + "\n" + (("\n" + tail) if tail else ""))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        names = list(POLICIES)
        axes[0].bar(names, [base[n]["p99"] * 1000 for n in names])
        axes[0].set_title("mixed fleet: TTFT p99 (ms, lower is better)")
        axes[1].bar(names, [base[n]["rps"] for n in names])
        axes[1].set_title("answers per second (higher is better)")
        for ax in axes:
            ax.tick_params(axis="x", labelsize=8)
        fig.tight_layout()
        fig.savefig(Path(a.out).with_suffix(".png"), dpi=100)
        out.write_text("\n".join(lines) + f"\n\n![routing]({out.with_suffix('.png').name})\n"
                       + (("\n" + tail) if tail else ""))
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
