"""One in-process contender, in a process of its own; prints its samples as one JSON line.

    python -m bench.perf.worker CONTENDER URL [--mode short,long] [--n N] [--streams S] [--tokens T]

Contenders (each is the code a user of it would write, against the same simulator URL):

* ``httpx``        bare httpx: one process-wide ``httpx.Client`` (warm keep-alive pool),
                   ``iter_lines`` + ``json.loads``, the delta's reasoning/content picked out.
* ``httpx-gevent`` the same after ``import dify_plugin`` (gevent-patched, as in a plugin process).
* ``engine``       this plugin's engine: ``ChatClient(parse_settings(creds)).stream(build_body(..))``
                   fed to ``AnswerAssembler`` (no Dify import, no gevent).
* ``dify``         the Dify class ``models/llm/llm.py:DeepSeekSelfHostedLLM.invoke`` (gevent-patched).
* ``sdk``          the SDK's ``OAICompatLargeLanguageModel.invoke``, same endpoint (gevent-patched).

Modes: ``short`` = sequential short answers (``max_tokens`` 3): time to the first text and to
the end of each request. ``long`` = streams of ``--tokens`` one-token events: process CPU time
(``time.process_time``: all threads) and wall time per server event.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# BENCH_PLUGIN_ROOT: measure another checkout of this plugin (e.g. with a proposed fix)
PLUGIN_ROOT = Path(os.environ.get("BENCH_PLUGIN_ROOT") or ROOT)
sys.path.insert(0, str(PLUGIN_ROOT))  # its deepseek_engine and models, imported below

MODEL = "deepseek-r1"  # catalogue model of this plugin
SERVED = "deepseek-ai/DeepSeek-R1"  # what the simulator serves
SHORT_PROMPT = "hi"
LONG_PROMPT = "[[long]] write on"


def _messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


# ---------------------------------------------------------------------------------------------
# contenders: each returns run(prompt, max_tokens) -> iterator of text pieces (may be "")
# ---------------------------------------------------------------------------------------------
def make_httpx(url: str, gevent: bool):
    if gevent:
        import dify_plugin  # noqa: F401  - patches the process the way a plugin process is patched
    import httpx

    client = httpx.Client(trust_env=False, timeout=httpx.Timeout(60.0, connect=10.0))
    endpoint = url + "/chat/completions"
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
    loads = json.loads

    def run(prompt: str, max_tokens: int):
        body = {"model": SERVED, "messages": _messages(prompt), "max_tokens": max_tokens,
                "stream": True, "stream_options": {"include_usage": True}}
        with client.stream("POST", endpoint, content=json.dumps(body).encode(), headers=headers) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    continue  # read to the end of the body, so the connection goes back to the pool
                obj = loads(data)
                choices = obj.get("choices")
                if choices:
                    d = choices[0].get("delta") or {}
                    yield (d.get("reasoning") or "") + (d.get("content") or "")

    return run


def _creds(url: str) -> dict:
    return {"endpoint_urls": url, "api_key": None, "served_model_name": SERVED}


def make_engine(url: str):
    from deepseek_engine import AnswerAssembler, ChatClient, build_body, parse_settings

    creds = _creds(url)

    def run(prompt: str, max_tokens: int):
        # what the adapter does per request: settings from the credentials, a ChatClient over
        # the process-wide pool, the body, the assembler
        client = ChatClient(parse_settings(creds))
        answer = AnswerAssembler(True)
        body = build_body(SERVED, _messages(prompt), {"max_tokens": max_tokens})
        for delta in client.stream(body):
            piece = answer.feed(delta)
            if piece is not None:
                yield piece.text
        yield answer.finish().text

    return run


def _prompt_objects(prompt: str):
    from dify_plugin.entities.model.message import UserPromptMessage

    return [UserPromptMessage(content=prompt)]


def make_dify(url: str):
    import yaml
    from dify_plugin.entities.model import AIModelEntity

    from models.llm.llm import DeepSeekSelfHostedLLM

    schemas = [AIModelEntity(**yaml.safe_load(p.read_text()))
               for p in sorted((PLUGIN_ROOT / "models" / "llm").glob("*.yaml"))
               if not p.name.startswith("_")]
    llm = DeepSeekSelfHostedLLM(schemas)
    creds = _creds(url)

    def run(prompt: str, max_tokens: int):
        for chunk in llm.invoke(MODEL, creds, _prompt_objects(prompt), {"max_tokens": max_tokens},
                                None, None, True, "bench-user"):
            yield chunk.delta.message.content or ""

    return run


def make_sdk(url: str):
    import importlib.util

    path = ROOT / "bench" / "oaicompat_plugin" / "models" / "llm" / "llm.py"
    spec = importlib.util.spec_from_file_location("oaicompat_peer_llm", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    llm = mod.OAICompatLLM([])
    creds = {"endpoint_url": url, "mode": "chat", "context_size": "1000000",
             "max_tokens_to_sample": "100000", "endpoint_model_name": SERVED}

    def run(prompt: str, max_tokens: int):
        for chunk in llm.invoke(SERVED, creds, _prompt_objects(prompt), {"max_tokens": max_tokens},
                                None, None, True, "bench-user"):
            yield chunk.delta.message.content or ""

    return run


def make(contender: str, url: str):
    if contender == "httpx":
        return make_httpx(url, gevent=False)
    if contender == "httpx-gevent":
        return make_httpx(url, gevent=True)
    if contender == "engine":
        return make_engine(url)
    if contender == "dify":
        return make_dify(url)
    if contender == "sdk":
        return make_sdk(url)
    raise SystemExit(f"unknown contender {contender!r}")


# ---------------------------------------------------------------------------------------------
def short(run, n: int, warmup: int) -> dict:
    pc, cpu = time.perf_counter, time.process_time
    ttft, total = [], []
    for _ in range(warmup):
        for _ in run(SHORT_PROMPT, 3):
            pass
    c0 = cpu()
    for i in range(warmup, warmup + n):
        t0 = pc()
        first = None
        for text in run(SHORT_PROMPT, 3):
            if first is None and text:
                first = pc()
        t1 = pc()
        if first is None:
            raise RuntimeError("no text in a short answer")
        if i >= warmup:
            ttft.append(first - t0)
            total.append(t1 - t0)
    return {"ttft": ttft, "total": total, "cpu_per_request": [(cpu() - c0) / max(n, 1)]}


def long(run, n: int, warmup: int, tokens: int) -> dict:
    pc, cpu = time.perf_counter, time.process_time
    cpu_per, wall_per = [], []
    for i in range(warmup + n):
        gc.collect()
        c0, t0 = cpu(), pc()
        pieces = 0
        for _ in run(LONG_PROMPT, tokens):
            pieces += 1
        c1, t1 = cpu(), pc()
        if pieces < 2:
            raise RuntimeError(f"long stream of {tokens} tokens gave {pieces} pieces")
        if i >= warmup:
            cpu_per.append((c1 - c0) / tokens)
            wall_per.append((t1 - t0) / tokens)
    return {"cpu_per_token": cpu_per, "wall_per_token": wall_per}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("contender")
    ap.add_argument("url")
    ap.add_argument("--mode", default="short,long", help="short, long or both (comma-separated)")
    ap.add_argument("--n", type=int, default=200, help="short requests measured")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--streams", type=int, default=4, help="long streams measured")
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--profile", help="write a pyinstrument text profile of the measured part here")
    a = ap.parse_args()
    modes = a.mode.split(",")
    run = make(a.contender, a.url)
    profiler = None
    if a.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0001)
        short(run, 0, a.warmup)  # warm up outside the profile: only the steady state is profiled
        a.warmup = 0
        profiler.start()
    out: dict = {}
    if "short" in modes:
        out.update(short(run, a.n, a.warmup))
    if "long" in modes:
        out.update(long(run, a.streams, 1, a.tokens))
    if profiler is not None:
        profiler.stop()
        Path(a.profile).write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
