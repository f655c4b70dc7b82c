"""Prefix-affinity benchmark: where each conversation's next turn lands, against prefix-caching replicas.

Simulated vLLM replicas (each in its own process, ``deepseek_sim --prefix-caching``) reuse the KV
cache of a prompt's prefix and charge serialised prefill time per uncached token; closed-loop
users hold multi-turn conversations (several apps, each with a long shared system prompt; think
time between turns) through the engine. Only the routing policy changes between runs; policies
alternate run by run (ABAB) over several seeds; each seed's workload is the same for every policy.

    bench/routing_affinity             # a few minutes; writes the affinity section of docs/routing.md
    bench/routing_affinity --quick     # a smoke run

Scenarios: KV pressure (the working set about twice one replica's cache, under the fleet's), ample
cache, no prefix reuse, one app carrying most of the traffic, a replica killed mid-run (KV
pressure), and a small mixed fleet where the fastest replica has room (no caching: the small-fleet
fix of the load-aware policy). Also the cost of one routing decision with affinity over 8
endpoints at a 32k-token prompt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.routing import FLEET as MIXED_FLEET
from bench.routing import command, pct
from deepseek_engine import ChatClient, build_body, parse_settings
from deepseek_engine.errors import EngineError
from deepseek_engine.health import HealthBook
from deepseek_engine.probe import Prober
from deepseek_engine.routing import Affinity, Assess, PowerOfTwo, Prefix, Router, RoutingPolicy
from deepseek_engine.routing.round_robin import RoundRobin
from deepseek_engine.settings import Endpoint, parse_endpoints
from deepseek_engine.transport import ClientRegistry

ROOT = Path(__file__).resolve().parents[1]
MODEL = "deepseek-r1"
BLOCK = 16
# Each replica: 20 ms fixed time to first token, 4 ms a token, prefill 40 µs per uncached prompt
# token serialised per replica (a 4k-token miss: 160 ms of that replica's prefill).
REPLICA = ["--shape", "plain", "--ttft", "0.02", "--inter-token", "0.004", "--max-running", "16",
           "--prefix-caching", "--block-size", str(BLOCK), "--prefill-per-token", "0.00004",
           "--max-model-len", "65536"]
PRESSURE_BLOCKS = 1000  # 16k tokens a replica: the working set (~38k) over twice one, under three
AMPLE_BLOCKS = 40000
SYSTEM_WORDS = 2000  # each app's system prompt, tokens
USER_WORDS = 400  # each user turn (a pasted passage, a detailed question)
TURNS = 6
APPS = 4
THINK = 0.4  # seconds between turns
SMALL_WARMUP = 1.0  # seconds of load before the small fleet is measured (as bench/routing's warm-up)
USERS = 12


class Sticky(RoutingPolicy):
    """Sticky by conversation (a baseline, not offered to operators): rendezvous hashing of the
    conversation's first user message over the healthy candidates, ignoring load."""

    def rank(self, candidates: list[Endpoint], assess: Assess) -> list[Endpoint]:
        prefix = getattr(assess, "prefix", None)
        msgs = prefix.body.get("messages", []) if prefix is not None else []
        key = next((m.get("content") for m in msgs if m.get("role") == "user"), "")
        return sorted(candidates, key=lambda e: hashlib.blake2b(f"{key}|{e.url}".encode(), digest_size=8).digest())


POLICIES = {
    "round robin": RoundRobin,
    "load-aware": PowerOfTwo,
    "P2C (draw of two, before)": lambda: PowerOfTwo(full_scan_max=0),  # the load-aware policy the issue measured
    "sticky": Sticky,
    "affinity 0.5": lambda: Affinity(weight=0.5),
    "affinity 0.75": lambda: Affinity(weight=0.75),
}
SMALL_POLICIES = {
    "round robin": RoundRobin,
    "P2C (draw of two, before)": lambda: PowerOfTwo(full_scan_max=0),
    "load-aware (best of all)": PowerOfTwo,
}


@dataclass
class Scenario:
    name: str
    blocks: int = PRESSURE_BLOCKS
    hot: float | None = None  # share of users on app 0
    reuse: bool = True
    kill: bool = False


SCENARIOS = [Scenario("KV pressure"), Scenario("ample cache", blocks=AMPLE_BLOCKS),
             Scenario("no prefix reuse", reuse=False), Scenario("one hot app (70% of users)", hot=0.7),
             Scenario("replica killed mid-run", kill=True)]


