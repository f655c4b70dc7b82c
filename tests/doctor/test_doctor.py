"""The doctor reports each server setup correctly, with the right exit code, and never the key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import deepseek_doctor as doctor

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-doctor-secret-4242"


def _json(run_doctor, *argv, env=None):
    code, out, err = run_doctor("--json", *argv, env=env)
    rep = json.loads(out)
    assert rep["exit_code"] == code
    return code, rep, out + err


def _check(rep: dict, name: str, endpoint: int = 0) -> dict:
    checks = [c for c in rep["endpoints"][endpoint]["checks"] if c["name"] == name]
    assert checks, f"no {name} check in {rep}"
    return checks[0]


# -- reasoning shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape, flavor, model, status, phrases", [
    ("reasoning", "vllm", "deepseek-r1", "ok", ["`reasoning`"]),
    ("reasoning_content", "sglang", "deepseek-r1", "ok", ["`reasoning_content`"]),
    ("think_inline", "vllm", "deepseek-r1", "warn",
     ["<think>", "vLLM runs without a reasoning parser", "--reasoning-parser deepseek_r1"]),
    ("think_close_only", "vllm", "deepseek-r1", "warn",
     ["bare </think>", "vLLM runs without a reasoning parser", "--reasoning-parser deepseek_r1"]),
    ("think_inline", "sglang", "deepseek-r1", "warn",
     ["SGLang runs without a reasoning parser", "--reasoning-parser deepseek-r1"]),
    ("plain", "vllm", "deepseek-v3", "ok", ["no reasoning (a chat model)"]),
])
def test_reasoning_shape_is_named_with_the_fix(make_sim, run_doctor, shape, flavor, model, status,
                                               phrases):
    sim = make_sim(shape=shape, flavor=flavor, served_model=model)
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "reasoning")
    assert c["status"] == status, c
    for phrase in phrases:
        assert phrase in c["detail"]
    assert rep["endpoints"][0]["reasoning_shape"] == (shape if shape != "plain" else "none")
    assert rep["endpoints"][0]["server"] == flavor
    assert code == 0  # warnings never fail the run


def test_r1_model_answering_without_reasoning_is_flagged(make_sim, run_doctor):
    sim = make_sim(shape="plain", served_model="deepseek-r1-distill-qwen-7b")
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "reasoning")
    assert c["status"] == "warn" and "looks like a reasoning model (r1)" in c["detail"]
    assert code == 0


def test_text_report_lists_every_check(make_sim, run_doctor):
    sim = make_sim(shape="think_close_only")
    code, out, err = run_doctor(sim.base_url)
    assert code == 0
    lines = out.splitlines()
    for name in ("connect", "auth", "models", "health", "metrics", "reasoning", "thinking", "tools",
                 "images", "structured", "speed", "usage", "continue"):
        assert any(line.split()[1:2] == [name] for line in lines if line.startswith("  ")), name
    assert any(line.startswith("  warn  reasoning") for line in lines)
    assert lines[-1].startswith("passed:")
    assert "reasoning…" in err  # progress on stderr while probing, not in the report
    assert "…" not in out


def test_quiet_prints_no_progress(make_sim, run_doctor):
    sim = make_sim()
    code, out, err = run_doctor(sim.base_url, "--quiet")
    assert code == 0 and err == "" and "passed:" in out


# -- tool calling --------------------------------------------------------------------------------

def test_tool_calls_work(make_sim, run_doctor):
    sim = make_sim(shape="plain", served_model="deepseek-v3")
    _, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "tools")
    assert c["status"] == "ok" and "get_weather" in c["detail"] and c["data"]["parser"] is True
    tool_requests = [r.body for r in sim.requests if isinstance(r.body, dict) and r.body.get("tools")]
    assert tool_requests and tool_requests[0]["tool_choice"] == "auto"


def test_vllm_without_tool_parser_is_explained(make_stub, run_doctor):
    stub = make_stub(tools="reject")  # vLLM's 400 for tool_choice=auto without the flags
    code, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "tools")
    assert c["status"] == "warn"
    assert "--enable-auto-tool-choice --tool-call-parser deepseek_v3" in c["detail"]
    assert code == 0


def test_simulated_vllm_without_tool_parser_is_explained(make_sim, run_doctor):
    sim = make_sim(tool_parser=False, shape="plain", served_model="deepseek-v3")
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "tools")
    assert c["status"] == "warn" and c["data"]["parser"] is False
    assert '"auto" tool choice requires' in c["detail"]
    assert "--enable-auto-tool-choice --tool-call-parser deepseek_v3" in c["detail"]
    assert code == 0
    assert _check(rep, "metrics")["data"]["missing"] == []  # every reference series is exported


@pytest.mark.parametrize("written", ["text", "stripped"])
def test_tool_call_written_as_text_is_explained(make_stub, run_doctor, written):
    stub = make_stub(tools=written, owned_by="sglang")
    _, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "tools")
    assert c["status"] == "warn" and "no tool-call parser" in c["detail"]
    assert {"text": "wrote v3 tool-call markup", "stripped": "its tool call as plain text"}[written] in c["detail"]
    assert "--tool-call-parser deepseekv3" in c["detail"]  # SGLang's spelling


def test_a_call_the_server_lost_once_is_asked_again_before_any_verdict(make_stub, run_doctor):
    # real vLLM's streamed parser now and then drops a call it parsed: one answer is no verdict
    stub = make_stub(tools="lost-once")
    _, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "tools")
    assert c["status"] == "ok" and "get_weather" in c["detail"], c
    assert stub.tool_asks == 2


def test_tool_ignored_on_r1_mentions_r1(make_stub, run_doctor):
    stub = make_stub(tools="ignore", model="deepseek-r1-distill-qwen-7b")
    _, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "tools")
    assert c["status"] == "warn" and "answered in text" in c["detail"]
    assert "r1 models are not trained for tool calls" in c["detail"]
    assert sum(1 for b in stub.bodies if b.get("tools")) == 2  # asked twice before saying so


# -- auth ----------------------------------------------------------------------------------------

def test_missing_key_fails_clearly_and_skips_the_rest(make_sim, run_doctor):
    sim = make_sim(api_key=KEY)
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "auth")
    assert c["status"] == "fail" and "requires an API key" in c["detail"]
    assert "--api-key" in c["detail"] and "DEEPSEEK_API_KEY" in c["detail"]
    assert _check(rep, "models")["status"] == "skip"
    assert _check(rep, "reasoning")["status"] == "skip"
    assert _check(rep, "health")["status"] == "ok"  # /health needs no key
    assert code == 1


def test_wrong_key_is_refused_and_never_printed(make_sim, run_doctor):
    sim = make_sim(api_key="the-right-key-xyz")
    code, out, err = run_doctor(sim.base_url, "--api-key", KEY)
    assert code == 1
    assert "refused the API key" in out
    assert KEY not in out + err
    code, rep, text = _json(run_doctor, sim.base_url, "--api-key", KEY)
    assert code == 1 and KEY not in text


def test_key_from_environment_is_accepted_and_never_printed(make_sim, run_doctor):
    sim = make_sim(api_key=KEY)
    code, rep, text = _json(run_doctor, sim.base_url, env={"DEEPSEEK_API_KEY": KEY})
    c = _check(rep, "auth")
    assert c["status"] == "ok" and c["data"]["key_required"] is True
    assert code == 0
    assert KEY not in text
    auth = [r.headers.get("authorization") for r in sim.requests if r.path.startswith("/v1/chat")]
    assert auth and all(a == f"Bearer {KEY}" for a in auth)


def test_open_server_gets_a_warning(make_sim, run_doctor):
    sim = make_sim()
    _, rep, _ = _json(run_doctor, sim.base_url)
    assert _check(rep, "auth")["status"] == "warn"
    _, rep, _ = _json(run_doctor, sim.base_url, "--api-key", KEY)
    c = _check(rep, "auth")
    assert c["status"] == "warn" and "without --api-key" in c["detail"]


# -- reachability ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_port_fails_fast(run_doctor):
    code, rep, _ = _json(run_doctor, f"http://127.0.0.1:{_free_port()}/v1")
    c = _check(rep, "connect")
    assert c["status"] == "fail" and "connection refused" in c["detail"]
    assert "loading weights" in c["detail"]
    skipped = [c for c in rep["endpoints"][0]["checks"] if c["name"] != "connect"]
    assert {c["status"] for c in skipped} == {"skip"}
    assert {c["detail"] for c in skipped} == {"skipped: connect failed"}  # the root cause
    assert "tls" not in {c["name"] for c in skipped}  # plain http has no TLS to check
    assert code == 1


def test_raw_requests_fail_as_the_engine_says():
    """The doctor's raw wire types a failure with the engine's own classification: the same class
    and words as the plugin's client gives for the same endpoint."""
    from deepseek_doctor.probe import Options, Probe
    from deepseek_doctor.wire import raw_chat
    from deepseek_engine.client import ChatClient
    from deepseek_engine.errors import EngineError
    from deepseek_engine.health import HealthBook
    from deepseek_engine.settings import parse_settings
    from deepseek_engine.transport import ClientRegistry

    settings = parse_settings({"endpoint_urls": f"http://127.0.0.1:{_free_port()}/v1"})
    ep = settings.endpoints[0]
    registry = ClientRegistry()
    try:
        client = ChatClient(settings, registry=registry, health=HealthBook(), prober=None)
        raw = raw_chat(Probe(ep, settings, client, Options()), {"model": "m", "messages": []},
                       lambda r: True)
        with pytest.raises(EngineError) as engine:
            client.get_json(ep, ep.url + "/models")
    finally:
        registry.close()
    assert type(raw.error) is type(engine.value) and raw.error.message == engine.value.message
    assert raw.status is None and "connection refused" in raw.error.message


