"""docs/performance.md and its plot from the benchmark's results (see bench/perf/__main__.py)."""

from __future__ import annotations

import collections
import json
import math
import statistics
import string
from dataclasses import dataclass, field
from pathlib import Path

FINDINGS = Path(__file__).with_name("findings.md")

IN_LABELS = {
    "httpx": "bare httpx (warm pool)",
    "engine": "this plugin's engine (ChatClient + AnswerAssembler)",
    "httpx-gevent": "bare httpx, gevent-patched",
    "dify": "this plugin's Dify class (DeepSeekSelfHostedLLM.invoke), gevent-patched",
    "sdk": "SDK OAICompatLargeLanguageModel.invoke, gevent-patched",
}
IN_BASE = {"engine": "httpx", "dify": "httpx-gevent", "sdk": "httpx-gevent"}
STDIO_LABELS = {
    "floor": "runtime floor: toy plugin, no HTTP",
    "bare": "bare httpx plugin (the least an HTTP plugin does)",
    "plugin": "this plugin",
    "sdk": "SDK OAICompat peer plugin",
}


# ---------------------------------------------------------------------------------------------
def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def p50(xs):
    return statistics.median(xs) if xs else float("nan")


def pooled(rounds: list[dict], key: str) -> list[float]:
    out: list[float] = []
    for r in rounds:
        out.extend(r.get(key) or [])
    return out


def spread(rounds: list[dict], key: str, scale: float) -> str:
    meds = [p50(r[key]) * scale for r in rounds if r.get(key)]
    if len(meds) < 2:
        return "–"
    return f"{min(meds):.{_dec(min(meds))}f}–{max(meds):.{_dec(max(meds))}f}"


def _dec(x: float) -> int:
    return 2 if abs(x) < 10 else 1 if abs(x) < 100 else 0


