"""Performance benchmark (issue 8): this plugin against bare httpx, the SDK's OpenAI-compatible
class and the Dify runtime's own floor. Writes docs/performance.md, docs/performance.png and
bench/results/performance.json (the raw samples).

    bench/run            # full run, about 3 minutes on 2 cores (4 with --profile)
    bench/run --quick    # smoke run, under a minute; writes bench/results/quick/ (not the docs)
    bench/run --only inproc,stdio     # some sections (inproc stdio concurrency h2 cold): report
                                      # and samples in bench/results/partial/, not the docs
    bench/run --profile  # also write profiles (pyinstrument, py-spy) to bench/results/profiles/
    bench/run --render bench/results/performance.json   # rewrite the report only (no measuring)
    BENCH_PLUGIN_ROOT=/path/to/other/checkout bench/run  # measure another tree as "this plugin"

Every server runs in a process of its own on loopback, so its CPU is not counted as the client's:
the project's simulator (``bench/perf/simproc.py`` wraps ``deepseek_sim.Simulator`` and reports
its connection counters) and, for HTTP/2, hypercorn (``bench/perf/h2server.py``). Each in-process
contender runs in its own process too (``bench/perf/worker.py``): importing dify_plugin patches a
process with gevent, which must not leak into the others. Contenders alternate within each round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.perf import report, stdio

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
RESULTS = ROOT / "bench" / "results"
SECTIONS = ("inproc", "stdio", "concurrency", "h2", "cold")


# ---------------------------------------------------------------------------------------------
# servers in their own processes
# ---------------------------------------------------------------------------------------------
class SimProc:
    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen([PY, "-m", "bench.perf.simproc", *args], cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line.split()[1]

    def _ask(self, cmd: str) -> str:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def stats(self) -> dict:
        return json.loads(self._ask("stats"))

    def set(self, field: str, value: object) -> None:
        if self._ask(f"set {field} {value}") != "ok":
            raise RuntimeError(f"simulator refused set {field}")

    def close(self) -> None:
        try:
            self._ask("quit")
        except (BrokenPipeError, OSError):
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def worker(contender: str, url: str, **kw) -> dict:
    args = [PY, "-m", "bench.perf.worker", contender, url]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"worker {contender} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------
IN_CONTENDERS = ("httpx", "engine", "httpx-gevent", "dify", "sdk")


def section_inproc(cfg: dict) -> dict:
    """1 + 2: added TTFT / per-request time and CPU per streamed event, in-process."""
    sim = SimProc()
    out: dict = {c: {"rounds": []} for c in IN_CONTENDERS}
    try:
        for rnd in range(cfg["rounds"]):
            for c in IN_CONTENDERS:
                log(f"in-process round {rnd + 1}/{cfg['rounds']}: {c}")
                out[c]["rounds"].append(worker(c, sim.url, n=cfg["short_n"], warmup=cfg["warmup"],
                                               streams=cfg["streams"], tokens=cfg["tokens"]))
        out["_connections"] = sim.stats()
    finally:
        sim.close()
    return out


STDIO_KINDS = ("floor", "bare", "plugin", "sdk")


def section_stdio(cfg: dict) -> dict:
    """3: the plugin process over the daemon's stdio protocol."""
    sim = SimProc()
    out: dict = {k: {"rounds": []} for k in STDIO_KINDS}
    try:
        for rnd in range(cfg["rounds_stdio"]):
            for kind in STDIO_KINDS:
                log(f"stdio round {rnd + 1}/{cfg['rounds_stdio']}: {kind}")
                t = stdio.Target(kind, sim.url)
                p = stdio.start(kind)
                try:
                    r = stdio.short_requests(p, t, cfg["short_n"], cfg["warmup"])
                    r.update(stdio.long_streams(p, t, cfg["streams"], 1, cfg["tokens"]))
                    r["ready_after"] = p.ready_after
                finally:
                    p.close()
                out[kind]["rounds"].append(r)
    finally:
        sim.close()
    return out