def _answer_in_plain_http(srv: socket.socket, stop: threading.Event) -> None:
    """What an HTTP server (uvicorn) does with a TLS hello: answers 400 in plain text."""
    srv.settimeout(0.1)
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(2)
            try:
                if not conn.recv(65536):  # the connect check sends nothing
                    continue
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(4096):  # until the client closes: no reset on unread bytes
                    pass
            except OSError:  # the client closed first
                continue


def test_plain_http_port_behind_an_https_url_is_named(run_doctor):
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as srv:
        server = threading.Thread(target=_answer_in_plain_http, args=(srv, stop), daemon=True)
        server.start()
        try:
            code, rep, _ = _json(run_doctor, f"https://127.0.0.1:{srv.getsockname()[1]}/v1")
        finally:
            stop.set()
            server.join(5)
    assert _check(rep, "connect")["status"] == "ok"
    c = _check(rep, "tls")
    assert c["status"] == "fail" and "is this an https port?" in c["detail"], c
    assert _check(rep, "auth")["status"] == "skip"
    assert code == 1


def test_unknown_host_is_named(monkeypatch, run_doctor):
    def no_dns(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    code, rep, _ = _json(run_doctor, "http://vllm-9.vllm-headless.llm.svc:8000/v1")
    c = _check(rep, "connect")
    assert c["status"] == "fail" and "not found" in c["detail"] and "headless" in c["detail"]
    assert code == 1


def test_bad_url_is_an_argument_error(run_doctor, capsys):
    code, out, err = run_doctor("gpu-1:8000")
    assert code == 2 and "no scheme" in err and out == ""


# -- health, metrics, usage, speed ------------------------------------------------------------------

def test_unhealthy_server_fails(make_sim, run_doctor):
    sim = make_sim()
    sim.healthy = False
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "health")
    assert c["status"] == "fail" and "503" in c["detail"]
    assert code == 1


