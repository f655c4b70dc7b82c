"""Helpers shared by the deepseek_sim tests: SSE parsing and raw-socket HTTP."""

from __future__ import annotations

import json
import socket
import time

import httpx

from deepseek_sim.script import ANSWER, REASONING, TOOL_REASONING

HI = [{"role": "user", "content": "hi"}]
# vLLM's reasoning parser cuts R1's "…\n</think>\n\n…" at the tag: the whitespace stays on both sides.
VLLM_REASONING = REASONING + "\n"
VLLM_ANSWER = "\n\n" + ANSWER
VLLM_TOOL_REASONING = TOOL_REASONING + "\n"
WEATHER_TOOL = [{
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city",
                 "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}},
}]


def sse_parse(body: bytes) -> tuple[list[str], int]:
    """Spec-style SSE parse: returns (data payloads, number of comment lines).

    Multiple ``data:`` lines of one event are joined with "\\n".
    """
    datas, comments, cur = [], 0, []
    for line in body.decode("utf-8").split("\n"):
        line = line.rstrip("\r")
        if line == "":
            if cur:
                datas.append("\n".join(cur))
                cur = []
        elif line.startswith(":"):
            comments += 1
        elif line.startswith("data:"):
            v = line[5:]
            cur.append(v[1:] if v.startswith(" ") else v)
    if cur:
        datas.append("\n".join(cur))
    return datas, comments


def stream_chat(client: httpx.Client, body: dict, **kw):
    """POST a streaming chat; returns (response, data payloads, comment count)."""
    body = {"model": "deepseek-r1", "messages": HI, **body, "stream": True}
    with client.stream("POST", "/chat/completions", json=body, **kw) as r:
        raw = b"".join(r.iter_bytes())
    datas, comments = sse_parse(raw)
    return r, datas, comments


def deltas_of(chunks: list[dict]) -> list[dict]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def chunks_of(datas: list[str]) -> list[dict]:
    return [json.loads(d) for d in datas if d != "[DONE]"]


def collect(chunks: list[dict], field: str = "reasoning") -> dict:
    """Reassemble a streamed reply the way a client would."""
    out = {"reasoning": "", "content": "", "tool_calls": {}, "finish_reason": None, "usage": None}
    for c in chunks:
        if c.get("usage"):
            out["usage"] = c["usage"]
        for ch in c["choices"]:
            d = ch["delta"]
            out["reasoning"] += d.get(field) or ""
            out["content"] += d.get("content") or ""
            for tc in d.get("tool_calls") or []:
                slot = out["tool_calls"].setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if ch.get("finish_reason"):
                out["finish_reason"] = ch["finish_reason"]
    return out


def raw_exchange(port: int, request: bytes, timeout: float = 5.0) -> list[bytes]:
    """Send raw bytes, read until the server closes; returns each recv() result."""
    reads = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        while True:
            data = s.recv(65536)
            if not data:
                break
            reads.append(data)
    return reads


def decode_chunked(body: bytes) -> bytes:
    out, i = [], 0
    while True:
        j = body.index(b"\r\n", i)
        size = int(body[i:j].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[j + 2:j + 2 + size])
        i = j + 2 + size + 2


def split_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def post_json_raw(path: str, body: dict, extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra}\r\n").encode() + data


def wait_for(pred, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