def _wave(p, t, sim: SimProc, n: int, mode: str, cfg: dict, ttft: float, itl: float) -> dict:
    """One run of ``n`` concurrent streams (``mode``: steady or burst) and what it cost."""
    tokens = cfg["conc_tokens"]
    s0 = sim.stats()
    c0, sim_cpu0 = s0["connections_opened"], s0["cpu"]
    cpu0, own0, rss0 = stdio.plugin_cpu_ns(p.pid), time.process_time(), stdio.rss_mib(p.pid)
    if mode == "steady":
        w = stdio.concurrent_steady(p, t, n, tokens, ttft, itl, cfg["conc_duration"])
    else:
        w = stdio.concurrent_wave(p, t, n, tokens, ttft, itl)
    s = sim.stats()
    cpu = (stdio.plugin_cpu_ns(p.pid) - cpu0) / 1e9
    return {**asdict(w), "errors": w.errors[:5], "error_count": len(w.errors),
            "connections_opened": s["connections_opened"] - c0, "open_after": s["open_connections"],
            "plugin_cpu": cpu, "cpu_per_token": cpu / max(w.streams_done * tokens, 1),
            "rss_before": rss0, "rss_after": stdio.rss_mib(p.pid),
            "sim_cpu": s["cpu"] - sim_cpu0, "harness_cpu": time.process_time() - own0}


def section_concurrency(cfg: dict) -> dict:
    """4: N concurrent streams in one plugin process, paced like DeepSeek-R1 on a GPU; this
    plugin and the runtime floor alternate at each level and arrival mode, each process pinned
    to core 0 and the simulator and the harness to the others where the machine allows."""
    ttft, itl = 0.1, 0.03
    sim = SimProc("--ttft", str(ttft), "--inter-token", str(itl))
    cores = sorted(os.sched_getaffinity(0))
    here = set(cores[1:]) or set(cores)
    pinned = cfg["pin"] and len(cores) >= 2 and stdio.pin(sim.p.pid, here) and stdio.pin(os.getpid(), here)
    out: dict = {"server_ttft": ttft, "server_itl": itl, "tokens": cfg["conc_tokens"], "levels": {},
                 "duration": cfg["conc_duration"], "pinned": pinned, "cores": cores}

    def started(kind: str):
        p = stdio.start(kind)
        if pinned:
            stdio.pin(p.pid, {cores[0]})
        t = stdio.Target(kind, sim.url, pace=(ttft, itl) if kind == "floor" else None)
        stdio.invoke(p, t, 3)  # the first connection, and discovery, out of the way
        return p, t

    try:
        # the floor (the toy plugin pacing its own chunks with gevent.sleep, no HTTP) at every
        # level and mode, alternating with this plugin: what the runtime and the harness alone
        # add at that concurrency on this machine, the baseline the plugin is read against
        both = {k: started(k) for k in ("floor", "plugin")}
        try:
            for n in cfg["levels"]:
                for mode in ("steady", "burst"):
                    for kind, (p, t) in both.items():
                        log(f"concurrency: {kind}, {n} streams, {mode}")
                        out["levels"].setdefault(kind, {}).setdefault(str(n), {})[mode] = _wave(
                            p, t, sim, n, mode, cfg, ttft, itl)
            # the pool now holds the burst's idle keep-alive connections: what does a single
            # short request cost now?
            p, t = both["plugin"]
            sim.set("ttft", 0.0)
            sim.set("inter_token", 0.0)
            log("concurrency: short requests after the burst")
            out["after_burst"] = stdio.short_requests(p, t, cfg["after_n"], 5)
            out["after_burst"]["idle_connections"] = sim.stats()["open_connections"]
            out["after_burst"]["rss"] = stdio.rss_mib(p.pid)
            sim.set("ttft", ttft)
            sim.set("inter_token", itl)
        finally:
            for p, _ in both.values():
                p.close()
        for kind in cfg["conc_refs"]:  # the bare httpx plugin and the SDK peer, at one level
            p, t = started(kind)
            try:
                n = cfg["ref_level"]
                log(f"concurrency: {kind}, {n} streams, steady")
                out["levels"].setdefault(kind, {})[str(n)] = {"steady": _wave(p, t, sim, n, "steady", cfg,
                                                                               ttft, itl)}
            finally:
                p.close()
    finally:
        sim.close()
        if pinned:
            stdio.pin(os.getpid(), set(cores))
    return out