@pytest.mark.parametrize("flavor, name", [("vllm", "vLLM"), ("sglang", "SGLang")])
def test_metrics_are_recognised(make_sim, run_doctor, flavor, name):
    sim = make_sim(flavor=flavor, num_waiting=3, num_running=2, kv_usage=0.5)
    _, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "metrics")
    assert c["status"] == "ok" and c["detail"].startswith(f"{name} metrics")
    assert c["data"]["waiting"] == 3 and c["data"]["flavor"] == flavor
    assert "KV cache 50%" in c["detail"]


def test_missing_metrics_and_health_and_context_size_warn(make_stub, run_doctor):
    stub = make_stub(owned_by="sglang", metrics=False, health=404, max_model_len=None,
                     tools="ignore")
    code, rep, _ = _json(run_doctor, stub.base_url)
    m = _check(rep, "metrics")
    assert m["status"] == "warn" and "--enable-metrics" in m["detail"]
    assert _check(rep, "health")["status"] == "warn"
    models = _check(rep, "models")
    assert models["status"] == "warn" and "max_model_len" in models["detail"]
    assert code == 0


def test_usage_missing_warns(make_sim, run_doctor):
    sim = make_sim(usage="never")
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "usage")
    assert c["status"] == "warn" and "include_usage" in c["detail"]
    assert code == 0
    sim2 = make_sim()
    _, rep, _ = _json(run_doctor, sim2.base_url)
    assert _check(rep, "usage")["status"] == "ok"


def test_continuation_support_is_reported(make_sim, make_stub, run_doctor):
    """What the plugin needs to continue a cut stream: accepted by the simulator (as by vLLM and
    SGLang), refused by a strict server, which warns (a cut stream would reach users as an error)."""
    sim = make_sim(shape="reasoning")
    _, rep, _ = _json(run_doctor, sim.base_url)
    assert _check(rep, "continue")["status"] == "ok"
    sent = [r.body for r in sim.requests if r.path.endswith("/chat/completions")
            and r.body.get("continue_final_message")]
    assert sent and sent[0]["add_generation_prompt"] is False and sent[0]["messages"][-1]["role"] == "assistant"
    stub = make_stub(tools="ignore", continuation=False)
    code, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "continue")
    assert c["status"] == "warn" and "reaches users as an error" in c["detail"], c
    assert "Extra inputs are not permitted" in c["detail"]
    assert code == 0  # a warning, not a failure


def test_speed_reports_median_ttft_and_rate(make_sim, run_doctor):
    sim = make_sim(ttft=0.08, inter_token=0.004)
    _, rep, _ = _json(run_doctor, sim.base_url, "--requests", "3")
    c = _check(rep, "speed")
    assert c["status"] == "ok", c
    assert c["data"]["requests"] == 3
    assert 70 <= c["data"]["ttft_ms_median"] < 1000
    assert 20 < c["data"]["tokens_per_s_median"] < 400  # ~250 tokens/s at 4 ms a token


def test_chat_failure_fails_and_skips_what_depends_on_it(make_sim, run_doctor):
    sim = make_sim()
    sim.inject("status", count=20, status=500)
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "reasoning")
    assert c["status"] == "fail" and "500" in c["detail"]
    assert [_check(rep, n)["status"] for n in ("tools", "speed", "usage")] == ["skip"] * 3
    assert code == 1


def test_model_not_served_lists_what_is(make_sim, run_doctor):
    sim = make_sim(served_model="deepseek-r1")
    code, rep, _ = _json(run_doctor, sim.base_url, "--model", "deepseek-v3")
    c = _check(rep, "models")
    assert c["status"] == "fail" and "deepseek-r1" in c["detail"]
    assert code == 1


# -- several endpoints -----------------------------------------------------------------------------

