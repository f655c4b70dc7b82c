"""One protocol against bench/perf/h2server.py: the same httpx client code, HTTP/1.1 or HTTP/2.

    python -m bench.perf.h2worker URL --proto h1|h2 [--gevent] [--n N] [--tokens T] [--concurrency C]

Prints one JSON line: short-request times, CPU per streamed event, and C concurrent streams
(wall time, CPU, connections the client opened).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--proto", choices=("h1", "h2"), required=True)
    ap.add_argument("--gevent", action="store_true", help="patch like a plugin process first")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    if a.gevent:
        import dify_plugin  # noqa: F401
    import httpx

    opened = [0]

    h2 = a.proto == "h2"
    # prior knowledge over cleartext for h2 (no TLS on loopback, as for the HTTP/1.1 runs)
    client = httpx.Client(http1=not h2, http2=h2, trust_env=False,
                          timeout=httpx.Timeout(60.0, connect=10.0),
                          limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256))
    pool = client._transport._pool  # noqa: SLF001
    orig_create = pool.create_connection

    def create_connection(origin):
        opened[0] += 1
        return orig_create(origin)

    pool.create_connection = create_connection
    endpoint = a.url + "/chat/completions"
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}

    def run(max_tokens: int):
        body = {"model": "deepseek-ai/DeepSeek-R1", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": max_tokens, "stream": True}
        with client.stream("POST", endpoint, content=json.dumps(body).encode(), headers=headers) as r:
            if r.http_version != ("HTTP/2" if h2 else "HTTP/1.1"):
                raise RuntimeError(f"negotiated {r.http_version}")
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                d = json.loads(line[6:])["choices"][0]["delta"]
                yield (d.get("reasoning") or "") + (d.get("content") or "")

    pc, cpu = time.perf_counter, time.process_time
    ttft, total = [], []
    for i in range(a.warmup + a.n):
        t0 = pc()
        first = None
        for text in run(3):
            if first is None and text:
                first = pc()
        if i >= a.warmup:
            ttft.append(first - t0)
            total.append(pc() - t0)
    cpu_tok = []
    for _ in range(a.streams):
        c0 = cpu()
        for _ in run(a.tokens):
            pass
        cpu_tok.append((cpu() - c0) / a.tokens)

    # C concurrent streams of 200 events each, started together
    before = opened[0]
    barrier = threading.Barrier(a.concurrency + 1)
    errors = []

    def one() -> None:
        barrier.wait()
        try:
            for _ in run(200):
                pass
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=one) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    c0 = cpu()
    barrier.wait()
    t0 = pc()
    for t in threads:
        t.join()
    conc = {"wall": pc() - t0, "cpu": cpu() - c0, "connections": opened[0] - before,
            "errors": len(errors)}
    print(json.dumps({"ttft": ttft, "total": total, "cpu_per_token": cpu_tok, "concurrent": conc}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