def section_h2(cfg: dict) -> dict:
    """5: the same httpx client code over HTTP/1.1 and HTTP/2 to one hypercorn server."""
    try:
        import h2  # noqa: F401
        import hypercorn  # noqa: F401
    except ImportError as e:
        return {"skipped": f"{e.name} is not installed (pip install h2 hypercorn)"}
    srv = subprocess.Popen([PY, "-m", "bench.perf.h2server"], cwd=ROOT, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    out: dict = {}
    try:
        line = srv.stdout.readline()
        if not line.startswith("READY "):
            return {"skipped": f"hypercorn did not start: {line!r}"}
        url = line.split()[1]
        for rnd in range(cfg["rounds_h2"]):
            for gevent in cfg["h2_gevent"]:
                for proto in ("h1", "h2"):
                    key = f"{proto}{'-gevent' if gevent else ''}"
                    log(f"http/2 round {rnd + 1}/{cfg['rounds_h2']}: {key}")
                    args = [PY, "-m", "bench.perf.h2worker", url, "--proto", proto,
                            "--n", str(cfg["short_n"]), "--warmup", str(cfg["warmup"]),
                            "--tokens", str(cfg["tokens"]), "--streams", str(cfg["streams"]),
                            "--concurrency", str(cfg["h2_concurrency"])]
                    if gevent:
                        args.append("--gevent")
                    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
                    if r.returncode != 0:
                        raise RuntimeError(f"h2worker {key} failed:\n{r.stderr[-2000:]}")
                    out.setdefault(key, {"rounds": []})["rounds"].append(json.loads(r.stdout))
    finally:
        try:
            srv.stdin.close()
            srv.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            srv.kill()
    return out


COLD_VARIANTS = {
    # name: (kind, validate first, served_model_name given)
    "floor: first request after start": ("floor", False, True),
    "first request, no validation (served model discovered)": ("plugin", False, False),
    "first request after provider validation (served model discovered)": ("plugin", True, False),
    "first request after provider validation (served model named)": ("plugin", True, True),
}


def section_cold(cfg: dict) -> dict:
    """6: the first request of a fresh plugin process, with and without the validation warm-up."""
    sim = SimProc()
    out: dict = {name: {"first": [], "warm": [], "validate": [], "ready": []} for name in COLD_VARIANTS}
    try:
        for rnd in range(cfg["cold_starts"]):
            for name, (kind, validate, named) in COLD_VARIANTS.items():
                log(f"cold start {rnd + 1}/{cfg['cold_starts']}: {name}")
                t = stdio.Target(kind, sim.url, served_name=named)
                p = stdio.start(kind)
                try:
                    time.sleep(0.5)  # let start-up settle (heartbeat, background threads)
                    if validate:
                        v = p.validate_provider_credentials(t.provider, t.creds)
                        if v.error:
                            raise RuntimeError(f"validation failed: {v.error}")
                        out[name]["validate"].append(v.t_end - v.t_sent)
                    r = stdio.invoke(p, t, 3)
                    out[name]["first"].append(r.t_end - r.t_sent)
                    w = stdio.short_requests(p, t, cfg["cold_warm_n"], 3)
                    out[name]["warm"].extend(w["total"])
                    out[name]["ready"].append(p.ready_after)
                finally:
                    p.close()
    finally:
        sim.close()
    return out


def section_profile(cfg: dict) -> dict:
    """Profiles for the report: pyinstrument in-process, py-spy of the plugin process."""
    prof = RESULTS / "profiles"
    prof.mkdir(parents=True, exist_ok=True)
    sim = SimProc()
    out = {}
    try:
        for c in ("dify", "httpx-gevent"):
            for mode in ("short", "long"):
                path = prof / f"pyinstrument-{c}-{mode}.txt"
                log(f"profile: pyinstrument {c} {mode}")
                worker(c, sim.url, mode=mode, n=500, streams=3, tokens=2000, warmup=20,
                       profile=str(path))
                out[f"pyinstrument {c} {mode}"] = str(path.relative_to(ROOT))
        spy = Path(PY).with_name("py-spy")
        if spy.exists():
            for kind in ("floor", "plugin"):
                t = stdio.Target(kind, sim.url)
                p = stdio.start(kind)
                try:
                    stdio.short_requests(p, t, 0, 20)
                    for mode in ("short", "long"):
                        path = prof / f"py-spy-{kind}-{mode}.txt"
                        log(f"profile: py-spy {kind} {mode}")
                        rec = subprocess.Popen([str(spy), "record", "-p", str(p.pid), "-r", "1000",
                                                "--gil", "-f", "raw", "-o", str(path), "-d", "6"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(0.5)
                        end = time.monotonic() + 5
                        while time.monotonic() < end:
                            if mode == "long":
                                stdio.long_streams(p, t, 1, 0, 2000)
                            else:
                                stdio.short_requests(p, t, 50, 0)
                        rec.wait(30)
                        if path.exists():
                            summary = path.with_suffix(".top.txt")
                            summary.write_text(report.fold_summary(path))
                            path.unlink()  # the raw stacks are large; the summary is what is read
                            out[f"py-spy {kind} {mode}"] = str(summary.relative_to(ROOT))
                finally:
                    p.close()
            # 256 R1-paced streams (section 4): where the plugin process spends its CPU there,
            # next to the floor pacing its own chunks
            paced = SimProc("--ttft", "0.1", "--inter-token", "0.03")
            try:
                for kind in ("floor", "plugin"):
                    t = stdio.Target(kind, paced.url, pace=(0.1, 0.03) if kind == "floor" else None)
                    p = stdio.start(kind)
                    try:
                        stdio.invoke(p, t, 3)
                        path = prof / f"py-spy-{kind}-concurrent256.txt"
                        log(f"profile: py-spy {kind} 256 paced streams")
                        rec = subprocess.Popen([str(spy), "record", "-p", str(p.pid), "-r", "500", "-f", "raw",
                                                "-o", str(path), "-d", "6"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(0.5)
                        stdio.concurrent_steady(p, t, 256, 40, 0.1, 0.03, 4.0)
                        rec.wait(30)
                        if path.exists():
                            summary = path.with_suffix(".top.txt")
                            shares = report.leaf_shares(path)
                            out.setdefault("shares", {})[kind] = shares
                            summary.write_text(
                                report.fold_summary(path, sampled="py-spy without --gil: every thread, "
                                                    "idle samples left out")
                                + "\nworking samples by where the leaf frame is:\n"
                                + "".join(f"{v * 100:5.1f}%  {g}\n" for g, v in shares.items()))
                            path.unlink()
                            out[f"py-spy {kind} 256 paced streams"] = str(summary.relative_to(ROOT))
                    finally:
                        p.close()
            finally:
                paced.close()
    finally:
        sim.close()
    return out


# ---------------------------------------------------------------------------------------------
def machine() -> dict:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    model = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo")
    versions = {}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("dify_plugin", "httpx", "httpcore", "h11", "gevent", "pydantic", "tenacity", "h2",
                "hypercorn"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    commit = sh(f"git -C {ROOT} rev-parse --short HEAD")
    dirty = bool(sh(f"git -C {ROOT} status --porcelain -- deepseek_engine models provider main.py"))
    return {"cpu": model, "cores": os.cpu_count(), "memory": mem,
            "python": platform.python_version(), "kernel": platform.release(),
            "versions": versions, "commit": commit + (" + uncommitted engine/adapter changes" if dirty else ""),
            "gpu": "none", "load_before": os.getloadavg()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run (< 1 minute), indicative numbers")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {SECTIONS}")
    ap.add_argument("--profile", action="store_true", help="also write profiles to bench/results/profiles/")
    ap.add_argument("--pin", choices=("auto", "on", "off"), default="auto",
                    help="section 4: the plugin process on core 0, the simulator and the load generator on "
                    "the others (auto: with 4 cores or more; on 2 shared cores the plugin's core is also "
                    "everyone else's, and pinning starved it)")
    ap.add_argument("--out", help="report path (default docs/performance.md; with --quick "
                    "bench/results/quick/performance.md, so a smoke run never replaces the docs)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the report from a results file "
                    "(e.g. bench/results/performance.json after editing bench/perf/findings.md)")
    a = ap.parse_args()
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    docs = ROOT / "docs" / "performance.md"
    if a.out is None:  # only a whole run replaces the docs
        a.out = str(RESULTS / "quick" / "performance.md" if a.quick
                    else docs if set(only) == set(SECTIONS) else RESULTS / "partial" / "performance.md")
    if a.render:
        out = Path(a.out)
        report.write(json.loads(Path(a.render).read_text()), out, out.with_suffix(".png"))
        log(f"wrote {out} from {a.render}")
        return 0
    if a.quick:
        cfg = dict(rounds=1, rounds_stdio=1, rounds_h2=1, short_n=60, warmup=10, streams=2, tokens=1000,
                   levels=(32,), conc_tokens=20, conc_duration=2.0, conc_refs=(), ref_level=32, after_n=20,
                   h2_gevent=(True,), h2_concurrency=16, cold_starts=1, cold_warm_n=20)
    else:
        cfg = dict(rounds=5, rounds_stdio=3, rounds_h2=2, short_n=300, warmup=30, streams=5, tokens=2000,
                   levels=(64, 256, 512), conc_tokens=40, conc_duration=4.0,
                   conc_refs=("bare", "sdk"), ref_level=256, after_n=50, h2_gevent=(False, True),
                   h2_concurrency=32, cold_starts=8, cold_warm_n=30)
    cfg["pin"] = a.pin == "on" or (a.pin == "auto" and len(os.sched_getaffinity(0)) >= 4)
    started = time.monotonic()
    results: dict = {"mode": "quick" if a.quick else "full", "config": cfg, "machine": machine(),
                     "command": "bench/run" + (" --quick" if a.quick else "") + (" --profile" if a.profile else "")}
    for name in SECTIONS:
        if name in only:
            results[name] = globals()[f"section_{name}"](cfg)
    if a.profile:
        results["profiles"] = section_profile(cfg)
        for kind, shares in results["profiles"].pop("shares", {}).items():
            for group, v in shares.items():
                results.setdefault("profile_facts", {})[f"prof256_{kind}_{group}"] = f"{v * 100:.0f}%"
    results["machine"]["load_after"] = os.getloadavg()
    results["elapsed"] = time.monotonic() - started
    out = Path(a.out)
    # the committed samples are the committed report's: a run of some sections, or one whose
    # report goes elsewhere, keeps its samples beside its own report instead
    raw = (RESULTS / "performance-quick.json" if a.quick
           else RESULTS / "performance.json" if set(only) == set(SECTIONS) and out.resolve() == docs.resolve()
           else out.with_suffix(".json"))
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(results, indent=1, default=str))
    report.write(results, out, out.with_suffix(".png"))
    log(f"wrote {out}, {out.with_suffix('.png')} and {raw} in {results['elapsed']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