def test_fleet_of_alike_replicas(make_sim, run_doctor):
    a, b = make_sim(), make_sim()
    code, rep, _ = _json(run_doctor, a.base_url, b.base_url)
    assert len(rep["endpoints"]) == 2
    assert [c["status"] for c in rep["fleet"]] == ["ok"]
    assert code == 0


def test_fleet_flags_replicas_that_differ(make_sim, run_doctor):
    a = make_sim(max_model_len=8192)
    b = make_sim(max_model_len=32768, shape="think_inline")
    code, rep, _ = _json(run_doctor, f"{a.base_url},{b.base_url}")
    details = " ".join(c["detail"] for c in rep["fleet"])
    assert "max_model_len" in details and "reasoning shape" in details
    assert all(c["status"] == "warn" for c in rep["fleet"])
    assert code == 0


def test_one_dead_replica_fails_the_run(make_sim, run_doctor):
    a = make_sim()
    code, rep, _ = _json(run_doctor, a.base_url, f"http://127.0.0.1:{_free_port()}/v1")
    assert _check(rep, "connect", 0)["status"] == "ok"
    assert _check(rep, "connect", 1)["status"] == "fail"
    assert rep["fleet"] == []  # nothing to compare with one replica answering
    assert code == 1


# -- TLS -------------------------------------------------------------------------------------------

def _tls_sim(make_sim, pki, *, server=None, client_ca=None):
    from tests.security.certs import server_context

    return make_sim(ssl_context=server_context(server or pki.server, client_ca))


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_untrusted_certificate_fails_with_the_fix(make_sim, run_doctor, pki):
    sim = _tls_sim(make_sim, pki)
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "tls")
    assert c["status"] == "fail" and "--ca-bundle" in c["detail"]
    assert _check(rep, "auth")["status"] == "skip"
    assert code == 1


def test_trusted_certificate_passes(make_sim, run_doctor, pki, tmp_path):
    sim = _tls_sim(make_sim, pki)
    code, rep, _ = _json(run_doctor, sim.base_url, "--ca-bundle", _write(tmp_path, "ca.pem", pki.ca.cert))
    c = _check(rep, "tls")
    assert c["status"] == "ok" and "certificate verified" in c["detail"], c
    assert c["data"]["days_left"] >= 20
    assert code == 0


def test_expired_certificate_is_named(make_sim, run_doctor, pki, tmp_path):
    sim = _tls_sim(make_sim, pki, server=pki.expired_server)
    code, rep, _ = _json(run_doctor, sim.base_url, "--ca-bundle", _write(tmp_path, "ca.pem", pki.ca.cert))
    c = _check(rep, "tls")
    assert c["status"] == "fail" and "expired" in c["detail"]
    assert code == 1


def test_insecure_mode_warns(make_sim, run_doctor, pki):
    sim = _tls_sim(make_sim, pki)
    code, rep, _ = _json(run_doctor, sim.base_url, "--insecure")
    assert _check(rep, "tls")["status"] == "warn"
    assert _check(rep, "reasoning")["status"] == "ok"
    assert code == 0


def test_mutual_tls(make_sim, run_doctor, pki, tmp_path):
    sim = _tls_sim(make_sim, pki, client_ca=pki.ca)
    ca = _write(tmp_path, "ca.pem", pki.ca.cert)
    code, rep, _ = _json(run_doctor, sim.base_url, "--ca-bundle", ca)
    c = _check(rep, "tls")
    assert c["status"] == "fail" and "requires a client certificate" in c["detail"]
    assert code == 1
    code, rep, text = _json(run_doctor, sim.base_url, "--ca-bundle", ca,
                            "--client-cert", _write(tmp_path, "c.pem", pki.client.cert),
                            "--client-key", _write(tmp_path, "k.pem", pki.client.key))
    c = _check(rep, "tls")
    assert c["status"] == "ok" and "client certificate accepted" in c["detail"]
    assert code == 0
    assert "PRIVATE KEY" not in text
    code, rep, _ = _json(run_doctor, sim.base_url, "--ca-bundle", ca,
                         "--client-cert", _write(tmp_path, "r.pem", pki.rogue_client.cert),
                         "--client-key", _write(tmp_path, "rk.pem", pki.rogue_client.key))
    c = _check(rep, "tls")
    assert c["status"] == "fail" and "rejected this client certificate" in c["detail"]
    assert code == 1


# -- how it is run -----------------------------------------------------------------------------------

def test_runs_as_a_module(make_sim):
    sim = make_sim(api_key=KEY)
    env = {**os.environ, "DEEPSEEK_API_KEY": KEY, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "deepseek_doctor", sim.base_url, "--json",
                        "--requests", "1"], capture_output=True, text=True, env=env, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] is True and rep["endpoints"][0]["model"] == "deepseek-r1"
    assert "connect…" in r.stderr
    assert KEY not in r.stdout + r.stderr


def test_scripts_doctor_wraps_the_module():
    script = ROOT / "scripts" / "doctor"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert '"$root/scripts/bootstrap"' in text and "-m deepseek_doctor" in text


