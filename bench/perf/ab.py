"""A/B of this plugin against another checkout of it (the baseline), the runtime floor alongside,
all three alternated in every round of one run: the comparison a loaded, shared machine allows.

    "$(bench/python)" -m bench.perf.ab /path/to/baseline/checkout [--rounds 3] [--level 256]

Measures what issue 16 reads for a request's fixed cost: short requests through stdio (time and
the plugin process's CPU per request) and, at ``--level`` R1-paced steady streams of 40-token
answers, added time to first token, the gaps a reader sees and CPU per token (section 4 of
``bench/run``, same load generator). Prints progress lines, then one JSON document (raw
per-round figures and medians); the report is written by hand (bench/perf/findings.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from bench.perf import stdio
from bench.perf.__main__ import SimProc, _wave, log
from bench.perf.daemon import LeanDaemon


def _start(kind: str, root: Path) -> LeanDaemon:
    return LeanDaemon(root, python=sys.executable).start(ready_timeout=90)


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("baseline", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--short-n", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--level", type=int, default=256)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--skip", default="", help="short or concurrency")
    a = ap.parse_args()
    roots = {"floor": stdio.PLUGINS["floor"], "baseline": a.baseline.resolve(), "plugin": stdio.PLUGINS["plugin"]}

    def order(rnd: int) -> list[tuple[str, Path]]:  # baseline and this tree swap places each round
        names = ["floor", "baseline", "plugin"] if rnd % 2 == 0 else ["floor", "plugin", "baseline"]
        return [(n, roots[n]) for n in names]
    kind_of = {"floor": "floor", "baseline": "plugin", "plugin": "plugin"}
    out: dict = {"load_before": os.getloadavg(), "cores": sorted(os.sched_getaffinity(0)),
                 "baseline": str(roots["baseline"]), "short": {}, "steady": {}}
    if "short" not in a.skip:
        sim = SimProc()
        try:
            for rnd in range(a.rounds):
                for name, root in order(rnd):
                    log(f"short round {rnd + 1}/{a.rounds}: {name}")
                    t = stdio.Target(kind_of[name], sim.url)
                    p = _start(name, root)
                    try:
                        r = stdio.short_requests(p, t, a.short_n, a.warmup)
                    finally:
                        p.close()
                    out["short"].setdefault(name, []).append(
                        {"p50_ms": statistics.median(r["total"]) * 1e3, "p99_ms": _p(r["total"], 0.99) * 1e3,
                         "cpu_ms": r["cpu_per_request"][0] * 1e3})
        finally:
            sim.close()
    if "concurrency" not in a.skip:
        ttft, itl = 0.1, 0.03
        cfg = {"conc_tokens": 40, "conc_duration": a.duration}
        sim = SimProc("--ttft", str(ttft), "--inter-token", str(itl))
        try:
            for rnd in range(a.rounds):
                for name, root in order(rnd):
                    log(f"steady round {rnd + 1}/{a.rounds}: {name}, {a.level} streams")
                    t = stdio.Target(kind_of[name], sim.url, pace=(ttft, itl) if name == "floor" else None)
                    p = _start(name, root)
                    try:
                        stdio.invoke(p, t, 3)
                        w = _wave(p, t, sim, a.level, "steady", cfg, ttft, itl)
                    finally:
                        p.close()
                    out["steady"].setdefault(name, []).append(
                        {"streams": w["streams_done"], "errors": w["error_count"],
                         "ttft_p50_ms": _p(w["added_ttft"], 0.5) * 1e3, "ttft_p99_ms": _p(w["added_ttft"], 0.99) * 1e3,
                         "gap_p99_ms": _p(w["gaps"], 0.99) * 1e3, "cpu_per_token_us": w["cpu_per_token"] * 1e6})
        finally:
            sim.close()
    out["load_after"] = os.getloadavg()
    out["medians"] = {sec: {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
                            for name, rows in out[sec].items()} for sec in ("short", "steady") if out[sec]}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
