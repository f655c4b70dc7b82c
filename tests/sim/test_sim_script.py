"""scripts/sim: the operator's simulator command starts the shape asked for on the port asked for,
prints the URL, misbehaves as told, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def _start(*args: str) -> tuple[subprocess.Popen, str, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "scripts.sim", "--port", "0", "--speed", "0", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.strip().startswith("URL:"):
            return proc, line.split("URL:", 1)[1].strip(), lines
    proc.kill()
    proc.stdout.close()
    raise AssertionError(f"scripts/sim printed no URL: {lines}")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    with proc.stdout:
        out = proc.stdout.read()  # not communicate(timeout=...): it skips what readline() already buffered
    assert proc.wait(timeout=15) == 0, out
    return out


def test_sim_serves_the_shape_with_the_fault_then_stops_on_ctrl_c():
    proc, url, lines = _start("--serve", "r1-no-parser", "--fault", "503", "--fault-count", "1")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        models = httpx.get(url + "/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["deepseek-ai/DeepSeek-R1"]
        body = {"model": "deepseek-ai/DeepSeek-R1", "messages": [{"role": "user", "content": "hi"}]}
        first = httpx.post(url + "/chat/completions", json=body, timeout=10)
        assert first.status_code == 503  # the fault, once
        second = httpx.post(url + "/chat/completions", json=body, timeout=10)
        assert second.status_code == 200
        content = second.json()["choices"][0]["message"]["content"]
        assert "</think>" in content  # no reasoning parser: the reasoning arrives in the text
    finally:
        out = "\n".join(lines) + "\n" + _stop(proc)
    assert "Ctrl-C stops it." in out and out.rstrip().endswith("simulator stopped")


def test_sim_refuses_a_port_in_use_with_a_message():
    proc, url, _ = _start()
    try:
        port = url.rsplit(":", 1)[1].split("/")[0]
        second = subprocess.run([sys.executable, "-m", "scripts.sim", "--port", port], cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "--port" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        _stop(proc)