def test_doctor_has_no_dify_imports():
    files = sorted((ROOT / "deepseek_doctor").glob("*.py"))
    assert files
    for path in files:
        assert "dify_plugin" not in path.read_text(), path.name


def test_run_api_returns_a_report(make_sim):
    sim = make_sim()
    seen = []
    report = doctor.run([sim.base_url], doctor.Options(requests=1), progress=seen.append)
    assert report.exit_code == 0 and report.endpoints[0].get("models").data["model"] == "deepseek-r1"
    assert any("speed" in s for s in seen)


# -- OAuth2 client credentials -------------------------------------------------------------------

CLIENT_SECRET = "cs-doctor-SECRET-8e21"


@pytest.fixture
def sim_behind_idp(make_sim):
    from tests.security.oauth_server import TokenServer  # tests/security's real token endpoint

    sim = make_sim(api_key="no-token-yet")
    idp = TokenServer("doctor", CLIENT_SECRET, on_token=lambda t: setattr(sim.config, "api_key", t))
    yield sim, idp
    idp.close()


def _oauth2_argv(idp, *extra):
    return ("--oauth2-token-url", idp.url, "--oauth2-client-id", "doctor", *extra)


def test_oauth2_endpoint_is_probed_with_a_fetched_token(sim_behind_idp, run_doctor):
    sim, idp = sim_behind_idp
    code, rep, text = _json(run_doctor, sim.base_url,
                            *_oauth2_argv(idp, "--oauth2-scope", "inference", "--oauth2-audience", "gpus"),
                            env={"DEEPSEEK_OAUTH2_CLIENT_SECRET": CLIENT_SECRET})
    c = _check(rep, "auth")
    assert c["status"] == "ok" and "OAuth2 token accepted" in c["detail"] and c["data"]["key_required"]
    assert _check(rep, "reasoning")["status"] == "ok" and code == 0
    assert len(idp.issued) == 1  # one token for every probe
    assert idp.requests[0]["form"]["scope"] == "inference"
    assert idp.requests[0]["form"]["audience"] == "gpus"
    chats = [r.headers.get("authorization") for r in sim.requests if r.path.startswith("/v1/chat")]
    assert chats and all(a == f"Bearer {idp.issued[0]}" for a in chats)
    assert CLIENT_SECRET not in text and idp.issued[0] not in text


def test_oauth2_client_refused_by_the_idp_names_it(sim_behind_idp, run_doctor):
    sim, idp = sim_behind_idp
    code, rep, text = _json(run_doctor, sim.base_url, *_oauth2_argv(idp),
                            env={"DEEPSEEK_OAUTH2_CLIENT_SECRET": CLIENT_SECRET + "-wrong"})
    c = _check(rep, "auth")
    assert c["status"] == "fail" and "token endpoint refused the client (invalid_client" in c["detail"]
    assert f"127.0.0.1:{idp.httpd.server_address[1]}/oauth2/token" in c["detail"]
    assert code == 1 and CLIENT_SECRET not in text


@pytest.mark.parametrize("argv, env, needle", [
    (("--oauth2-token-url", "http://idp/token", "--oauth2-client-id", "doctor"), {},
     "client secret in $DEEPSEEK_OAUTH2_CLIENT_SECRET"),
    (("--oauth2-token-url", "http://idp/token"), {"DEEPSEEK_OAUTH2_CLIENT_SECRET": CLIENT_SECRET},
     "--oauth2-token-url needs --oauth2-client-id"),
    (("--oauth2-scope", "inference"), {}, "--oauth2-scope needs --oauth2-token-url"),
    (("--oauth2-token-url", "idp/token", "--oauth2-client-id", "doctor"),
     {"DEEPSEEK_OAUTH2_CLIENT_SECRET": CLIENT_SECRET}, "oauth2_token_url must be an http(s) URL"),
])
def test_oauth2_argument_errors(run_doctor, monkeypatch, argv, env, needle):
    monkeypatch.delenv("DEEPSEEK_OAUTH2_CLIENT_SECRET", raising=False)
    code, out, err = run_doctor("http://127.0.0.1:1/v1", *argv, env=env)
    assert code == 2 and needle in err and out == ""
    assert CLIENT_SECRET not in err


def test_oauth2_client_secret_is_never_a_command_line_argument(run_doctor):
    with pytest.raises(SystemExit):
        run_doctor("http://127.0.0.1:1/v1", "--oauth2-client-secret", CLIENT_SECRET)


# -- --strict ------------------------------------------------------------------------------------

@pytest.mark.parametrize("server, warned", [
    (lambda make_sim, make_stub: make_sim(shape="think_inline"), "reasoning"),  # no reasoning parser
    (lambda make_sim, make_stub: make_stub(tools="reject"), "tools"),  # no tool-call parser
    (lambda make_sim, make_stub: make_sim(usage="never"), "usage"),  # no include_usage
])
def test_strict_fails_on_warnings(make_sim, make_stub, run_doctor, server, warned):
    url = server(make_sim, make_stub).base_url
    code, rep, _ = _json(run_doctor, url)
    assert _check(rep, warned)["status"] == "warn" and code == 0  # warnings alone pass
    code, rep, _ = _json(run_doctor, url, "--strict")
    assert code == 1 and rep["ok"] is False and rep["strict"] is True
    assert rep["summary"]["fail"] == 0
    code, out, _ = run_doctor(url, "--strict")
    assert code == 1 and out.splitlines()[-1].startswith("FAILED (--strict: warnings fail):")


