"""Non-chat endpoints, errors, auth and HTTP/1.1 connection handling of deepseek_sim."""

import json
import threading

import httpx
import pytest
from simtest_util import HI, decode_chunked, post_json_raw, raw_exchange, sse_parse, split_response, wait_for

from deepseek_sim import RecordedRequest


def test_auth_required_on_v1_only(make_sim):
    sim = make_sim(api_key="sekret")
    with httpx.Client(base_url=sim.base_url) as c:
        r = c.post("/chat/completions", json={"messages": HI})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == 401 and r.json()["error"]["message"]
        r = c.get("/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        ok = {"Authorization": "Bearer sekret"}
        assert c.get("/models", headers=ok).status_code == 200
        assert c.post("/chat/completions", json={"messages": HI}, headers=ok).status_code == 200
        assert c.get(sim.root_url + "/health").status_code == 200
        assert c.get(sim.root_url + "/metrics").status_code == 200
    assert sim.requests[-3].headers["authorization"] == "Bearer sekret"


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_unknown_model_404(make_sim, flavor):
    sim = make_sim(flavor=flavor)
    r = httpx.post(sim.base_url + "/chat/completions", json={"model": "gpt-4", "messages": HI})
    assert r.status_code == 404
    body = r.json()
    env = body["error"] if flavor == "vllm" else body
    if flavor == "sglang":
        assert body["object"] == "error"
    assert env["message"] == "The model `gpt-4` does not exist."
    assert env["type"] == "NotFoundError" and env["code"] == 404


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_400(make_sim, stream):
    sim = make_sim(max_model_len=100)
    messages = [{"role": "user", "content": "word " * 90}]
    r = httpx.post(sim.base_url + "/chat/completions",
                   json={"messages": messages, "max_tokens": 20, "stream": stream})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["message"] == ("This model's maximum context length is 100 tokens. However, your request has "
                              "94 input tokens. Please reduce the length of the input messages.")
    assert err["type"] == "BadRequestError" and err["code"] == 400
    # Without max_tokens the same prompt fits.
    assert httpx.post(sim.base_url + "/chat/completions", json={"messages": messages}).status_code == 200


def test_sglang_error_envelope_and_bad_json(make_sim):
    sim = make_sim(flavor="sglang")
    r = httpx.post(sim.base_url + "/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    body = r.json()
    assert body["object"] == "error" and body["type"] == "BadRequestError" and body["code"] == 400
    assert body["param"] is None
    assert sim.requests[-1].body is None and sim.requests[-1].raw_body == b"{not json"


def test_bad_requests_vllm(client):
    r = client.post("/chat/completions", content=b"[1,")
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"
    r = client.post("/chat/completions", json={"model": "deepseek-r1"})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = client.post("/chat/completions", json={"messages": HI, "max_tokens": 0})
    assert r.status_code == 400 and r.json()["error"]["message"] == "max_tokens must be at least 1, got 0."
    assert client.get("/chat/completions").status_code == 405


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_models(make_sim, flavor):
    sim = make_sim(flavor=flavor, served_model="ds-r1-distill", max_model_len=4096)
    data = httpx.get(sim.base_url + "/models").json()
    assert data["object"] == "list"
    (card,) = data["data"]
    assert card["id"] == "ds-r1-distill" and card["root"] == "ds-r1-distill"
    assert card["object"] == "model" and card["owned_by"] == flavor
    assert card["max_model_len"] == 4096
    if flavor == "vllm":
        assert card["parent"] is None and card["permission"][0]["object"] == "model_permission"


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_health(make_sim, flavor):
    sim = make_sim(flavor=flavor)
    r = httpx.get(sim.root_url + "/health")
    assert r.status_code == 200 and r.content == b""
    sim.healthy = False
    assert httpx.get(sim.root_url + "/health").status_code == 503
    sim.healthy = True
    assert httpx.get(sim.root_url + "/health").status_code == 200


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} missing in:\n{text}")


@pytest.mark.parametrize(
    "flavor,names",
    [
        ("vllm", ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")),
        ("sglang", ("sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage")),
    ],
)
def test_metrics(make_sim, flavor, names):
    sim = make_sim(flavor=flavor, num_running=2, num_waiting=3, kv_usage=0.25, ttft=0.4)
    r = httpx.get(sim.root_url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    running, waiting, kv = names
    assert f'{running}{{' in r.text and 'model_name="deepseek-r1"' in r.text
    assert f"# TYPE {running} gauge" in r.text
    assert _metric(r.text, running) == 2
    assert _metric(r.text, waiting) == 3
    assert _metric(r.text, kv) == 0.25
    other = "sglang:" if flavor == "vllm" else "vllm:"
    assert other not in r.text
    # An in-flight stream counts as running.
    t = threading.Thread(target=lambda: httpx.post(sim.base_url + "/chat/completions",
                                                   json={"messages": HI, "stream": True}))
    t.start()
    try:
        assert wait_for(lambda: sim.in_flight == 1)
        assert _metric(httpx.get(sim.root_url + "/metrics").text, running) == 3
    finally:
        t.join()
    assert _metric(httpx.get(sim.root_url + "/metrics").text, running) == 2
    sim.config.num_waiting = 7  # config changes apply at run time
    assert _metric(httpx.get(sim.root_url + "/metrics").text, waiting) == 7


def test_tokenize(make_sim):
    sim = make_sim(max_model_len=1234)
    r = httpx.post(sim.root_url + "/tokenize", json={"model": "deepseek-r1", "messages": HI})
    data = r.json()
    assert data["count"] == 5 and len(data["tokens"]) == 5 and data["max_model_len"] == 1234
    data = httpx.post(sim.root_url + "/tokenize", json={"prompt": "one two three"}).json()
    assert data["count"] == 3 and len(data["tokens"]) == 3
    # The count matches the chat endpoint's prompt_tokens.
    usage = httpx.post(sim.base_url + "/chat/completions", json={"messages": HI}).json()["usage"]
    assert usage["prompt_tokens"] == 5
    assert httpx.post(sim.root_url + "/tokenize", json={"model": "x", "prompt": "a"}).status_code == 404


def test_unknown_path_404(client, sim):
    r = client.get(sim.root_url + "/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    assert client.post("/completions-typo", json={}).status_code == 404


def test_keep_alive_single_connection(sim):
    with httpx.Client(base_url=sim.base_url) as c:
        for _ in range(3):
            assert c.post("/chat/completions", json={"messages": HI}).status_code == 200
            with c.stream("POST", "/chat/completions", json={"messages": HI, "stream": True}) as r:
                assert b"[DONE]" in r.read()
            assert c.get("/models").status_code == 200
            assert c.get(sim.root_url + "/health").status_code == 200
        # Errors keep the connection too.
        assert c.post("/chat/completions", json={"model": "nope", "messages": HI}).status_code == 404
        assert sim.open_connections == 1
    assert sim.connections_opened == 1
    assert wait_for(lambda: sim.open_connections == 0)
    assert len(sim.requests) == 13
    req = sim.requests[0]
    assert isinstance(req, RecordedRequest)
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.body == {"messages": HI} and "content-type" in req.headers


def test_connection_close_honoured(sim):
    # The server must close after answering, so reading to EOF terminates.
    reads = raw_exchange(sim.port, post_json_raw("/v1/chat/completions", {"messages": HI}, "Connection: close\r\n"))
    status, headers, body = split_response(b"".join(reads))
    assert status == 200 and headers["connection"] == "close"
    assert json.loads(body)["choices"][0]["message"]["content"]


def test_pipelined_requests_and_chunked_request_body(sim):
    payload = json.dumps({"messages": HI, "stream": True}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    req1 = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n" + chunked)
    req2 = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = b"".join(raw_exchange(sim.port, req1 + req2))
    first, second = raw.split(b"HTTP/1.1 200 OK", 2)[1:]
    datas, _ = sse_parse(decode_chunked(first.partition(b"\r\n\r\n")[2]))
    assert datas[-1] == "[DONE]"
    assert "content-length: 0" in second.decode().lower()
    assert sim.requests[0].body == {"messages": HI, "stream": True}
    assert sim.connections_opened == 1


def test_garbage_request_gets_400(sim):
    raw = b"".join(raw_exchange(sim.port, b"NOT HTTP AT ALL\r\n\r\n"))
    assert raw.startswith(b"HTTP/1.1 400")
