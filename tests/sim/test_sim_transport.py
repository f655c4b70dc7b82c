"""Lifecycle, timing, SSE quirks, concurrency and the CLI of deepseek_sim."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from deepseek_sim import SimConfig, Simulator
from deepseek_sim.script import ANSWER, REASONING
from tests.sim.simtest_util import (
    HI,
    VLLM_ANSWER,
    VLLM_REASONING,
    chunks_of,
    collect,
    decode_chunked,
    post_json_raw,
    raw_exchange,
    sse_parse,
    wait_for,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_restart_on_same_port():
    sim = Simulator(SimConfig()).start()
    port = sim.port
    try:
        assert httpx.get(sim.root_url + "/health").status_code == 200
        sim.stop()
        assert _refused(port)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health")
        sim.start()  # same instance: same port
        assert sim.port == port
        assert httpx.get(sim.root_url + "/health").status_code == 200
        sim.stop()
        # A new instance on the fixed port works too.
        with Simulator(SimConfig(), port=port) as again:
            assert again.base_url == f"http://127.0.0.1:{port}/v1"
            assert httpx.post(again.base_url + "/chat/completions", json={"messages": HI}).status_code == 200
        assert _refused(port)
    finally:
        sim.stop()


def test_port_in_use_raises(sim):
    with pytest.raises(OSError):
        Simulator(SimConfig(), port=sim.port).start()


def test_stop_closes_live_connections_promptly():
    sim = Simulator(SimConfig(ttft=30)).start()
    errors = []

    def consume():
        try:
            with httpx.Client(base_url=sim.base_url, timeout=10) as c:
                with c.stream("POST", "/chat/completions", json={"messages": HI, "stream": True}) as r:
                    r.read()
        except httpx.HTTPError as e:
            errors.append(e)

    idle = socket.create_connection(("127.0.0.1", sim.port))  # an idle keep-alive connection
    t = threading.Thread(target=consume)
    t.start()
    assert wait_for(lambda: sim.in_flight == 1 and sim.open_connections == 2)
    t0 = time.monotonic()
    sim.stop()
    assert time.monotonic() - t0 < 1.0
    t.join(2)
    assert not t.is_alive() and len(errors) == 1
    idle.settimeout(2)
    try:
        assert idle.recv(10) == b""
    except ConnectionResetError:
        pass
    idle.close()
    assert sim.open_connections == 0


def test_stop_ends_connections_accepted_while_stopping():
    """A connection accepted while stop() closes the listener (a plugin's health probe, say)
    is ended too: left pending, its task was destroyed with the loop ("Task was destroyed but
    it is pending!"), which pytest reported now and then as an unraisable exception."""
    for _ in range(25):  # the window is a few loop iterations wide: it took ~1 stop in 4
        sim = Simulator(SimConfig()).start()
        port, loop, done, held = sim.port, sim._loop, threading.Event(), []

        def knock(port: int, done: threading.Event, held: list) -> None:
            while not done.is_set():
                try:  # headers never finished, the connection held: the server waits in read_request
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=0.2))
                    held[-1].sendall(b"GET /health HTTP/1.1\r\n")
                    time.sleep(0.005)
                except OSError:
                    pass

        knockers = [threading.Thread(target=knock, args=(port, done, held), daemon=True) for _ in range(8)]
        for k in knockers:
            k.start()
        time.sleep(0.05)
        sim.stop()
        done.set()
        for k in knockers:
            k.join()
        left = asyncio.all_tasks(loop)
        for c in held:
            c.close()
        assert not left, left


def test_open_connections_tracks_client_close(sim):
    c = httpx.Client(base_url=sim.base_url)
    c.get("/models")
    assert sim.open_connections == 1
    c.close()
    assert wait_for(lambda: sim.open_connections == 0)
    assert sim.connections_opened == 1


def test_ttft_and_inter_token_pacing(make_sim):
    sim = make_sim(ttft=0.2, inter_token=0.01)
    stamps = []
    t0 = time.monotonic()
    with httpx.Client(base_url=sim.base_url) as c:
        with c.stream("POST", "/chat/completions", json={"messages": HI, "stream": True}) as r:
            t_headers = time.monotonic() - t0
            for line in r.iter_lines():
                if line.startswith("data:"):
                    stamps.append(time.monotonic() - t0)
    assert t_headers < 0.15  # headers leave at once, like Starlette's StreamingResponse
    assert stamps[0] >= 0.19  # the role chunk waits for the first token
    n_tokens = len(REASONING.split()) + len(ANSWER.split())
    expected_end = 0.2 + (n_tokens - 1) * 0.01
    assert expected_end - 0.02 <= stamps[-1] < expected_end + 0.25
    # Non-stream takes the same generation time.
    t0 = time.monotonic()
    httpx.post(sim.base_url + "/chat/completions", json={"messages": HI})
    assert time.monotonic() - t0 >= expected_end - 0.02


