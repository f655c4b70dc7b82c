"""Non-chat endpoints, errors, auth and HTTP/1.1 connection handling of deepseek_sim."""

import json
import threading

import httpx
import pytest

from deepseek_sim import RecordedRequest
from tests.sim.simtest_util import HI, decode_chunked, post_json_raw, raw_exchange, split_response, sse_parse, wait_for


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
        assert env["param"] is None
    else:
        assert env["message"] == "The model `gpt-4` does not exist. Valid aliases: deepseek-r1."
        assert env["param"] == "model"
    assert env["type"] == "NotFoundError" and env["code"] == 404
    r = httpx.post(sim.root_url + "/tokenize", json={"model": "gpt-4", "prompt": "a"})
    assert r.status_code == 404 and "`gpt-4` does not exist" in r.text


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_over_context_400(make_sim, stream):
    sim = make_sim(max_model_len=100)
    messages = [{"role": "user", "content": "word " * 97}]  # 101 tokens
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": messages, "stream": stream})
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    # vLLM counts up to the limit plus one.
    assert r.json()["error"] == {
        "message": "This model's maximum context length is 100 tokens. However, your prompt contains at least 101 "
                   "input tokens, which exceeds this limit even without any output tokens. Please reduce the "
                   "length of the input prompt. (parameter=input_tokens, value=101)",
        "type": "BadRequestError", "param": "input_tokens", "code": 400}
    messages = [{"role": "user", "content": "word " * 200}]
    assert "at least 101 input tokens" in httpx.post(sim.base_url + "/chat/completions",
                                                     json={"messages": messages}).json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_prompt_plus_max_tokens_over_context_is_capped(make_sim, stream):
    sim = make_sim(max_model_len=100)
    messages = [{"role": "user", "content": "[[long]] " + "word " * 89}]  # 94 tokens
    body = {"messages": messages, "max_tokens": 20, "stream": stream,
            "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=sim.base_url) as c:
        if stream:
            from tests.sim.simtest_util import chunks_of, collect, stream_chat
            _, datas, _ = stream_chat(c, body)
            got = collect(chunks_of(datas))
            usage, finish = got["usage"], got["finish_reason"]
        else:
            data = c.post("/chat/completions", json=body).json()
            usage, finish = data["usage"], data["choices"][0]["finish_reason"]
    assert finish == "length"
    assert usage == {"prompt_tokens": 94, "completion_tokens": 6, "total_tokens": 100}


def test_sglang_rejects_prompt_plus_max_tokens_over_context(make_sim):
    sim = make_sim(max_model_len=100, flavor="sglang")
    messages = [{"role": "user", "content": "word " * 90}]
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": messages, "max_tokens": 20})
    assert r.status_code == 400
    assert r.json()["message"] == (
        "Requested token count exceeds the model's maximum context length of 100 tokens. You requested a total "
        "of 114 tokens: 94 tokens from the input messages and 20 tokens for the completion. Please reduce the "
        "number of tokens in the input messages or the completion to fit within the limit.")
    # SGLang refuses prompt + max_tokens == context too (>=); one less fits
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": messages, "max_tokens": 6})
    assert r.status_code == 400
    assert httpx.post(sim.base_url + "/chat/completions",
                      json={"messages": messages, "max_tokens": 5}).status_code == 200
    assert httpx.post(sim.base_url + "/chat/completions", json={"messages": messages}).status_code == 200
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": [{"role": "user", "content": "word " * 100}]})
    assert r.status_code == 400
    assert r.json()["message"] == "The input (104 tokens) is longer than the model's context length (100 tokens)."


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_continue_final_message_goes_on_from_the_assistant_text(make_sim, flavor):
    sim = make_sim(flavor=flavor)
    # the answer shown so far (R1's template keeps only what follows </think>); vLLM's parser
    # passes on the "\n\n" after </think>, SGLang's trims it
    shown = ("\n\n" if flavor == "vllm" else "") + "Hello! I am"
    body = {"messages": [*HI, {"role": "assistant", "content": shown}], "continue_final_message": True,
            "add_generation_prompt": False}
    msg = httpx.post(sim.base_url + "/chat/completions", json=body).json()["choices"][0]["message"]
    rest = " a simulated DeepSeek model. How can I help you today?"
    # vLLM's deepseek_r1 parser sees no </think> in what it generates: it calls the rest reasoning
    got = (msg.get("reasoning") or msg.get("reasoning_content")) if flavor == "vllm" else msg["content"]
    assert got == rest
    if flavor == "vllm":  # and refuses both flags at once, as vLLM does
        r = httpx.post(sim.base_url + "/chat/completions", json={**body, "add_generation_prompt": True})
        assert r.status_code == 400 and "Cannot set both" in r.json()["error"]["message"]
        # and a final message the template cuts down (everything up to </think>) cannot be continued
        cut = {**body, "messages": [*HI, {"role": "assistant", "content": "<think>\nOkay.\n</think>" + shown}]}
        r = httpx.post(sim.base_url + "/chat/completions", json=cut)
        assert r.status_code == 400 and "does not appear in the chat" in r.json()["error"]["message"]


def test_vllm_max_tokens_over_max_model_len(make_sim):
    sim = make_sim(max_model_len=2048)
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": HI, "max_tokens": 3000})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "max_tokens=3000 cannot be greater than max_model_len=2048. Please request fewer output "
                   "tokens. (parameter=max_tokens, value=3000)",
        "type": "BadRequestError", "param": "max_tokens", "code": 400}
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": HI, "max_completion_tokens": 2049})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("max_tokens=2049 cannot")
    assert httpx.post(sim.base_url + "/chat/completions",
                      json={"messages": HI, "max_tokens": 2048}).status_code == 200


