"""Every injected fault, observed from a plain httpx client (or a raw socket)."""

import json
import socket
import time
from itertools import pairwise

import httpx
import pytest

from tests.sim.simtest_util import HI, post_json_raw, sse_parse

CHAT = {"model": "deepseek-r1", "messages": HI}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


def _stream_raw(client, body=STREAM):
    """Return (datas, error) for a streamed request; error is the exception raised mid-body, if any."""
    buf = b""
    try:
        with client.stream("POST", "/chat/completions", json=body) as r:
            assert r.status_code == 200
            for part in r.iter_raw():
                buf += part
    except httpx.HTTPError as e:
        return sse_parse(buf)[0], e
    return sse_parse(buf)[0], None


def test_reset_before_headers(sim, client):
    sim.inject("reset_before_headers")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        client.post("/chat/completions", json=CHAT)
    assert sim.requests[-1].body == CHAT  # the request was read first
    # A raw socket sees a real RST, not an orderly close.
    sim.inject("reset_before_headers")
    with socket.create_connection(("127.0.0.1", sim.port), timeout=2) as s:
        s.sendall(post_json_raw("/v1/chat/completions", CHAT))
        with pytest.raises(ConnectionResetError):
            while s.recv(4096):
                pass
    assert client.post("/chat/completions", json=CHAT).status_code == 200


def test_status_fault_default_body_and_headers(sim, client):
    sim.inject("status", status=429, headers={"Retry-After": "1"})
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"] == {"message": "rate limited", "type": "RateLimitError", "param": None, "code": 429}
    sim.inject("status", status=503)
    r = client.post("/chat/completions", json=STREAM)
    assert r.status_code == 503 and r.json()["error"]["message"] == "Service Unavailable"
    sim.inject("status", status=500, body="oops")
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 500 and r.text == "oops" and r.headers["content-type"].startswith("text/plain")
    assert client.post("/chat/completions", json=CHAT).status_code == 200


def test_status_fault_sglang_envelope(make_sim):
    sim = make_sim(flavor="sglang")
    sim.inject("status", status=503)
    body = httpx.post(sim.base_url + "/chat/completions", json=CHAT).json()
    assert body["object"] == "error" and body["code"] == 503


def test_fault_count_fifo_and_clear(sim, client):
    sim.inject("status", count=2, status=503)
    sim.inject("status", status=429)
    codes = [client.post("/chat/completions", json=CHAT).status_code for _ in range(4)]
    assert codes == [503, 503, 429, 200]
    # Only chat requests consume faults.
    sim.inject("status", status=429)
    assert client.get("/models").status_code == 200
    assert [f.kind for f in sim.pending_faults] == ["status"]
    sim.clear_faults()
    assert client.post("/chat/completions", json=CHAT).status_code == 200
    with pytest.raises(ValueError):
        sim.inject("no_such_fault")


def test_html_502(sim, client):
    sim.inject("html_502")
    r = client.post("/chat/completions", json=STREAM)
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in r.text and "nginx" in r.text


def test_malformed_chunk_then_continue(sim, client):
    sim.inject("malformed_chunk", after=3)
    datas, err = _stream_raw(client)
    assert err is None
    assert datas[3] == '{"id": broken'
    with pytest.raises(json.JSONDecodeError):
        json.loads(datas[3])
    assert all(json.loads(d) for d in datas[:3] + datas[4:-1])
    assert datas[-1] == "[DONE]"
    # Non-stream: a 200 whose body is not JSON.
    sim.inject("malformed_chunk")
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()


def test_malformed_chunk_then_end(sim, client):
    sim.inject("malformed_chunk", after=1, then="end")
    datas, err = _stream_raw(client)
    assert err is None and len(datas) == 2 and datas[1] == '{"id": broken'


@pytest.mark.parametrize("rst", [False, True])
def test_drop_mid_stream(sim, client, rst):
    sim.inject("drop_mid_stream", after=4, rst=rst)
    datas, err = _stream_raw(client)
    assert isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError))
    if not rst:
        assert len(datas) == 4  # FIN after flushing: everything before the drop arrives
    assert "[DONE]" not in datas
    # Non-stream: Content-Length promised, half delivered.
    sim.inject("drop_mid_stream", rst=rst)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/chat/completions", json=CHAT)
    assert client.post("/chat/completions", json=CHAT).status_code == 200


def test_stall_mid_stream(sim, client):
    sim.inject("stall_mid_stream", after=2, seconds=0.3)
    stamps = []
    with client.stream("POST", "/chat/completions", json=STREAM) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                stamps.append((time.monotonic(), line))
    gaps = [b[0] - a[0] for a, b in pairwise(stamps)]
    assert gaps[1] >= 0.25 and max(gaps[:1] + gaps[2:]) < 0.2
    assert stamps[-1][1] == "data: [DONE]"
    # Non-stream: headers arrive, the body waits.
    sim.inject("stall_mid_stream", seconds=0.3)
    t0 = time.monotonic()
    with client.stream("POST", "/chat/completions", json=CHAT) as r:
        t_headers = time.monotonic() - t0
        r.read()
    assert t_headers < 0.2 and time.monotonic() - t0 >= 0.25
    assert r.json()["choices"][0]["finish_reason"] == "stop"


def test_no_done(sim, client):
    sim.inject("no_done")
    datas, err = _stream_raw(client)
    assert err is None
    assert "[DONE]" not in datas
    chunks = [json.loads(d) for d in datas]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert not any(c.get("usage") for c in chunks)
    # after=N: a clean but truncated stream.
    sim.inject("no_done", after=3)
    datas, err = _stream_raw(client)
    assert err is None and len(datas) == 3


def test_slow_headers(sim, client):
    sim.inject("slow_headers", seconds=0.3)
    t0 = time.monotonic()
    with client.stream("POST", "/chat/completions", json=STREAM) as r:
        assert time.monotonic() - t0 >= 0.28
        assert r.status_code == 200
        r.read()
    with pytest.raises(httpx.ReadTimeout):
        sim.inject("slow_headers", seconds=0.5)
        client.post("/chat/completions", json=CHAT, timeout=0.1)


def test_error_event(sim, client):
    sim.inject("error_event", after=5)
    datas, err = _stream_raw(client)
    assert err is None
    assert json.loads(datas[5]) == {"error": {"message": "Internal server error: the engine died",
                                              "type": "InternalServerError", "param": None, "code": 500}}
    assert datas[-1] == "[DONE]" and len(datas) == 7
    sim.inject("error_event")
    r = client.post("/chat/completions", json=CHAT)
    assert r.status_code == 500 and r.json()["error"]["type"] == "InternalServerError"


def test_fault_after_beyond_stream_fires_before_end(sim, client):
    sim.inject("drop_mid_stream", after=10_000)
    datas, err = _stream_raw(client)
    assert err is not None and datas[-1] == "[DONE]"