def test_strict_passes_a_clean_endpoint(make_sim, run_doctor):
    sim = make_sim(api_key=KEY, served_model="deepseek-v3", shape="plain")
    code, rep, _ = _json(run_doctor, sim.base_url, "--strict", env={"DEEPSEEK_API_KEY": KEY})
    assert rep["summary"]["warn"] == 0, rep
    assert code == 0 and rep["ok"] is True


# -- thinking on demand (issue 14) -----------------------------------------------------------------

def _chats(server) -> list[dict]:
    bodies = server.bodies if hasattr(server, "bodies") else [
        r.body for r in server.requests if r.path.endswith("/chat/completions")]
    return [b for b in bodies if isinstance(b, dict)]


def _switches(server) -> list:
    """The thinking switch of each chat request without tools or images: True/False/"omitted"."""
    return [(b.get("chat_template_kwargs") or {}).get("thinking", "omitted") for b in _chats(server)
            if not b.get("tools") and isinstance(b["messages"][-1]["content"], str)
            and not b.get("continue_final_message")]


@pytest.mark.parametrize("shape, field", [("reasoning", "`reasoning`"), ("think_close_only", "bare </think>")])
def test_hybrid_switch_honoured(make_sim, run_doctor, shape, field):
    """A V3.1 server honouring chat_template_kwargs.thinking, with and without a reasoning parser:
    on gives reasoning, off and omitted (V3.1's default) a direct answer."""
    sim = make_sim(hybrid="v3.1", served_model="deepseek-v3.1", shape=shape)
    code, rep, _ = _json(run_doctor, sim.base_url)
    assert rep["endpoints"][0]["family"] == "v3.1"
    assert "thinking on demand" in _check(rep, "models")["detail"]
    r = _check(rep, "reasoning")
    assert field in r["detail"]
    if shape == "think_close_only":  # no parser: V3.1's own, not R1's
        assert r["status"] == "warn" and "--reasoning-parser deepseek_v3" in r["detail"]
    c = _check(rep, "thinking")
    assert c["status"] == "ok" and "honours the thinking switch" in c["detail"], c
    assert (c["data"]["on"], c["data"]["off"], c["data"]["omitted"]) == (True, False, False)
    assert "without the switch gets a direct answer here (v3.1's own default is off" in c["detail"]
    assert {True, False, "omitted"} <= set(_switches(sim))
    assert code == 0


@pytest.mark.parametrize("flavor, omitted", [("vllm", "reasoning"), ("sglang", "a direct answer")])
def test_v4_default_when_the_switch_is_omitted_is_reported(make_sim, run_doctor, flavor, omitted):
    """V4 thinks when the switch is omitted on current vLLM, not on SGLang (issue14-facts section
    1): the doctor says which, and that the plugin always sends the switch."""
    sim = make_sim(hybrid="v4", served_model="deepseek-ai/DeepSeek-V4-Flash", flavor=flavor)
    _, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "thinking")
    assert c["status"] == "ok", c
    assert f"without the switch gets {omitted} here (v4's own default is on" in c["detail"]


def test_switch_that_cannot_turn_thinking_off_names_the_template(make_stub, run_doctor):
    stub = make_stub(model="deepseek-v3.1", thinking="always", tools="ignore")
    code, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "thinking")
    assert c["status"] == "warn" and "thinking cannot be turned off" in c["detail"]
    assert "--chat-template examples/tool_chat_template_deepseekv31.jinja" in c["detail"]
    assert code == 0
    assert _json(run_doctor, stub.base_url, "--strict")[0] == 1


def test_switch_ignored_by_the_server_is_named(make_stub, run_doctor):
    stub = make_stub(model="deepseek-ai/DeepSeek-V3.2", thinking="never", tools="ignore")
    _, rep, _ = _json(run_doctor, stub.base_url)
    assert "asked to think" in _check(rep, "reasoning")["detail"]
    c = _check(rep, "thinking")
    assert c["status"] == "warn" and "thinking on gave no reasoning" in c["detail"]
    assert "--tokenizer-mode deepseek_v32" in c["detail"]
    assert c["data"]["on"] is False and c["data"]["off"] is False


def test_honouring_stub_passes(make_stub, run_doctor):
    stub = make_stub(model="deepseek-v3.1", thinking="honour", tools="ignore")
    _, rep, _ = _json(run_doctor, stub.base_url)
    assert _check(rep, "thinking")["status"] == "ok"
    assert _check(rep, "reasoning")["status"] == "ok"


@pytest.mark.parametrize("model, detail", [
    ("deepseek-r1", "r1 models always reason"),
    ("deepseek-v3", "v3 models do not reason"),
])
def test_models_without_a_switch_are_not_probed_for_one(make_sim, run_doctor, model, detail):
    sim = make_sim(served_model=model, shape="reasoning" if "r1" in model else "plain")
    _, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "thinking")
    assert c["status"] == "ok" and detail in c["detail"] and c["data"]["switch"] is False
    assert set(_switches(sim)) == {"omitted"}  # no switch sent to a model without one