def f(x: float, scale: float = 1.0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    v = x * scale
    return f"{v:.{_dec(v)}f}"


def ok(flag: bool | None) -> str:
    return "–" if flag is None else ("**met**" if flag else "**not met**")


#: leaves that are a thread waiting, not working (gevent's thread-pool workers block in a real
#: lock that py-spy does not see as idle)
IDLE_LEAVES = ("acquire_with_timeout (gevent/_threading.py",)


def fold_summary(path: Path, top: int = 30,
                 sampled: str = "py-spy --gil: only the thread holding the GIL is sampled") -> str:
    """Self and inclusive shares of a py-spy raw (folded) profile."""
    selfc: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or stack.rsplit(";", 1)[-1].startswith(IDLE_LEAVES):
            continue  # a thread waiting is not work
        n = int(n)
        total += n
        frames = stack.split(";")
        selfc[frames[-1]] += n
        for fr in set(frames):
            incl[fr] += n
    lines = [f"samples: {total} ({sampled})", "", "self:"]
    lines += [f"{c / total * 100:5.1f}%  {fr}" for fr, c in selfc.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{c / total * 100:5.1f}%  {fr}" for fr, c in incl.most_common(top + 20)]
    return "\n".join(lines) + "\n"


GROUPS = (("own", ("deepseek_engine/", "models/llm/", "toy_plugin/", "llm.py:")),  # the plugin's own code
          ("sdk", ("dify_plugin/", "pydantic", "copy.py")),  # the SDK runtime and its pydantic models
          ("http", ("httpx/", "httpcore/", "h11/")),
          ("gevent", ("gevent/",)),  # hub, cooperative sockets and locks
          ("json", ("json/",)))


def leaf_shares(path: Path) -> dict[str, float]:
    """Share of the working (non-idle) samples of a py-spy raw profile by where the leaf frame is."""
    counts: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        if leaf.startswith(IDLE_LEAVES):
            continue
        group = next((g for g, needles in GROUPS if any(x in leaf for x in needles)), "other")
        counts[group] += int(n)
    total = sum(counts.values()) or 1
    return {g: counts[g] / total for g in [g for g, _ in GROUPS] + ["other"]}


def _share(seconds: float) -> str:
    """The plugin's p99 over the floor's, in words: below zero is the floor's own noise."""
    if seconds > 0:
        return f"{seconds * 1e3:.0f} ms"
    return f"none measurable ({seconds * 1e3:.0f} ms: the floor's p99 varies between runs by more)"


def before_facts(results_dir: Path) -> dict[str, str]:
    """Per-request numbers of the newest ``before-<commit>.json`` (an earlier tree's stdio run)."""
    files = sorted(results_dir.glob("before-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return {}
    st = json.loads(files[-1].read_text()).get("stdio") or {}
    try:
        plug, bare = (p50(pooled(st[k]["rounds"], "total")) for k in ("plugin", "bare"))
    except KeyError:
        return {}
    return {"before_req_plugin": f"{plug * 1e3:.2f} ms", "before_req_bare": f"{bare * 1e3:.2f} ms",
            "before_req_vs_bare": f"{plug / bare:.2f}x"}


# ---------------------------------------------------------------------------------------------
@dataclass
class _Report:
    md: list[str] = field(default_factory=list)
    targets: list[tuple[str, str, bool | None]] = field(default_factory=list)
    # this run's numbers for the hand-written findings ($name in bench/perf/findings.md), so the
    # prose never quotes another run
    facts: dict[str, str] = field(default_factory=dict)


def _intro(res: dict, rep: _Report) -> None:
    """Title, command, machine and method."""
    m = res["machine"]
    quick = res["mode"] == "quick"
    rep.md += ["# Performance", ""]
    if quick:
        rep.md += ["> **Smoke run (`--quick`)**: few samples, indicative only. Run `bench/run` for the real "
                   "numbers.", ""]
    rep.md += [f"Command: `{res['command']}` (writes this file, `docs/performance.png` and "
               "`bench/results/performance.json`; `bench/run --quick` is a smoke run under a minute that "
               "writes `bench/results/quick/` instead). "
               f"This run took {res['elapsed']:.0f} s.", "",
               f"Machine: {m['cores']} cores, {m['cpu']} (KVM guest), {m['memory']} RAM, **no GPU**; "
               f"Python {m['python']}, Linux {m['kernel']}; "
               + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
               + f". Code: {m['commit']}. Load average before/after: "
               f"{m['load_before'][0]:.2f} / {m['load_after'][0]:.2f} (the machine may be shared: "
               "medians are robust to that, p99s less so; the per-round spread shows the noise).", "",
               "Everything runs on loopback against the project's simulator (`deepseek_sim`, one process of "
               "its own; CPU figures are the client's or the plugin process's only). The simulator answers "
               "at once (TTFT 0, no gap between tokens) except in the concurrency section, so every "
               "millisecond below is client-side overhead. \"p50\"/\"p99\" are over all samples of all "
               "rounds; \"spread\" is the range of the per-round medians.", ""]


def _inproc_latency(res: dict, rep: _Report) -> None:
    """1. Added time to first token and per-request time, in-process."""
    inp = res["inproc"]
    base_ttft = {}
    cfg = res["config"]
    rep.md += ["## 1. Added time to first token and per-request time, in-process", "",
               f"Sequential short answers (`max_tokens` 3: role chunk, 3 tokens, final chunk with usage, "
               f"`[DONE]`), {cfg['short_n']} per round after {cfg['warmup']} warm-up requests, "
               f"{cfg['rounds']} rounds, each contender in a fresh process. TTFT = call to the first text "
               "the caller gets; total = call to the end of the stream; CPU = process CPU per request. "
               "\"Added\" compares medians (and p99s) with the bare-httpx baseline under the same patching.", "",
               "| contender | TTFT p50 (ms) | TTFT p99 | total p50 (ms) | total p99 | CPU/request (ms) "
               "| added TTFT p50 / p99 (ms) | total p50 spread |",
               "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c, label in IN_LABELS.items():
        rounds = inp[c]["rounds"]
        tt, tot, cpu = pooled(rounds, "ttft"), pooled(rounds, "total"), pooled(rounds, "cpu_per_request")
        base_ttft[c] = (p50(tt), pct(tt, 99))
        added = "baseline"
        if c in IN_BASE:
            b = pooled(inp[IN_BASE[c]]["rounds"], "ttft")
            added = f"{f(p50(tt) - p50(b), 1e3)} / {f(pct(tt, 99) - pct(b, 99), 1e3)} (vs {IN_BASE[c]})"
        rep.md.append(f"| {label} | {f(p50(tt), 1e3)} | {f(pct(tt, 99), 1e3)} | {f(p50(tot), 1e3)} | "
                      f"{f(pct(tot, 99), 1e3)} | {f(p50(cpu), 1e3)} | {added} | {spread(rounds, 'total', 1e3)} |")
    rep.md.append("")
    for c in ("engine", "dify"):
        b = IN_BASE[c]
        d50 = (base_ttft[c][0] - base_ttft[b][0]) * 1e3
        d99 = (base_ttft[c][1] - base_ttft[b][1]) * 1e3
        rep.targets.append((f"added TTFT over bare httpx, in-process ({c} vs {b}): ≤ 1 ms p50, ≤ 5 ms p99",
                            f"{d50:+.2f} ms p50, {d99:+.2f} ms p99", d50 <= 1.0 and d99 <= 5.0))


def _inproc_cpu(res: dict, rep: _Report) -> None:
    """2. CPU per streamed chunk, in-process."""
    inp, cfg = res["inproc"], res["config"]
    rep.md += ["## 2. CPU per streamed chunk, in-process", "",
               f"{cfg['streams']} streams per round of {cfg['tokens']} one-token events (the simulator's "
               "`[[long]]` reply, no gap between tokens), process CPU time (all threads) and wall time "
               "per server event.", "",
               "| contender | CPU/event p50 (µs) | p99 | wall/event p50 (µs) | vs baseline (CPU) | spread |",
               "|---|---:|---:|---:|---:|---:|"]
    cpu_tok = {}
    for c, label in IN_LABELS.items():
        rounds = inp[c]["rounds"]
        ct = pooled(rounds, "cpu_per_token")
        cpu_tok[c] = p50(ct)
        ratio = "baseline"
        if c in IN_BASE:
            ratio = f"{p50(ct) / p50(pooled(inp[IN_BASE[c]]['rounds'], 'cpu_per_token')):.2f}x {IN_BASE[c]}"
        rep.md.append(f"| {label} | {f(p50(ct), 1e6)} | {f(pct(ct, 99), 1e6)} | "
                      f"{f(p50(pooled(rounds, 'wall_per_token')), 1e6)} | {ratio} | "
                      f"{spread(rounds, 'cpu_per_token', 1e6)} |")
    rep.md.append("")
    gevent_extra = p50(pooled(inp["httpx-gevent"]["rounds"], "total")) - p50(pooled(inp["httpx"]["rounds"], "total"))
    rep.facts.update(gevent_extra=f"{gevent_extra * 1e3:.2f} ms",
                     cpu_event_dify=f"{cpu_tok['dify'] * 1e6:.1f} µs",
                     cpu_event_httpx_gevent=f"{cpu_tok['httpx-gevent'] * 1e6:.1f} µs")
    for c in ("engine", "dify"):
        b = IN_BASE[c]
        r = cpu_tok[c] / cpu_tok[b]
        rep.targets.append((f"CPU per chunk in-process ({c}): ≤ 30 µs and ≤ 2x bare httpx ({b})",
                            f"{cpu_tok[c] * 1e6:.1f} µs, {r:.2f}x", cpu_tok[c] <= 30e-6 and r <= 2.0))


def _stdio(res: dict, rep: _Report) -> None:
    """3. Through the plugin process (the daemon's stdio protocol)."""
    st, inp = res["stdio"], res.get("inproc")
    cfg = res["config"]
    rep.md += ["## 3. Through the plugin process (the daemon's stdio protocol)", "",
               "Each plugin launched as the Dify daemon launches it (`python -m main`, "
               "`INSTALL_METHOD=local`, JSON lines on stdin/stdout) by the test harness "
               f"(`tests/protocol/harness.py`); {cfg['rounds_stdio']} rounds, a fresh process each. "
               "Per request: harness write of the request line to the `end` message read back. Per "
               "event: first message to `end` of a "
               f"{cfg['tokens']}-token stream divided by {cfg['tokens']} (server events, so merging "
               "events into fewer chunks counts as a gain). Plugin CPU from `/proc/<pid>/task/*/schedstat` "
               "(excludes the harness and the simulator).", "",
               "| plugin | per request p50 (ms) | p99 | TTFT p50 (ms) | plugin CPU/request (ms) "
               "| per event p50 (µs) | p99 | plugin CPU/event (µs) | chunks per stream |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, label in STDIO_LABELS.items():
        rounds = st[k]["rounds"]
        rep.md.append(f"| {label} | {f(p50(pooled(rounds, 'total')), 1e3)} | "
                      f"{f(pct(pooled(rounds, 'total'), 99), 1e3)} | "
                      f"{f(p50(pooled(rounds, 'ttft')), 1e3)} | {f(p50(pooled(rounds, 'cpu_per_request')), 1e3)} | "
                      f"{f(p50(pooled(rounds, 'wall_per_token')), 1e6)} | "
                      f"{f(pct(pooled(rounds, 'wall_per_token'), 99), 1e6)} | "
                      f"{f(p50(pooled(rounds, 'cpu_per_token')), 1e6)} | "
                      f"{p50(pooled(rounds, 'chunks_per_stream')):.0f} |")
    rep.md.append("")
    floor = p50(pooled(st["floor"]["rounds"], "total"))
    plug = p50(pooled(st["plugin"]["rounds"], "total"))
    bare = p50(pooled(st["bare"]["rounds"], "total"))
    sdk = p50(pooled(st["sdk"]["rounds"], "total"))
    lines = []
    if inp:
        raw = p50(pooled(inp["httpx"]["rounds"], "total"))
        ideal = floor + raw
        lines.append(f"- floor + raw httpx (in-process, same run) = {ideal * 1e3:.2f} ms; this plugin "
                     f"{plug * 1e3:.2f} ms = **{plug / ideal:.2f}x** (target ≤ 1.1x).")
        rep.targets.append(("per short request through stdio ≤ 1.1x (floor + raw httpx), same run",
                            f"{plug * 1e3:.2f} ms = {plug / ideal:.2f}x of {ideal * 1e3:.2f} ms",
                            plug <= 1.1 * ideal))
    rep.facts.update(req_plugin=f"{plug * 1e3:.2f} ms", req_bare=f"{bare * 1e3:.2f} ms",
                     req_floor=f"{floor * 1e3:.2f} ms", req_sdk=f"{sdk * 1e3:.2f} ms",
                     req_vs_bare=f"{plug / bare:.2f}x", req_vs_sdk=f"{plug / sdk:.2f}x")
    if inp:
        rep.facts.update(req_ideal=f"{ideal * 1e3:.2f} ms", req_vs_ideal=f"{plug / ideal:.2f}x",
                         req_bare_vs_ideal=f"{bare / ideal:.2f}x")
    lines.append(f"- against the bare httpx plugin in the same runtime: **{plug / bare:.2f}x** "
                 f"({bare * 1e3:.2f} ms); against the SDK peer: **{plug / sdk:.2f}x** ({sdk * 1e3:.2f} ms).")
    ev = p50(pooled(st["plugin"]["rounds"], "wall_per_token"))
    ev_sdk = p50(pooled(st["sdk"]["rounds"], "wall_per_token"))
    lines.append(f"- per streamed event: this plugin {ev * 1e6:.1f} µs, the SDK peer {ev_sdk * 1e6:.1f} µs "
                 f"({ev / ev_sdk:.2f}x), the floor "
                 f"{p50(pooled(st['floor']['rounds'], 'wall_per_token')) * 1e6:.1f} µs.")
    rep.facts.update(ev_plugin=f"{ev * 1e6:.1f} µs", ev_sdk=f"{ev_sdk * 1e6:.1f} µs",
                     ev_floor=f"{p50(pooled(st['floor']['rounds'], 'wall_per_token')) * 1e6:.1f} µs",
                     ev_bare=f"{p50(pooled(st['bare']['rounds'], 'wall_per_token')) * 1e6:.1f} µs",
                     chunks_plugin=f"{p50(pooled(st['plugin']['rounds'], 'chunks_per_stream')):.0f}",
                     tokens=str(cfg["tokens"]))
    rep.targets.append(("per streamed chunk through stdio ≤ 30 µs", f"{ev * 1e6:.1f} µs", ev <= 30e-6))
    cpu_ev = p50(pooled(st["plugin"]["rounds"], "cpu_per_token"))
    cpu_floor = p50(pooled(st["floor"]["rounds"], "cpu_per_token"))
    rep.targets.append(("per streamed token through stdio ≤ the runtime floor's per chunk (issue 16; a "
                        f"{cfg['tokens']}-token stream, plugin CPU)",
                        f"{cpu_ev * 1e6:.1f} µs vs {cpu_floor * 1e6:.1f} µs", cpu_ev <= cpu_floor))
    rep.md += lines + [""]


def _ms(xs: list[float], q: float) -> str:
    return f(pct(xs, q), 1e3) if xs else "–"


def _concurrency(res: dict, rep: _Report) -> None:
    """4. Concurrent streams in one plugin process."""
    cc = res["concurrency"]
    pinned = cc.get("pinned")
    where = ("each plugin process pinned to core 0 (`sched_setaffinity`, as `taskset`), the simulator "
             "and the load generator to the other cores" if pinned else
             "not pinned (`bench/run --pin on` pins the plugin to core 0 and the rest to the others; on 2 "
             "shared cores that starved it: see the findings)")
    rep.md += ["## 4. Concurrent streams in one plugin process", "",
               f"The simulator paces like DeepSeek-R1 on a GPU: TTFT {cc['server_ttft'] * 1e3:.0f} ms, "
               f"{cc['server_itl'] * 1e3:.0f} ms between tokens, {cc['tokens']} tokens per answer. "
               "**steady**: N closed-loop users keep N streams open for "
               f"{cc['duration']:.0f} s, their first starts spread over one answer's length (production-like "
               "arrivals); streams that start in the ramp are not counted for latency. **burst**: N streams "
               "start at the same instant. Added = measured minus what the server itself takes (TTFT; TTFT + "
               "(tokens−1) × gap). Update gap = time between two chunks with text of one stream, as the "
               "daemon's side reads them (what a reader sees; the server's own gap is "
               f"{cc['server_itl'] * 1e3:.0f} ms). CPU/token = plugin process CPU over the run / tokens "
               "delivered. Connections = TCP connections the simulator accepted during the run (the "
               "engine's pool: max 1024 connections, 256 kept alive; the health prober has its own). The "
               "runtime floor is the toy plugin pacing its own chunks the same way with `gevent.sleep` (no "
               "HTTP, no simulator), a chunk per token: what the SDK runtime and the load generator alone "
               "add on this machine. The floor and this plugin alternate at every level and arrival mode "
               f"(same run); {where}. The load generator (`bench/perf/daemon.py`) wakes a caller once "
               "per stream, at its end.", "",
               "| plugin | N | arrivals | streams | errors | added TTFT p50 (ms) | p99 | added end-to-end p99 "
               "| update gap p50 (ms) | p99 | max | chunks/stream | CPU/token (µs) | cores | connections "
               "| RSS after (MiB) |",
               "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, levels in cc["levels"].items():
        for n, modes in levels.items():
            for mode, w in modes.items():
                per = w.get("chunks", 0) / max(len(w["added_ttft"]), 1)
                rep.md.append(
                    f"| {STDIO_LABELS[kind]} | {n} | {mode} | {len(w['added_ttft'])} | {w['error_count']} | "
                    f"{f(p50(w['added_ttft']), 1e3)} | {f(pct(w['added_ttft'], 99), 1e3)} | "
                    f"{f(pct(w['added_total'], 99), 1e3)} | {_ms(w.get('gaps', []), 50)} | "
                    f"{_ms(w.get('gaps', []), 99)} | {_ms(w.get('gaps', []), 100)} | {per:.1f} | "
                    f"{w.get('cpu_per_token', 0) * 1e6:.0f} | {w['plugin_cpu'] / max(w['wall'], 1e-9):.2f} | "
                    f"{w['connections_opened']} | {w.get('rss_after', float('nan')):.0f} |")
    rep.md.append("")
    floor_lv, plug_lv = cc["levels"].get("floor", {}), cc["levels"].get("plugin", {})
    rows = []
    for n, modes in plug_lv.items():
        for mode, pl in modes.items():
            fl = floor_lv.get(n, {}).get(mode)
            if not fl:
                continue
            fp, pp = pct(fl["added_ttft"], 99), pct(pl["added_ttft"], 99)
            ratio = pp / fp if fp > 0 else float("inf")
            rows.append(f"| {n} | {mode} | {fp * 1e3:.1f} | {pp * 1e3:.1f} | **{ratio:.2f}x** | "
                        f"{fl.get('cpu_per_token', 0) * 1e6:.0f} | {pl.get('cpu_per_token', 0) * 1e6:.0f} | "
                        f"{_ms(fl.get('gaps', []), 99)} | {_ms(pl.get('gaps', []), 99)} |")
            rep.facts[f"ttft_{n}_{mode}_ratio"] = f"{ratio:.2f}x"
            rep.facts[f"floor_{n}_{mode}_p99"] = f"{fp * 1e3:.0f} ms"
            rep.facts[f"plugin_{n}_{mode}_p99"] = f"{pp * 1e3:.0f} ms"
            rep.facts[f"cpu_{n}_{mode}_plugin"] = f"{pl.get('cpu_per_token', 0) * 1e6:.0f} µs"
            rep.facts[f"cpu_{n}_{mode}_floor"] = f"{fl.get('cpu_per_token', 0) * 1e6:.0f} µs"
            rep.facts[f"gap_{n}_{mode}_plugin"] = _ms(pl.get("gaps", []), 99) + " ms"
            rep.facts[f"gap_{n}_{mode}_floor"] = _ms(fl.get("gaps", []), 99) + " ms"
            rep.facts[f"chunks_{n}_{mode}_plugin"] = f"{pl.get('chunks', 0) / max(len(pl['added_ttft']), 1):.1f}"
    if rows:
        rep.md += ["This plugin against the runtime floor, same run:", "",
                   "| N | arrivals | floor: added TTFT p99 (ms) | this plugin | plugin / floor "
                   "| CPU/token floor (µs) | this plugin | update gap p99 floor (ms) | this plugin |",
                   "|---:|---|---:|---:|---:|---:|---:|---:|---:|", *rows, ""]
    for kind in ("bare", "sdk"):
        for n, modes in cc["levels"].get(kind, {}).items():
            o = modes.get("steady")
            if o:
                rep.facts[f"ref_{kind}_p99"] = f"{pct(o['added_ttft'], 99) * 1e3:.0f} ms"
                rep.facts[f"ref_{kind}_connections"] = str(o["connections_opened"])
                rep.facts["ref_level"] = n
    ab = cc.get("after_burst")
    if ab:
        rep.md += [f"After the bursts the pool holds {ab['idle_connections']} idle keep-alive connections; a "
                   f"short request (simulator back to TTFT 0) then takes **{p50(ab['total']) * 1e3:.2f} ms** p50 "
                   f"({pct(ab['total'], 99) * 1e3:.2f} ms p99) and **{ab['cpu_per_request'][0] * 1e3:.2f} ms** "
                   "of plugin CPU (compare section 3).", ""]
    st, tokens = res.get("stdio"), cc["tokens"]
    pl, fl = plug_lv.get("256", {}).get("steady"), floor_lv.get("256", {}).get("steady")
    if st and pl and fl:  # the request's fixed CPU (section 3's short requests) spread over its tokens
        for kind, w in (("plugin", pl), ("floor", fl)):
            req = p50(pooled(st[kind]["rounds"], "cpu_per_request"))
            rep.facts[f"cpureq_{kind}"] = f"{req * 1e3:.2f} ms"
            rep.facts[f"cpureq_{kind}_per_token"] = f"{req / tokens * 1e6:.0f} µs"
            rep.facts[f"net_256_{kind}"] = f"{(w['cpu_per_token'] - req / tokens) * 1e6:.0f} µs"
    _concurrency_targets(cc, rep)


def _concurrency_targets(cc: dict, rep: _Report) -> None:
    """Issue 16's targets, from section 4's runs."""
    from deepseek_engine.pressure import MERGE_WINDOW

    floor_lv, plug_lv = cc["levels"].get("floor", {}), cc["levels"].get("plugin", {})
    pl, fl = plug_lv.get("256", {}).get("steady"), floor_lv.get("256", {}).get("steady")
    if pl and fl:
        fp, pp = pct(fl["added_ttft"], 99), pct(pl["added_ttft"], 99)
        rep.targets.append(("256 concurrent streams (steady): zero errors, ≤ 20 ms p99 added, connections "
                            "bounded by the pool (issue 8)",
                            f"{pl['error_count']} errors, {pp * 1e3:.1f} ms p99 added TTFT, "
                            f"{pct(pl['added_total'], 99) * 1e3:.1f} ms end-to-end, {pl['connections_opened']} "
                            f"connections (the runtime floor alone: {fp * 1e3:.1f} ms p99 added TTFT)",
                            pl["error_count"] == 0 and pp <= 0.020 and pct(pl["added_total"], 99) <= 0.020
                            and pl["connections_opened"] <= 256 + 8))
        rep.targets.append(("256 steady streams: the plugin's p99 added TTFT ≤ 1.5x the runtime floor's (issue 16)",
                            f"{pp * 1e3:.0f} ms vs {fp * 1e3:.0f} ms = {pp / fp:.2f}x", pp <= 1.5 * fp))
        rep.targets.append(("the same, 256 R1-paced steady streams (issue 16; CPU per token of 40-token "
                            "answers, each request's opening included)",
                            f"{pl['cpu_per_token'] * 1e6:.0f} µs vs {fl['cpu_per_token'] * 1e6:.0f} µs of CPU",
                            pl["cpu_per_token"] <= fl["cpu_per_token"]))
    top = plug_lv.get("512", {})
    if top:
        runs = [w for w in top.values()]
        errors = sum(w["error_count"] for w in runs)
        conns = max(w["connections_opened"] for w in runs)
        rss = [w["rss_before"] for w in runs] + [runs[-1]["rss_after"]]
        grow = rss[-1] - rss[1] if len(rss) > 2 else rss[-1] - rss[0]
        rep.targets.append(("512 streams (steady and burst): zero errors, connections bounded, memory flat "
                            "(issue 16)", f"{errors} errors, at most {conns} connections a run (pool: 1024), RSS "
                            + " → ".join(f"{x:.0f}" for x in rss) + f" MiB ({grow:+.0f} MiB over the second run)",
                            errors == 0 and conns <= 1024 and grow <= 0.1 * rss[1]))
    gaps = [g for modes in plug_lv.values() for w in modes.values() for g in w.get("gaps", [])]
    if gaps:
        rep.targets.append((f"time between visible updates of one stream ≤ {MERGE_WINDOW * 1e3:.0f} ms, the merge "
                            "bound (issue 16), every level", f"p99 {pct(gaps, 99) * 1e3:.0f} ms, max "
                            f"{max(gaps) * 1e3:.0f} ms", max(gaps) <= MERGE_WINDOW))


def _http2(res: dict, rep: _Report) -> None:
    """5. HTTP/1.1 keep-alive vs HTTP/2."""
    h2 = res["h2"]
    rep.md += ["## 5. HTTP/1.1 keep-alive vs HTTP/2", ""]
    if "skipped" in h2:
        rep.md += [f"Skipped: {h2['skipped']}.", ""]
    else:
        cfg = res["config"]
        rep.md += ["vLLM and SGLang serve HTTP/1.1 only (uvicorn), and so does the simulator; HTTP/2 needs a "
                   "proxy in front of them. To compare the protocols honestly, one hypercorn server "
                   "(`bench/perf/h2server.py`, cleartext on loopback, HTTP/2 by prior knowledge) answers both, "
                   "with the same R1-shaped stream, and the same httpx client code runs with `http2` off or on "
                   f"(`bench/perf/h2worker.py`). Concurrent: {cfg['h2_concurrency']} threads each streaming "
                   "200 events at once.", "",
                   "| client | short TTFT p50 (ms) | p99 | short total p50 (ms) | p99 | CPU/event (µs) "
                   "| concurrent: wall (s) | CPU (s) | new connections |",
                   "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key, v in h2.items():
            rounds = v["rounds"]
            conc = rounds[-1]["concurrent"]
            label = (("HTTP/2" if key.startswith("h2") else "HTTP/1.1 keep-alive")
                     + (", gevent-patched" if "gevent" in key else ""))
            rep.md.append(f"| {label} | {f(p50(pooled(rounds, 'ttft')), 1e3)} | "
                          f"{f(pct(pooled(rounds, 'ttft'), 99), 1e3)} | "
                          f"{f(p50(pooled(rounds, 'total')), 1e3)} | {f(pct(pooled(rounds, 'total'), 99), 1e3)} | "
                          f"{f(p50(pooled(rounds, 'cpu_per_token')), 1e6)} | "
                          f"{p50([r['concurrent']['wall'] for r in rounds]):.3f} | "
                          f"{p50([r['concurrent']['cpu'] for r in rounds]):.3f} | {conc['connections']} |")
        rep.md.append("")
        for g in ("", "-gevent"):
            if f"h1{g}" in h2 and f"h2{g}" in h2:
                a, b = h2[f"h1{g}"]["rounds"], h2[f"h2{g}"]["rounds"]
                fa, fb = p50(pooled(a, "ttft")), p50(pooled(b, "ttft"))
                ta, tb = p50(pooled(a, "total")), p50(pooled(b, "total"))
                ca, cb = p50(pooled(a, "cpu_per_token")), p50(pooled(b, "cpu_per_token"))
                wa, wb = (p50([r["concurrent"]["wall"] for r in x]) for x in (a, b))
                rep.md.append(f"- {'gevent-patched' if g else 'plain'} (HTTP/1.1 vs HTTP/2): first token "
                              f"{'HTTP/1.1' if fa < fb else 'HTTP/2'} sooner ({fa * 1e3:.2f} vs {fb * 1e3:.2f} ms); "
                              f"whole short answer {'HTTP/1.1' if ta < tb else 'HTTP/2'} sooner ({ta * 1e3:.2f} vs "
                              f"{tb * 1e3:.2f} ms); per streamed event {'HTTP/1.1' if ca < cb else 'HTTP/2'} cheaper "
                              f"({ca * 1e6:.1f} vs {cb * 1e6:.1f} µs CPU); concurrent streams "
                              f"{'HTTP/1.1' if wa < wb else 'HTTP/2'} done sooner ({wa:.3f} vs {wb:.3f} s).")
                if g:
                    rep.facts.update(h2_ttft=f"{fa * 1e3:.2f} vs {fb * 1e3:.2f} ms",
                                     h2_total=f"{ta * 1e3:.2f} vs {tb * 1e3:.2f} ms",
                                     h2_cpu=f"{ca * 1e6:.1f} vs {cb * 1e6:.1f} µs", h2_wall=f"{wa:.3f} vs {wb:.3f} s")
        rep.md.append("")


def _cold(res: dict, rep: _Report) -> None:
    """6. Cold vs warm."""
    cold = res["cold"]
    rep.md += ["## 6. Cold vs warm", "",
               "A fresh plugin process per row and start, 0.5 s after its first heartbeat; then one short "
               "request (the \"first\"), then warm requests in the same process. Provider validation "
               "(`validate_provider_credentials`) sends the endpoint a one-token request through the "
               "shared pool and then runs the request path a few times with one-token answers: the "
               "plugin's warm-up.", "",
               "| start | first request p50 (ms) | min–max | warm p50 (ms) | first / warm | validation (ms) "
               "| ready after start (s) |",
               "|---|---:|---:|---:|---:|---:|---:|"]
    for name, v in cold.items():
        fr, wm = v["first"], v["warm"]
        ratio = p50(fr) / p50(wm) if fr and wm else float("nan")
        rep.md.append(f"| {name} | {f(p50(fr), 1e3)} | {f(min(fr), 1e3)}–{f(max(fr), 1e3)} | {f(p50(wm), 1e3)} | "
                      f"{ratio:.2f}x | {f(p50(v['validate']), 1e3) if v['validate'] else '–'} | "
                      f"{p50(v['ready']):.2f} |")
    rep.md.append("")
    named = next((v for n, v in cold.items() if "(served model named)" in n and v["first"] and v["warm"]), None)
    if named:
        rep.facts["cold_named_ratio"] = f"{p50(named['first']) / p50(named['warm']):.2f}x"
    for name, v in cold.items():
        if "after provider validation (served model discovered)" in name and v["first"] and v["warm"]:
            r = p50(v["first"]) / p50(v["warm"])
            rep.facts.update(cold_ratio=f"{r:.2f}x", cold_first=f"{p50(v['first']) * 1e3:.2f} ms",
                             cold_warm=f"{p50(v['warm']) * 1e3:.2f} ms",
                             cold_range=f"{min(v['first']) * 1e3:.2f}–{max(v['first']) * 1e3:.2f} ms")
            rep.targets.append(("first request with warm-up (after validation, default credentials) "
                                "≤ 1.2x a warm request",
                                f"{r:.2f}x ({p50(v['first']) * 1e3:.2f} vs {p50(v['warm']) * 1e3:.2f} ms)", r <= 1.2))


def _targets_and_findings(res: dict, rep: _Report) -> None:
    """The targets table after the introduction; the hand-written findings with this run's numbers."""
    m = res["machine"]
    head = ["## Targets (issues 8 and 16)", "", "| target | measured (this run) | |", "|---|---|---|"]
    head += [f"| {t} | {mv} | {ok(flag)} |" for t, mv, flag in rep.targets]
    head += ["", "![performance](performance.png)", ""]
    intro_end = next(i for i, line in enumerate(rep.md) if line.startswith("## "))
    rep.md[intro_end:intro_end] = head
    if FINDINGS.exists():
        rep.facts.update(commit=str(m.get("commit", "?")), machine=f"{m['cores']}-core {m['cpu']}")
        rep.facts.update(before_facts(FINDINGS.parents[1] / "results"))
        rep.facts.update(res.get("profile_facts", {}))
        findings = string.Template(FINDINGS.read_text()).safe_substitute(rep.facts)
        missing = sorted({m["named"] for m in string.Template.pattern.finditer(findings) if m["named"]})
        if missing:  # a section not run (or no --profile): say so rather than print stale numbers
            print(f"findings: no value in this run for {', '.join('$' + n for n in missing)}")
        rep.md += [findings.rstrip(), ""]


#: the report's sections in order, each with the results it needs
SECTIONS = ((_inproc_latency, "inproc"), (_inproc_cpu, "inproc"), (_stdio, "stdio"), (_concurrency, "concurrency"),
            (_http2, "h2"), (_cold, "cold"))


def write(res: dict, md_path: Path, png_path: Path) -> None:
    rep = _Report()
    _intro(res, rep)
    for section, needs in SECTIONS:
        if res.get(needs):
            section(res, rep)
    _targets_and_findings(res, rep)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(rep.md) + "\n")
    try:
        plot(res, png_path)
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    short = {"httpx": "httpx", "engine": "engine", "httpx-gevent": "httpx\n(gevent)", "dify": "Dify class\n(gevent)",
             "sdk": "SDK OAICompat\n(gevent)", "floor": "runtime floor\n(toy)", "bare": "bare httpx\nplugin",
             "plugin": "this plugin", }
    inp, st, cc = res.get("inproc"), res.get("stdio"), res.get("concurrency")
    ax = axes[0][0]
    if inp:
        names = list(IN_LABELS)
        x = range(len(names))
        tt = [p50(pooled(inp[c]["rounds"], "ttft")) * 1e3 for c in names]
        tt99 = [pct(pooled(inp[c]["rounds"], "ttft"), 99) * 1e3 for c in names]
        tot = [p50(pooled(inp[c]["rounds"], "total")) * 1e3 for c in names]
        ax.bar([i - 0.2 for i in x], tt, 0.4, label="TTFT p50")
        ax.bar([i + 0.2 for i in x], tot, 0.4, label="total p50")
        ax.scatter([i - 0.2 for i in x], tt99, marker="_", s=300, color="k", label="TTFT p99")
        ax.set_xticks(list(x), [short[c] for c in names], fontsize=8)
        ax.set_ylabel("ms per short request")
        ax.set_title("1. In-process: short request (simulator TTFT 0)")
        ax.legend(fontsize=8)
    ax = axes[0][1]
    bars, labels, colors = [], [], []
    if inp:
        for c in IN_LABELS:
            bars.append(p50(pooled(inp[c]["rounds"], "cpu_per_token")) * 1e6)
            labels.append(short[c])
            colors.append("tab:blue")
    if st:
        for k in STDIO_LABELS:
            bars.append(p50(pooled(st[k]["rounds"], "wall_per_token")) * 1e6)
            labels.append(short["sdk"] if k == "sdk" else short[k])
            colors.append("tab:orange")
    if bars:
        ax.bar(range(len(bars)), bars, color=colors)
        ax.axhline(30, color="r", ls="--", lw=1, label="target 30 µs")
        ax.set_xticks(range(len(bars)), labels, fontsize=7, rotation=30)
        ax.set_ylabel("µs per streamed event")
        ax.set_title("2/3. Per event: in-process CPU (blue), through stdio wall (orange)")
        ax.legend(fontsize=8)
    ax = axes[1][0]
    if st:
        names = list(STDIO_LABELS)
        vals = [p50(pooled(st[k]["rounds"], "total")) * 1e3 for k in names]
        v99 = [pct(pooled(st[k]["rounds"], "total"), 99) * 1e3 for k in names]
        ax.bar(range(len(names)), vals, color="tab:orange", label="p50")
        ax.scatter(range(len(names)), v99, marker="_", s=300, color="k", label="p99")
        if inp:
            ideal = p50(pooled(st["floor"]["rounds"], "total")) + p50(pooled(inp["httpx"]["rounds"], "total"))
            ax.axhline(1.1 * ideal * 1e3, color="r", ls="--", lw=1, label="target 1.1x (floor + raw httpx)")
        ax.set_xticks(range(len(names)), [short[k] if k != "sdk" else "SDK OAICompat\nplugin" for k in names],
                      fontsize=8)
        ax.set_ylim(0, max(vals) * 2.5)
        ax.set_ylabel("ms per short request")
        ax.set_title("3. Through the plugin process (stdio)")
        ax.legend(fontsize=8)
    ax = axes[1][1]
    if cc:
        for kind, levels in cc["levels"].items():
            for mode in ("steady", "burst"):
                pts = [(int(n), pct(m[mode]["added_ttft"], 99) * 1e3) for n, m in levels.items() if mode in m]
                if pts:
                    pts.sort()
                    ax.plot([p[0] for p in pts], [max(p[1], 0.1) for p in pts], marker="o",
                            label=f"{short[kind] if kind != 'sdk' else 'SDK peer'} ({mode})".replace("\n", " "))
        ax.axhline(20, color="r", ls="--", lw=1, label="target 20 ms")
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        lv = sorted({int(n) for levels in cc["levels"].values() for n in levels})
        ax.set_xticks(lv, [str(n) for n in lv])
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("added TTFT p99 (ms)")
        ax.set_title("4. Concurrency (R1 pacing: 100 ms TTFT, 30 ms/token)")
        ax.legend(fontsize=8)
    m = res["machine"]
    fig.suptitle(f"DeepSeek Self-Hosted plugin, loopback, {m['cores']} cores {m['cpu']}, no GPU "
                 f"({res['mode']} run)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