@dataclass
class Result:
    ttft: dict[int, list[float]] = field(default_factory=dict)  # turn → seconds
    whole: list[float] = field(default_factory=list)
    answers: int = 0
    errors: int = 0
    seconds: float = 0.0
    queries: float = 0.0
    hits: float = 0.0
    share: dict[str, int] = field(default_factory=dict)

    def all_ttft(self, since: int = 1) -> list[float]:
        """TTFTs from turn ``since`` on; all of them for single-turn runs (no prefix reuse)."""
        got = [x for t, xs in self.ttft.items() if t >= since for x in xs]
        return got or [x for xs in self.ttft.values() for x in xs]


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(100000)}" for _ in range(n))


def scrape(url: str) -> tuple[float, float]:
    try:
        text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0, 0.0
    got = dict(re.findall(r"^vllm:prefix_cache_(queries|hits)_total\{[^}]*\} (\S+)", text, re.MULTILINE))
    return float(got.get("queries", 0)), float(got.get("hits", 0))


def start_sims(args_list: list[list[str]]) -> list[tuple[subprocess.Popen, str]]:
    """Simulators in their own processes, started together (each takes seconds to import here)."""
    procs = [subprocess.Popen([sys.executable, "-m", "deepseek_sim", "--port", "0", *args], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for args in args_list]
    return [(p, p.stdout.readline().rsplit(" ", 1)[-1].strip()) for p in procs]


def engine(urls: list[str], policy: RoutingPolicy):
    """``(new client, stop)``: the engine as the plugin runs it (a prober, health, one pool), every
    credential's requests ordered by ``policy``; one client per user, all sharing it."""
    settings = parse_settings({"endpoint_urls": ",".join(urls), "timeouts": "idle=10 first_token=20"})
    book = HealthBook()
    router = Router(book, policy)
    prober = Prober(book, router, health_interval=1.0, metrics_interval=0.5)
    registry = ClientRegistry()

    def stop() -> None:
        prober.stop()  # the pool is left to the collector: a last scrape may still be reading

    return (lambda: ChatClient(settings, registry=registry, health=book, router=router, prober=prober)), stop


def run(scn: Scenario, policy: RoutingPolicy, sims: list, seed: int, seconds: float, users: int,
        nonce: int) -> Result:
    """One run; ``nonce`` makes its prompts its own (the replicas live on between runs, and what an
    earlier run left in their caches is never reused, only evicted first)."""
    urls = [u for _, u in sims]
    client, stop = engine(urls, policy)
    res = Result(share={f"replica {i + 1}": 0 for i in range(len(urls))})
    names = {u: f"replica {i + 1}" for i, u in enumerate(urls)}
    before = [scrape(u) for u in urls]
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + seconds
    apps = [f"run{nonce} " + words(random.Random(f"{seed}-app-{a}"), SYSTEM_WORDS) for a in range(APPS)]

    def user(uid: int) -> None:
        rng = random.Random(f"{seed}-user-{uid}")
        chat = client()
        time.sleep(rng.uniform(0, THINK))  # users do not start in lockstep
        while time.monotonic() < stop_at:
            hot = scn.hot is not None and rng.random() < scn.hot
            app = 0 if hot else rng.randrange(APPS)
            system = apps[app] if scn.reuse else f"run{nonce} " + words(rng, SYSTEM_WORDS)
            history = [{"role": "system", "content": system}]
            for turn in range(1, (TURNS if scn.reuse else 1) + 1):
                if time.monotonic() >= stop_at:
                    return
                history.append({"role": "user", "content": words(rng, USER_WORDS)})
                body = build_body(MODEL, history, {"max_tokens": 16})
                t = time.monotonic()
                first, text = None, []
                try:
                    for d in chat.stream(body):
                        if first is None and d.has_output:
                            first = time.monotonic() - t
                        text.append(d.content)
                except EngineError:
                    with lock:
                        res.errors += 1
                    break
                took = time.monotonic() - t
                with lock:
                    res.answers += 1
                    res.whole.append(took)
                    res.ttft.setdefault(turn, []).append(first if first is not None else took)
                    res.share[names[chat.last_endpoint.url]] += 1
                history.append({"role": "assistant", "content": "".join(text)})
                time.sleep(rng.expovariate(1 / THINK))

    threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    if scn.kill:
        time.sleep(seconds / 2)
        sims[0][0].send_signal(signal.SIGKILL)
    for t in threads:
        t.join()
    res.seconds = time.monotonic() - start
    stop()
    after = [scrape(u) for u in urls]
    for (q0, h0), (q1, h1) in zip(before, after, strict=True):
        if q1 >= q0:  # a killed replica answers nothing
            res.queries += q1 - q0
            res.hits += h1 - h0
    return res


def run_small(policy: RoutingPolicy, sims: list, seed: int, seconds: float) -> Result:
    """The mixed fleet (fast, slow, near saturation), 6 users with short think times: the fast
    replica has room most of the time. Time to the whole answer, after a warm-up."""
    urls = [u for _, u in sims]
    client, stop = engine(urls, policy)
    names = dict(zip(urls, MIXED_FLEET, strict=True))
    res = Result(share=dict.fromkeys(MIXED_FLEET, 0))
    lock = threading.Lock()
    measure_from = time.monotonic() + SMALL_WARMUP  # each replica tried once first: not measured
    stop_at = measure_from + seconds
    body = build_body(MODEL, [{"role": "user", "content": "hi"}], {"max_tokens": 32})

    def user(uid: int) -> None:
        rng = random.Random(f"{seed}-small-{uid}")
        chat = client()
        while time.monotonic() < stop_at:
            t = time.monotonic()
            try:
                list(chat.stream(body))
            except EngineError:
                with lock:
                    res.errors += 1
                continue
            if t < measure_from:
                continue
            with lock:
                res.answers += 1
                res.whole.append(time.monotonic() - t)
                res.share[names[chat.last_endpoint.url]] += 1
            time.sleep(rng.expovariate(1 / 0.1))

    threads = [threading.Thread(target=user, args=(u,)) for u in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res.seconds = time.monotonic() - measure_from
    stop()
    return res


def merge(results: list[Result]) -> Result:
    out = Result()
    for r in results:
        for t, xs in r.ttft.items():
            out.ttft.setdefault(t, []).extend(xs)
        out.whole += r.whole
        out.answers += r.answers
        out.errors += r.errors
        out.seconds += r.seconds
        out.queries += r.queries
        out.hits += r.hits
        for k, v in r.share.items():
            out.share[k] = out.share.get(k, 0) + v
    return out


def ratio_ci(a: list[float], b: list[float], q: float, rng: random.Random, n: int = 300) -> tuple[float, float, float]:
    """pct(a, q) / pct(b, q) and a bootstrap 90% interval."""
    if not a or not b:
        return float("nan"), float("nan"), float("nan")
    point = pct(a, q) / pct(b, q)
    boots = sorted(pct(rng.choices(a, k=len(a)), q) / pct(rng.choices(b, k=len(b)), q) for _ in range(n))
    return point, boots[int(0.05 * n)], boots[int(0.95 * n)]


def decision_cost(prompt_tokens: int = 32_000, n_endpoints: int = 8, rounds: int = 2000) -> dict[str, float]:
    """Microseconds (median) to hash a 32k-token conversation's prefix, and for one routing
    decision with affinity over 8 endpoints whose indexes all hold parts of it."""
    rng = random.Random(3)
    msgs = [{"role": "system", "content": words(rng, 4000)}]
    while sum(len(m["content"]) for m in msgs) // 4 < prompt_tokens:
        msgs.append({"role": "user" if len(msgs) % 2 else "assistant", "content": words(rng, 300)})
    body = build_body(MODEL, msgs, {"max_tokens": 16})
    eps = parse_endpoints(",".join(f"http://gpu-{i}:8000/v1" for i in range(n_endpoints)))
    router = Router(HealthBook(), Affinity())
    for i, e in enumerate(eps):
        router.observe_ttft(e.url, 0.05 * (1 + i % 4))
        part = Prefix(build_body(MODEL, msgs[:1 + (len(msgs) - 1) * i // n_endpoints], {}), "scope")
        router.prefixes.record(e.url, *part.chain)
    hashing, deciding, both = [], [], []
    wire = json.dumps(body)
    for _ in range(rounds):
        fresh = json.loads(wire)  # new strings, as each request's are: no hash cached on them
        t = time.perf_counter_ns()
        p = Prefix(fresh, "scope")
        p.chain  # noqa: B018 - the hashing being timed
        t1 = time.perf_counter_ns()
        router.order(eps, "scope", None, p)
        t2 = time.perf_counter_ns()
        hashing.append((t1 - t) / 1000)
        deciding.append((t2 - t1) / 1000)
        both.append((t2 - t) / 1000)
    return {"hash": statistics.median(hashing), "decide": statistics.median(deciding),
            "decide_p99": pct(deciding, 0.99), "both": statistics.median(both), "links": len(p.chain[0]),
            "tokens": p.tokens}


def stop_all(sims: list) -> None:
    for p, _ in sims:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(5)


def ms(x: float) -> str:
    return f"{x * 1000:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 s runs, one seed, two scenarios")
    ap.add_argument("--seconds", type=float, default=6.0, help="per run")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--users", type=int, default=USERS)
    ap.add_argument("--scenarios", default="", help="comma-separated scenario numbers (1-5), default all")
    ap.add_argument("--out", default=str(ROOT / "docs" / "routing.md"))
    a = ap.parse_args()
    seconds = 3.0 if a.quick else a.seconds
    seeds = list(range(1 if a.quick else a.seeds))
    scenarios = [SCENARIOS[int(i) - 1] for i in a.scenarios.split(",")] if a.scenarios else SCENARIOS
    scenarios = scenarios[:1] if a.quick else scenarios
    began = time.monotonic()
    table: list[tuple[str, str, Result]] = []
    nonce = 0
    for scn in scenarios:
        per: dict[str, list[Result]] = {n: [] for n in POLICIES}
        replica = [*REPLICA, "--kv-blocks", str(scn.blocks)]
        sims = start_sims([replica] * 3)
        try:
            for seed in seeds:
                order = list(POLICIES) if seed % 2 == 0 else list(reversed(POLICIES))  # ABAB
                for name in order:
                    nonce += 1
                    r = run(scn, POLICIES[name](), sims, seed, seconds, a.users, nonce)
                    if scn.kill:  # the killed replica comes back, empty, for the next run
                        sims[0] = start_sims([replica])[0]
                    per[name].append(r)
                    print(f"{scn.name:28} seed {seed} {name:14} TTFT p50 turn>=2 {ms(pct(r.all_ttft(2), .5)):>5} ms "
                          f"p99 {ms(pct(r.all_ttft(), .99)):>5} ms  {r.answers / r.seconds:5.2f} answers/s  "
                          f"hit {r.hits / r.queries if r.queries else 0:4.0%}  errors {r.errors}", flush=True)
        finally:
            stop_all(sims)
        for name in POLICIES:
            table.append((scn.name, name, merge(per[name])))
    small: list[tuple[str, Result]] = []
    if not a.quick:
        per_small: dict[str, list[Result]] = {n: [] for n in SMALL_POLICIES}
        for seed in seeds:
            order = list(SMALL_POLICIES) if seed % 2 == 0 else list(reversed(SMALL_POLICIES))
            for name in order:
                sims = start_sims(list(MIXED_FLEET.values()))  # fresh: the router learns from scratch
                try:
                    r = run_small(SMALL_POLICIES[name](), sims, seed, seconds)
                finally:
                    stop_all(sims)
                per_small[name].append(r)
                print(f"{'small fleet, fast has room':28} seed {seed} {name:26} whole answer p50 "
                      f"{ms(pct(r.whole, .5))} ms p99 {ms(pct(r.whole, .99))} ms", flush=True)
        small = [(n, merge(per_small[n])) for n in SMALL_POLICIES]
    cost = decision_cost()
    print(f"32k-token prompt over 8 endpoints: hashing {cost['hash']:.0f} µs, decision {cost['decide']:.0f} µs "
          f"(p99 {cost['decide_p99']:.0f}), both {cost['both']:.0f} µs", flush=True)
    write_report(table, small, cost, a, seconds, seeds, time.monotonic() - began)
    return 0


BEGIN = "<!-- bench/routing_affinity: begin (generated; the text after the end marker is kept) -->"
END = "<!-- bench/routing_affinity: end -->"


def write_report(table, small, cost, a, seconds, seeds, took) -> None:
    rng = random.Random(7)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    load = os.getloadavg()[0]
    cmd = command().replace("bench/routing", "bench/routing_affinity", 1)
    L = [BEGIN, "", "## Prefix-cache affinity benchmark", "",
         f"Machine: {os.cpu_count()} cores ({cpu}), load average {load:.1f} at the end (shared with other "
         f"work: compare rows within this run only). Command: `{cmd}`: "
         f"{a.users} closed-loop users, {seconds:g} s per run, seeds {seeds} with the policies' order "
         f"reversed every other seed (ABAB), {took / 60:.1f} minutes in all.", "",
         f"Fleet: three simulated vLLM replicas with automatic prefix caching (blocks of {BLOCK} tokens; "
         f"TTFT = queueing + 20 ms + 40 µs per uncached prompt token, prefill serialised per replica; "
         f"4 ms a token). KV pressure: {PRESSURE_BLOCKS * BLOCK // 1000}k tokens a replica, about half the working "
         f"set; ample: {AMPLE_BLOCKS * BLOCK // 1000}k. Workload: {APPS} apps with {SYSTEM_WORDS}-token system "
         f"prompts, conversations of {TURNS} turns adding {USER_WORDS}-token questions, think time "
         f"{THINK:g} s (exponential); no reuse: single turns with unique system prompts.", "",
         "| scenario | policy | TTFT p50 (ms) | p50 turn ≥ 2 | p99 | p99 turn ≥ 2 | answers/s | sim hit rate "
         "| prefill tokens/answer | errors | share per replica |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for scn, name, r in table:
        hit = r.hits / r.queries if r.queries else 0.0
        prefill = (r.queries - r.hits) / r.answers if r.answers else 0.0
        total = sum(r.share.values()) or 1
        L.append(f"| {scn} | {name} | {ms(pct(r.all_ttft(), .5))} | {ms(pct(r.all_ttft(2), .5))} "
                 f"| {ms(pct(r.all_ttft(), .99))} | {ms(pct(r.all_ttft(2), .99))} | {r.answers / r.seconds:.2f} "
                 f"| {hit:.0%} | {prefill:.0f} | {r.errors} | "
                 + " / ".join(f"{v / total:.0%}" for v in r.share.values()) + " |")
    turns = " | ".join(f"turn {t}" for t in range(1, TURNS + 1))
    L += ["", "TTFT p50 by turn (ms):", "", f"| scenario | policy | {turns} |", "|---|---|" + "---:|" * TURNS]
    for scn, name, r in table:
        if len(r.ttft) > 1:
            L.append(f"| {scn} | {name} | " + " | ".join(ms(pct(r.ttft.get(t, []), .5)) for t in range(1, TURNS + 1))
                     + " |")
    by = {(s, n): r for s, n, r in table}
    baselines = {"load-aware": "today's load-aware policy (best of all)",
                 "P2C (draw of two, before)": "the load-aware policy before issue 15 (a draw of two)"}
    for base_name, title in baselines.items():
        L += ["", f"Ratios against {title} (90% bootstrap interval over requests):", ""]
        for scn in dict.fromkeys(s for s, _, _ in table):
            base = by.get((scn, base_name))
            for name in ("affinity 0.5", "affinity 0.75", "sticky", "round robin", *baselines):
                r = by.get((scn, name))
                if base is None or r is None or name == base_name:
                    continue
                p50 = ratio_ci(r.all_ttft(2), base.all_ttft(2), .5, rng)
                p99 = ratio_ci(r.all_ttft(), base.all_ttft(), .99, rng)
                L.append(f"- {scn}, {name}: TTFT p50 from turn 2 **{p50[0]:.2f}x** [{p50[1]:.2f}, {p50[2]:.2f}], "
                         f"p99 **{p99[0]:.2f}x** [{p99[1]:.2f}, {p99[2]:.2f}], answers/s "
                         f"**{(r.answers / r.seconds) / (base.answers / base.seconds):.2f}x**, errors {r.errors}")
    if small:
        rr = dict(small)["round robin"]
        L += ["", "Small mixed fleet (fast / slow 3x / near saturation, no caching, 6 users, think 0.1 s), "
              "time to the whole answer:", "",
              "| policy | p50 (ms) | p99 (ms) | p99 vs round robin | answers/s | share fast / slow / near saturation |",
              "|---|---:|---:|---:|---:|---|"]
        for name, r in small:
            total = sum(r.share.values()) or 1
            p99 = ratio_ci(r.whole, rr.whole, .99, rng)
            L.append(f"| {name} | {ms(pct(r.whole, .5))} | {ms(pct(r.whole, .99))} | {p99[0]:.2f}x "
                     f"[{p99[1]:.2f}, {p99[2]:.2f}] | {r.answers / r.seconds:.2f} | "
                     + " / ".join(f"{v / total:.0%}" for v in r.share.values()) + " |")
    L += ["", f"Routing cost at a {cost['tokens'] // 1000}k-token prompt ({cost['links']} links), 8 endpoints each "
          f"holding part of it, median: hashing the prompt {cost['hash']:.0f} µs (once per request, reused to "
          f"record it), the decision with affinity {cost['decide']:.0f} µs (p99 {cost['decide_p99']:.0f} µs), "
          f"both {cost['both']:.0f} µs.", "", END]
    out = Path(a.out)
    text = out.read_text() if out.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + "\n".join(L) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(L) + "\n"
    out.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