AUTO_TOOLS = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_without_tool_parser_refuses_auto_tool_choice(make_sim, stream):
    from tests.sim.simtest_util import WEATHER_TOOL

    sim = make_sim(tool_parser=False)
    url = sim.base_url + "/chat/completions"
    for extra in ({}, {"tool_choice": "auto"}, {"tool_choice": None}):
        r = httpx.post(url, json={"messages": HI, "tools": WEATHER_TOOL, "stream": stream, **extra})
        assert r.status_code == 400
        assert r.json()["error"] == {"message": AUTO_TOOLS, "type": "BadRequestError", "param": None,
                                     "code": 400}
    r = httpx.post(url, json={"messages": HI, "tools": WEATHER_TOOL, "tool_choice": "none"})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop"
    assert httpx.post(url, json={"messages": HI}).status_code == 200
    # The SGLang flavour ignores the field.
    sim = make_sim(tool_parser=False, flavor="sglang")
    r = httpx.post(sim.base_url + "/chat/completions", json={"messages": HI, "tools": WEATHER_TOOL})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "tool_calls"


def test_sglang_error_envelope_and_bad_json(make_sim):
    sim = make_sim(flavor="sglang")
    r = httpx.post(sim.base_url + "/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    body = r.json()
    assert body["object"] == "error" and body["type"] == "BadRequestError" and body["code"] == 400
    assert body["param"] is None
    assert sim.requests[-1].body is None and sim.requests[-1].raw_body == b"{not json"


def _validation(r, type_, loc, msg, value, ctx=None):
    """vLLM's answer to a body that fails pydantic's checks."""
    assert r.status_code == 400
    err = {"type": type_, "loc": loc, "msg": msg, "input": value, **({"ctx": ctx} if ctx else {})}
    assert r.json()["error"] == {"message": "1 validation error:\n  " + repr(err), "type": "Bad Request",
                                 "param": loc, "code": 400}


def test_bad_requests_vllm(client):
    _validation(client.post("/chat/completions", content=b"[1,"), "json_invalid", "body.3", "JSON decode error",
                {}, {"error": "Expecting value"})
    _validation(client.post("/chat/completions", content=b""), "missing", "body", "Field required", None)
    _validation(client.post("/chat/completions", json=[1]), "model_attributes_type", "body",
                "Input should be a valid dictionary or object to extract fields from", [1])
    _validation(client.post("/chat/completions", json={"model": "deepseek-r1"}), "missing", "body.messages",
                "Field required", {"model": "deepseek-r1"})
    _validation(client.post("/chat/completions", json={"messages": "hi"}), "list_type", "body.messages",
                "Input should be a valid list", "hi")
    _validation(client.post("/chat/completions", json={"messages": HI, "temperature": "hot"}), "float_parsing",
                "body.temperature", "Input should be a valid number, unable to parse string as a number", "hot")
    _validation(client.post("/chat/completions", json={"messages": HI, "top_p": [1]}), "float_type",
                "body.top_p", "Input should be a valid number", [1])
    _validation(client.post("/chat/completions", json={"messages": HI, "max_tokens": "x"}), "int_parsing",
                "body.max_tokens", "Input should be a valid integer, unable to parse string as an integer", "x")
    _validation(client.post("/chat/completions", json={"messages": HI, "max_tokens": 1.5}), "int_from_float",
                "body.max_tokens", "Input should be a valid integer, got a number with a fractional part", 1.5)
    # pydantic's lax mode: numeric strings and whole floats pass.
    ok = client.post("/chat/completions", json={"messages": HI, "temperature": "0.6", "max_tokens": 2.0})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
    r = client.post("/chat/completions", json={"messages": HI, "max_tokens": 0})
    assert r.status_code == 400
    assert r.json()["error"] == {"message": "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
                                 "type": "BadRequestError", "param": "max_tokens", "code": 400}
    assert client.post("/chat/completions", json={"messages": HI, "top_k": 0}).status_code == 200
    assert client.get("/chat/completions").status_code == 405


def test_bad_requests_sglang(make_sim):
    sim = make_sim(flavor="sglang")
    with httpx.Client(base_url=sim.base_url) as client:
        r = client.post("/chat/completions", json={"model": "deepseek-r1"})
        assert r.status_code == 400 and r.json()["message"] == "messages: Field required"
        r = client.post("/chat/completions", json={"messages": HI, "max_tokens": 0})
        assert r.status_code == 400 and r.json()["message"] == "max_tokens must be at least 1, got 0."


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_models(make_sim, flavor):
    sim = make_sim(flavor=flavor, served_model="ds-r1-distill", max_model_len=4096)
    data = httpx.get(sim.base_url + "/models").json()
    assert data["object"] == "list"
    (card,) = data["data"]
    # vLLM's root is the --model path, not the served name.
    assert card["id"] == "ds-r1-distill"
    assert card["root"] == ("/models/ds-r1-distill" if flavor == "vllm" else "ds-r1-distill")
    assert card["object"] == "model" and card["owned_by"] == flavor
    assert card["max_model_len"] == 4096
    if flavor == "vllm":
        assert card["parent"] is None and card["permission"][0]["object"] == "model_permission"
        sim.config.model_path = "/srv/models/abc123/DeepSeek-R1-Distill-Qwen-7B"
        assert httpx.get(sim.base_url + "/models").json()["data"][0]["root"] == sim.config.model_path


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


def test_vllm_metrics_finished_reasons_and_ttft(make_sim):
    from tests.sim.simtest_util import WEATHER_TOOL

    sim = make_sim(ttft=0.03, max_running=1)
    url = sim.base_url + "/chat/completions"
    httpx.post(url, json={"messages": HI})
    httpx.post(url, json={"messages": HI, "tools": WEATHER_TOOL, "stream": True})  # a tool call counts as stop
    httpx.post(url, json={"messages": HI, "max_tokens": 2})
    sim.config.ttft = 5  # a client that gives up is an abort
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json={"messages": HI, "stream": True}, timeout=0.2)
    assert wait_for(lambda: sim.in_flight == 0)
    text = httpx.get(sim.root_url + "/metrics").text
    reasons = {}
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            reasons[line.split('finished_reason="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    assert reasons == {"stop": 2, "length": 1, "abort": 1, "error": 0, "repetition": 0}
    assert 'vllm:num_requests_waiting_by_reason{engine="0",model_name="deepseek-r1",reason="capacity"} 0.0' in text
    assert 'reason="deferred"} 0.0' in text
    assert "# TYPE vllm:time_to_first_token_seconds histogram" in text
    buckets = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:time_to_first_token_seconds_bucket{")}
    assert buckets["0.02"] == 0 and buckets["0.25"] == 3 and buckets["+Inf"] == 3
    assert _metric(text, "vllm:time_to_first_token_seconds_count") == 3
    assert 0.09 <= _metric(text, "vllm:time_to_first_token_seconds_sum") < 0.5
    # The engine's parser still reads the load; the doctor finds every reference series.
    from deepseek_doctor.server import _REFERENCE_SERIES
    from deepseek_engine.routing import parse_metrics
    load = parse_metrics(text)
    assert (load.running, load.waiting) == (0, 0)
    assert all(f"\n{name}{{" in text for name in _REFERENCE_SERIES["vllm"])


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
def test_sse_headers(make_sim, flavor):
    sim = make_sim(flavor=flavor)
    with httpx.stream("POST", sim.base_url + "/chat/completions", json={"messages": HI, "stream": True}) as r:
        r.read()
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["transfer-encoding"] == "chunked"
    if flavor == "vllm":  # Starlette's CORS middleware; no cache-control
        assert r.headers["vary"] == "Origin" and "cache-control" not in r.headers
    else:
        assert r.headers["cache-control"] == "no-cache"