def test_speciale_is_always_sent_thinking_on(make_sim, run_doctor):
    """V3.2-Speciale has no switch, but its encoder renders chat mode unless told thinking=true."""
    sim = make_sim(hybrid="v3.2-speciale", served_model="deepseek-v3.2-speciale")
    _, rep, _ = _json(run_doctor, sim.base_url)
    assert _check(rep, "reasoning")["status"] == "ok"
    c = _check(rep, "thinking")
    assert c["status"] == "ok" and "thinking=true" in c["detail"]
    assert set(_switches(sim)) == {True}


def test_catalogue_option_probes_an_alias_as_that_model(make_stub, run_doctor):
    """``--served-model-name ds31`` (the V3.1 recipe's example) matches no family; --catalogue says
    which plugin model it stands for."""
    stub = make_stub(model="ds31", thinking="honour", tools="ignore")
    _, rep, _ = _json(run_doctor, stub.base_url)
    assert "matches no DeepSeek family" in _check(rep, "models")["detail"]
    assert _check(rep, "thinking")["data"]["switch"] is False
    _, rep, _ = _json(run_doctor, stub.base_url, "--catalogue", "deepseek-v3.1")
    assert rep["endpoints"][0]["family"] == "v3.1"
    assert _check(rep, "thinking")["status"] == "ok"
    assert "matches no DeepSeek family" not in _check(rep, "models")["detail"]


# -- tool parsers per family -----------------------------------------------------------------------

def test_v31_tool_probe_is_sent_without_thinking(make_sim, run_doctor):
    """As the plugin sends it: V3.1 calls tools only in non-thinking mode."""
    sim = make_sim(hybrid="v3.1", served_model="deepseek-v3.1")
    _, rep, _ = _json(run_doctor, sim.base_url)
    assert _check(rep, "tools")["status"] == "ok"
    tools = [b for b in _chats(sim) if b.get("tools")]
    assert tools and tools[0]["chat_template_kwargs"] == {"thinking": False}


@pytest.mark.parametrize("markup, model, flavor, family, flag", [
    ("v3", "deepseek-v3", "vllm", "v3", "--tool-call-parser deepseek_v3"),
    ("v31", "deepseek-v3.1", "vllm", "v3.1", "--tool-call-parser deepseek_v31"),
    ("v32", "deepseek-v3.2", "vllm", "v3.2", "--tool-call-parser deepseek_v32"),
    ("v4", "deepseek-v4-pro", "sglang", "v4", "--tool-call-parser deepseekv4"),
    ("v41", "deepseek-v4.1-flash", "vllm", "v4.1", "--tool-call-parser deepseek_v41"),
    # an alias names no family: the markup does
    ("v4", "my-model", "vllm", "v4", "--tool-call-parser deepseek_v4"),
    ("v31", "gpu-pool-a", "sglang", "v3.1", "--tool-call-parser deepseekv31"),
])
def test_raw_tool_markup_names_the_parser_to_add(make_sim, run_doctor, markup, model, flavor, family, flag):
    """The simulator as a server without the family's tool-call parser (helper B's tool_markup):
    the markup, cut into token-sized deltas, arrives in the text."""
    sim = make_sim(served_model=model, flavor=flavor, tool_markup=markup, shape="plain")
    _, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "tools")
    assert c["status"] == "warn" and c["data"]["parser"] is False and c["data"]["markup"] == family, c
    assert f"wrote {family} tool-call markup in the answer" in c["detail"]
    assert flag in c["detail"]


def test_tool_markup_inside_the_reasoning_is_found(make_stub, run_doctor):
    """V3.2/V4 may open a DSML block before closing </think>: with no tool-call parser it stays in
    the reasoning."""
    stub = make_stub(model="deepseek-v3.2", tools="dsml32", markup_in="reasoning", thinking="always")
    _, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "tools")
    assert c["status"] == "warn" and "v3.2 tool-call markup in the reasoning" in c["detail"]


def test_every_family_with_a_trait_has_its_flags():
    """serve_flags.yaml names real families, and each thinking / tool / vision family has the flag
    the doctor would print."""
    from deepseek_doctor.flags import _FAMILIES, hint
    from deepseek_engine.families import FAMILIES, family_named

    for name in _FAMILIES:
        family_named(name)  # raises for a name families.yaml does not know
    for f in FAMILIES:
        if f.thinking != "never":
            assert hint(f.name, "vllm", "reasoning"), f.name
        if f.tools:
            assert hint(f.name, "vllm", "tools"), f.name
        if f.hybrid:
            assert hint(f.name, "vllm", "template"), f.name
        if f.vision:
            assert hint(f.name, "vllm", "images") or f.name == "v4-vision", f.name


# -- images ------------------------------------------------------------------------------------------