def test_sse_quirks_split_reads_comments_multiline(make_sim):
    sim = make_sim(sse_quirks=True)
    body = {"messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    reads = raw_exchange(sim.port, post_json_raw("/v1/chat/completions", body, "Connection: close\r\n"))
    raw = b"".join(reads)
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    # Some reads end in the middle of an event (the event was split across TCP writes).
    body_reads = reads[1:] if reads[0].endswith(b"\r\n\r\n") else reads
    mid_event = [r for r in body_reads if not r.endswith(b"\n\n\r\n")]
    assert len(mid_event) >= 3
    decoded = decode_chunked(chunked)
    assert b": keep-alive\n\n" in decoded
    assert b',\ndata: "choices":' in decoded  # multi-line data event
    datas, comments = sse_parse(decoded)
    assert comments >= 3
    assert datas[-1] == "[DONE]"
    chunks = chunks_of(datas)  # every joined event is still valid JSON
    got = collect(chunks)
    assert got["reasoning"] == VLLM_REASONING and got["content"] == VLLM_ANSWER
    assert got["usage"]["completion_tokens"] == len(REASONING.split()) + len(ANSWER.split())


def test_sse_quirks_with_httpx_and_unicode(make_sim):
    sim = make_sim(sse_quirks=True)
    text = "[[echo]] ünïcödé ✓✓✓ 深度求索 " * 3
    with httpx.Client(base_url=sim.base_url) as c:
        with c.stream("POST", "/chat/completions",
                      json={"messages": [{"role": "user", "content": text}], "stream": True}) as r:
            parts = list(r.iter_raw())
    assert any(not p.endswith(b"\n\n") for p in parts)
    datas, _ = sse_parse(b"".join(parts))
    assert collect(chunks_of(datas))["content"] == "\n\n" + text


def test_many_concurrent_streams(make_sim):
    sim = make_sim(inter_token=0.002)

    async def run():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=sim.base_url, limits=limits, timeout=10) as c:
            async def one(i):
                body = {"messages": [{"role": "user", "content": f"[[echo]] n{i}"}], "stream": True}
                async with c.stream("POST", "/chat/completions", json=body) as r:
                    raw = b"".join([b async for b in r.aiter_bytes()])
                return collect(chunks_of(sse_parse(raw)[0]))["content"]

            return await asyncio.gather(*(one(i) for i in range(64)))

    t0 = time.monotonic()
    results = asyncio.run(run())
    assert results == [f"\n\n[[echo]] n{i}" for i in range(64)]
    assert sim.connections_opened == 64
    assert time.monotonic() - t0 < 3


def test_cli_runs_and_stops():
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepseek_sim", "--port", "0", "--model", "ds-cli", "--shape", "reasoning_content",
         "--flavor", "sglang", "--max-model-len", "2048", "--api-key", "k"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("deepseek_sim listening on http://127.0.0.1:") and line.endswith("/v1")
        base = line.rsplit(" ", 1)[1]
        assert int(base.split(":")[2].split("/")[0]) > 0
        h = {"Authorization": "Bearer k"}
        models = httpx.get(base + "/models", headers=h).json()
        assert models["data"][0]["id"] == "ds-cli" and models["data"][0]["max_model_len"] == 2048
        msg = httpx.post(base + "/chat/completions", json={"messages": HI}, headers=h).json()["choices"][0]["message"]
        assert msg["reasoning_content"] == REASONING
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_client_disconnect_ends_generation_promptly(make_sim):
    sim = make_sim(ttft=5)
    # Waiting for the first token (stream) or for the whole body (non-stream): the client gives up.
    for stream in (True, False):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(sim.base_url + "/chat/completions", json={"messages": HI, "stream": stream}, timeout=0.2)
        assert wait_for(lambda: sim.in_flight == 0, timeout=1.0)
    # Mid-stream: the client stops reading a long stream.
    sim.config.ttft = 0
    sim.config.inter_token = 0.01
    with httpx.Client(base_url=sim.base_url) as c:
        body = {"messages": [{"role": "user", "content": "[[long]]"}], "stream": True}
        with c.stream("POST", "/chat/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)
            assert sim.in_flight == 1
    assert wait_for(lambda: sim.in_flight == 0 and sim.open_connections == 0, timeout=1.0)
