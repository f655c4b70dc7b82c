"""Where one short request's CPU goes in the Dify class, function by function (cProfile with the
process CPU clock, so waiting on the server counts nothing).

    "$(bench/python)" -m bench.perf.setup_profile [--n 500] [--out FILE]
    BENCH_PLUGIN_ROOT=/other/checkout "$(bench/python)" -m bench.perf.setup_profile  # another tree

Runs ``DeepSeekSelfHostedLLM.invoke`` (gevent-patched, as in a plugin process; ``worker.py``'s
"dify" contender) for ``--n`` short answers against the simulator in a process of its own and
prints, per request, each function's cumulative and own CPU in microseconds and its calls. The
profiler inflates small calls several times over: compare rows between trees, not with
``bench/run``'s CPU per request.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

from bench.perf import worker
from bench.perf.__main__ import SimProc

_TRIM = ("/.venv/lib/python3.12/site-packages/", "/lib/python3.12/")


def _name(fn: str, line: int, func: str) -> str:
    for cut in _TRIM:
        if cut in fn:
            fn = fn.split(cut, 1)[1]
            break
    else:
        fn = fn.replace(str(worker.PLUGIN_ROOT) + "/", "").replace(str(worker.ROOT) + "/", "")
    return f"{fn}:{line}({func})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rows", type=int, default=120)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    sim = SimProc()
    try:
        run = worker.make("dify", sim.url)
        worker.short(run, 0, 50)  # warm: the steady state only
        prof = cProfile.Profile(time.process_time)
        c0 = time.process_time()
        prof.enable()
        worker.short(run, a.n, 0)
        prof.disable()
        cpu = (time.process_time() - c0) / a.n
    finally:
        sim.close()
    rows = sorted(((ct / a.n * 1e6, tt / a.n * 1e6, nc / a.n, _name(*key))
                   for key, (_cc, nc, tt, ct, _callers) in pstats.Stats(prof).stats.items()), reverse=True)
    lines = [f"tree: {worker.PLUGIN_ROOT}", f"{a.n} short requests, profiled CPU per request {cpu * 1e3:.2f} ms",
             "cum µs/request  own µs  calls/request  function"]
    lines += [f"{ct:12.1f} {tt:8.1f} {n:8.1f}  {name}" for ct, tt, n, name in rows[:a.rows]]
    text = "\n".join(lines) + "\n"
    if a.out:
        a.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