def test_text_model_refusing_images_is_fine(make_sim, run_doctor):
    sim = make_sim(served_model="deepseek-v3", shape="plain")
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "images")
    assert c["status"] == "ok" and c["data"]["accepted"] is False and "text-only" in c["detail"], c
    assert code == 0
    sent = [b for b in _chats(sim) if isinstance(b["messages"][-1]["content"], list)]
    assert len(sent) == 1
    url = next(p["image_url"]["url"] for p in sent[0]["messages"][-1]["content"] if p["type"] == "image_url")
    import base64

    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_vision_model_accepting_images(make_sim, run_doctor):
    sim = make_sim(served_model="deepseek-ai/deepseek-vl2-tiny", shape="plain", vision=True)
    _, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "images")
    assert c["status"] == "ok" and "vision model (vl2)" in c["detail"] and c["data"]["accepted"] is True


@pytest.mark.parametrize("images, model, why, flag", [
    ("refuse", "deepseek-vl2-tiny", "not a vision model, or not served with multimodal support",
     "--hf-overrides"),
    ("limit0", "deepseek-ocr", "--limit-mm-per-prompt", "NGramPerReqLogitsProcessor"),
])
def test_vision_model_refusing_images_names_the_fix(make_stub, run_doctor, images, model, why, flag):
    stub = make_stub(model=model, images=images, tools="ignore")
    code, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "images")
    assert c["status"] == "warn" and why in c["detail"] and flag in c["detail"], c
    if images == "refuse":
        assert f"{model} is not a multimodal model" in c["detail"]  # vLLM's own words
    assert code == 0


def test_an_alias_accepting_images_suggests_the_vision_switch(make_stub, run_doctor):
    stub = make_stub(model="my-vlm", images="accept", tools="ignore")
    _, rep, _ = _json(run_doctor, stub.base_url)
    c = _check(rep, "images")
    assert c["status"] == "ok" and "customizable model with vision on" in c["detail"]


def test_tiny_png_is_a_valid_png():
    import struct
    import zlib

    from deepseek_doctor.images import tiny_png

    data = tiny_png(4)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + size]
        assert struct.unpack(">I", data[pos + 8 + size:pos + 12 + size])[0] == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + size
    assert struct.unpack(">II", chunks[b"IHDR"][:8]) == (4, 4)
    assert zlib.decompress(chunks[b"IDAT"]) == (b"\x00" + b"\xff" * 12) * 4
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]


def test_the_stub_is_quiet_when_the_doctor_hangs_up_but_not_about_its_own_bugs(make_stub, capsys):
    """A client that hangs up mid-answer is normal here (the doctor stops reading once it knows
    enough); socketserver printed its traceback in the middle of the tier's passing output."""
    stub = make_stub()
    for error, printed in ((BrokenPipeError(32, "Broken pipe"), False),
                           (ConnectionResetError(104, "reset by peer"), False),
                           (KeyError("a bug in the stub"), True)):
        try:
            raise error
        except Exception:  # noqa: BLE001 - handle_error reads the exception being handled
            stub.server.handle_error(None, ("127.0.0.1", 1))
        err = capsys.readouterr().err
        assert ("Traceback" in err) is printed, (error, err)


def _as_a_terminal_shows_it(raw: str) -> list[str]:
    """The lines a terminal is left showing: \\r returns to the line's start, ESC[K erases the rest."""
    shown = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        shown.append(line.split("\r")[-1].replace("\x1b[K", ""))
    return [line for line in shown if line.strip()]


def test_run_in_a_terminal_it_prints_the_report_once(make_sim):
    """Interactively the progress is one line rewritten in place and erased; only the report stays.
    (It printed a line per step, about twenty, then the report repeating them.)"""
    import pty

    sim = make_sim()
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "deepseek_doctor", sim.base_url, "--requests", "1"],
                            stdout=follower, stderr=follower, env=env, cwd=ROOT)
    os.close(follower)
    raw = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the doctor exited and closed the terminal
            break
        if not chunk:
            break
        raw += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    shown = _as_a_terminal_shows_it(raw.decode())
    assert "…" in raw.decode()  # progress was shown while it ran
    assert not [line for line in shown if "…" in line], shown  # and none of it is left
    assert shown[-1].startswith("passed:"), shown
    assert sum(line.strip().startswith("ok    connect") for line in shown) == 1, shown


# -- a gateway in front of the GPU servers ------------------------------------------------------

def test_a_gateway_is_recognised_and_its_missing_metrics_are_no_fault(make_stub, run_doctor):
    stub = make_stub(gateway=True, tools="ignore")
    code, rep, _ = _json(run_doctor, stub.base_url)
    g = _check(rep, "gateway")
    assert g["status"] == "ok" and "SGLang Model Gateway in front of 3 worker(s)" in g["detail"]
    assert "this one URL" in g["detail"]
    m = _check(rep, "metrics")
    assert m["status"] == "ok" and "gateway" in m["detail"]
    assert code == 0


def test_a_gateway_listed_beside_servers_it_balances_is_flagged(make_stub, make_sim, run_doctor):
    stub, sim = make_stub(gateway=True, tools="ignore"), make_sim()
    _, rep, _ = _json(run_doctor, stub.base_url, sim.base_url)
    g = _check(rep, "gateway", 0)
    assert g["status"] == "warn" and "alone" in g["detail"]
    assert not [c for c in rep["endpoints"][1]["checks"] if c["name"] == "gateway"]  # a plain server
