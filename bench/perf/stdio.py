"""Plugins driven as the Dify daemon drives them: ``python -m main`` over JSON lines on stdio.

Three plugins on the same SDK (dify_plugin 0.10.2), the same harness and the same simulator:

* ``floor``  tests/protocol/toy_plugin: yields LLMResultChunks with no HTTP: the runtime's own cost.
* ``sdk``    bench/oaicompat_plugin: the SDK's ``OAICompatLargeLanguageModel`` unchanged.
* ``plugin`` this repository's root.

Times come from the harness: ``t_sent`` just before the request line is written, ``_t`` when the
reader thread has read a line. Plugin CPU comes from ``/proc/<pid>/task/*/schedstat`` (ns, every
thread of the plugin process), so it excludes the harness and the simulator.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.perf.daemon import LeanDaemon, LeanResult
from tests.protocol.harness import PluginProcess, user_message

ROOT = Path(__file__).resolve().parents[2]
SERVED = "deepseek-ai/DeepSeek-R1"
PLUGINS = {
    "floor": ROOT / "tests" / "protocol" / "toy_plugin",
    "sdk": ROOT / "bench" / "oaicompat_plugin",
    "bare": ROOT / "bench" / "httpx_plugin",
    # BENCH_PLUGIN_ROOT: measure another checkout of this plugin (e.g. with a proposed fix)
    "plugin": Path(os.environ.get("BENCH_PLUGIN_ROOT") or ROOT),
}


def plugin_cpu_ns(pid: int) -> int:
    """CPU time (ns) used so far by every thread of ``pid``."""
    total = 0
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that just ended
    return total


@dataclass
class Target:
    """How to ask one plugin for a short answer and for a long stream."""

    kind: str
    url: str | None = None
    served_name: bool = True  # this plugin: served_model_name given (else discovered)
    pace: tuple[float, float] | None = None  # floor: (TTFT, gap) in s, paced by the toy itself

    @property
    def provider(self) -> str:
        return {"floor": "toy", "sdk": "oaicompat", "bare": "bare",
                "plugin": "deepseek_selfhosted"}[self.kind]

    @property
    def model(self) -> str:
        return {"floor": "toy-chat", "sdk": SERVED, "bare": "bare", "plugin": "deepseek-r1"}[self.kind]

    @property
    def creds(self) -> dict:
        if self.kind == "floor":
            return {"api_key": "good"}
        if self.kind == "bare":
            return {"endpoint_url": self.url}
        if self.kind == "sdk":
            return {"endpoint_url": self.url, "mode": "chat", "context_size": "1000000",
                    "max_tokens_to_sample": "100000", "endpoint_model_name": SERVED}
        return {"endpoint_urls": self.url, "api_key": None,
                "served_model_name": SERVED if self.served_name else None}

    def request(self, tokens: int) -> tuple[list, dict]:
        """(prompt, params) for an answer of ``tokens`` server events (toy: chunks)."""
        if self.kind == "floor":
            params = {"chunks": tokens, "chunk_text": " lorem"}
            if self.pace:
                params.update(ttft_ms=round(self.pace[0] * 1e3), gap_ms=round(self.pace[1] * 1e3))
            return [user_message("hi")], params
        prompt = "hi" if tokens <= 3 else "[[long]] write on"
        return [user_message(prompt)], {"max_tokens": tokens}


def start(kind: str, env: dict | None = None) -> LeanDaemon:
    return LeanDaemon(PLUGINS[kind], python=sys.executable, env=env).start(ready_timeout=90)


def invoke(p: PluginProcess, t: Target, tokens: int, timeout: float = 120.0):
    prompt, params = t.request(tokens)
    r = p.invoke_llm(t.provider, t.model, t.creds, prompt, params, timeout=timeout)
    if r.error is not None or not r.ended:
        raise RuntimeError(f"{t.kind}: {r.error or r.failure}")
    return r


def pin(pid: int, cpus: set[int]) -> bool:
    """Every thread of ``pid`` onto ``cpus`` (threads made later inherit it); False where the
    machine does not allow it (fewer cores, no permission)."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), cpus)
    except OSError:
        return False
    return True


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` (MiB)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def first_text_time(r) -> float | None:
    for m in r.messages:
        if m.get("type") == "stream":
            if (m["data"].get("delta") or {}).get("message", {}).get("content"):
                return m["_t"]
    return None


def short_requests(p: PluginProcess, t: Target, n: int, warmup: int) -> dict:
    ttft, total = [], []
    for _ in range(warmup):
        invoke(p, t, 3)
    c0 = plugin_cpu_ns(p.pid)
    for i in range(warmup, warmup + n):
        r = invoke(p, t, 3)
        if i >= warmup:
            total.append(r.t_end - r.t_sent)
            ft = first_text_time(r)
            ttft.append((ft or r.t_end) - r.t_sent)
    cpu = (plugin_cpu_ns(p.pid) - c0) / 1e9 / max(n, 1)
    return {"ttft": ttft, "total": total, "cpu_per_request": [cpu]}


def long_streams(p: PluginProcess, t: Target, n: int, warmup: int, tokens: int) -> dict:
    wall, cpu, chunks = [], [], []
    for i in range(warmup + n):
        c0 = plugin_cpu_ns(p.pid)
        r = invoke(p, t, tokens)
        c1 = plugin_cpu_ns(p.pid)
        if i >= warmup:
            t_first = r.messages[0]["_t"]
            wall.append((r.t_end - t_first) / tokens)
            cpu.append((c1 - c0) / 1e9 / tokens)
            chunks.append(len(r.chunks))
    return {"wall_per_token": wall, "cpu_per_token": cpu, "chunks_per_stream": chunks}


# ---------------------------------------------------------------------------------------------
# concurrency: N sessions at once in one plugin process
# ---------------------------------------------------------------------------------------------
@dataclass
class Wave:
    n: int
    errors: list = field(default_factory=list)
    added_ttft: list = field(default_factory=list)  # first text - sent - the server's own TTFT
    added_total: list = field(default_factory=list)  # end - sent - the server's own duration
    wall: float = 0.0
    gaps: list = field(default_factory=list)  # between visible updates, every counted stream's
    max_gaps: list = field(default_factory=list)  # each counted stream's longest
    chunks: int = 0  # chunks with text of the counted streams
    streams_done: int = 0  # streams ended well, ramp included (the CPU window's tokens)

    def record(self, r: LeanResult, ttft: float, total: float) -> None:
        times = r.text_times
        self.added_ttft.append((times[0] if times else r.t_end) - r.t_sent - ttft)
        self.added_total.append(r.t_end - r.t_sent - total)
        # between successive visible updates (chunks with text): what a reader sees
        gaps = [round(b - a, 4) for a, b in zip(times, times[1:], strict=False)]  # 0.1 ms: the raw file stays small
        self.gaps += gaps
        self.max_gaps.append(max(gaps, default=0.0))
        self.chunks += len(times)


def concurrent_wave(p: LeanDaemon, t: Target, n: int, tokens: int, server_ttft: float,
                    server_itl: float, timeout: float = 120.0) -> Wave:
    """``n`` streams started together (a barrier), each ``tokens`` long, paced by the simulator."""
    wave = Wave(n)
    barrier = threading.Barrier(n + 1)
    lock = threading.Lock()
    ideal_total = server_ttft + (tokens - 1) * server_itl

    def one() -> None:
        prompt, params = t.request(tokens)
        barrier.wait()
        try:
            r = p.lean_invoke(t.provider, t.model, t.creds, prompt, params, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - counted, reported
            with lock:
                wave.errors.append(repr(e)[:200])
            return
        with lock:
            if r.error is not None or not r.ended:
                wave.errors.append(str(r.error or r.failure)[:200])
                return
            wave.streams_done += 1
            wave.record(r, server_ttft, ideal_total)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.monotonic()
    for th in threads:
        th.join(timeout + 10)
    wave.wall = time.monotonic() - t0
    return wave


def concurrent_steady(p: LeanDaemon, t: Target, n: int, tokens: int, server_ttft: float,
                      server_itl: float, duration: float, timeout: float = 120.0) -> Wave:
    """``n`` concurrent streams held for ``duration`` seconds: ``n`` closed-loop users, each
    starting its next stream when the last one ends, their first starts spread evenly over one
    stream's length (so arrivals are steady, as in production, not one burst). Streams that
    start during the first stream-length (the ramp) are not counted."""
    wave = Wave(n)
    lock = threading.Lock()
    ideal_total = server_ttft + (tokens - 1) * server_itl
    t0 = time.monotonic()
    stop_at = t0 + ideal_total + duration
    count_from = t0 + ideal_total

    def user(i: int) -> None:
        time.sleep(i * ideal_total / n)
        prompt, params = t.request(tokens)
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                r = p.lean_invoke(t.provider, t.model, t.creds, prompt, params, timeout=timeout)
            except Exception as e:  # noqa: BLE001 - counted, reported
                with lock:
                    wave.errors.append(repr(e)[:200])
                continue
            with lock:
                if r.error is not None or not r.ended:
                    wave.errors.append(str(r.error or r.failure)[:200])
                    continue
                wave.streams_done += 1
                if started >= count_from:
                    wave.record(r, server_ttft, ideal_total)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(duration + ideal_total + timeout)
    wave.wall = time.monotonic() - t0
    return wave


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")
