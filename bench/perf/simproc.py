"""The project's simulator in a process of its own, with its counters readable over a pipe.

``python -m bench.perf.simproc [--ttft S] [--inter-token S] [--usage MODE] ...`` prints
``READY <base_url>`` and then answers one command per stdin line:

    stats                 -> one JSON line: connections_opened, open_connections, requests, in_flight, cpu
    set <field> <value>   -> changes a SimConfig field at run time (float/int/str), answers "ok"
    quit                  -> stops

``python -m deepseek_sim`` does not print its counters; this wrapper exists so the benchmark can
count TCP connections the way the simulator does (``connections_opened``) while the simulator's
CPU stays out of the client's process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

from deepseek_sim import SimConfig, Simulator


def _cpu() -> float:
    """CPU seconds of this process so far (all threads): is the simulator itself the bottleneck?"""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="deepseek-ai/DeepSeek-R1")
    ap.add_argument("--shape", default="reasoning")
    ap.add_argument("--ttft", type=float, default=0.0)
    ap.add_argument("--inter-token", type=float, default=0.0)
    ap.add_argument("--usage", default="always_on_finish")
    ap.add_argument("--max-model-len", type=int, default=1_000_000)
    a = ap.parse_args()
    cfg = SimConfig(served_model=a.model, shape=a.shape, ttft=a.ttft, inter_token=a.inter_token,
                    usage=a.usage, max_model_len=a.max_model_len)
    sim = Simulator(cfg).start()
    print(f"READY {sim.base_url}", flush=True)
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "stats":
                out = {"connections_opened": sim.connections_opened,
                       "open_connections": sim.open_connections,
                       "requests": len(sim.requests), "in_flight": sim.in_flight,
                       "cpu": _cpu()}
                sim.requests.clear()  # keep memory flat over long runs
                print(json.dumps(out), flush=True)
            elif cmd[0] == "set" and len(cmd) == 3:
                field, raw = cmd[1], cmd[2]
                old = getattr(cfg, field)
                setattr(cfg, field, type(old)(raw) if not isinstance(old, bool) else raw == "true")
                print("ok", flush=True)
            elif cmd[0] == "quit":
                break
            else:
                print("error unknown command", flush=True)
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
