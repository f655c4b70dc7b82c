"""Tests of the stdio protocol harness and chunk rules against the toy plugin (real SDK runtime)."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from tests.protocol import chunk_rules as cr
from tests.protocol.harness import (
    MAX_LINE_BYTES,
    PluginDiedError,
    PluginProcess,
    PluginStartError,
    SessionResult,
    build_envelope,
    get_ai_model_schemas,
    get_llm_num_tokens,
    invoke_llm,
    system_message,
    user_message,
    validate_model_credentials,
    validate_provider_credentials,
)

TOY_DIR = Path(__file__).resolve().parent / "toy_plugin"
GOOD = {"api_key": "good"}
BAD = {"api_key": "nope"}


@pytest.fixture(scope="module")
def toy():
    p = PluginProcess(TOY_DIR).start(ready_timeout=30)
    try:
        yield p
    finally:
        p.close()


def llm(toy, params=None, prompt=None, **kw):
    return toy.invoke(
        *invoke_llm("toy", "toy-chat", GOOD, prompt or [user_message("hello world")], params, **kw),
        timeout=30,
    )


# ---------------------------------------------------------------------------------------------
# start-up
# ---------------------------------------------------------------------------------------------
def test_ready_within_a_few_seconds(toy):
    assert toy.alive()
    # a start that hangs, not a slow one: an idle machine takes 1-3 s, a loaded CI machine more
    # (how fast it starts is the benchmark's to say, not a test's)
    assert toy.ready_after is not None and 0 < toy.ready_after < 30, toy.ready_after
    assert toy.heartbeats >= 1
    assert len(toy.heartbeat_times) == toy.heartbeats


def test_manifest_is_first_line(toy):
    m = toy.manifest
    assert m is not None and "event" not in m
    assert (m["type"], m["author"], m["name"]) == ("plugin", "toyco", "toy_llm")
    assert m["plugins"]["models"] == ["provider/toy.yaml"]
    assert m["meta"]["runner"]["entrypoint"] == "main"
    # the SDK logs provider registration as {"event":"log"} lines
    assert any("toy" in (lg.get("data") or {}).get("message", "") for lg in toy.logs), toy.logs
    assert all(lg["event"] == "log" for lg in toy.logs)


# ---------------------------------------------------------------------------------------------
# credentials
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "request_builder",
    [
        lambda creds: validate_provider_credentials("toy", creds),
        lambda creds: validate_model_credentials("toy", "toy-chat", creds),
    ],
    ids=["provider", "model"],
)
def test_validate_credentials_good(toy, request_builder):
    r = toy.invoke(*request_builder(GOOD), timeout=30)
    assert cr.check_session(r) == []
    assert r.error is None
    assert [m["type"] for m in r.messages] == ["stream", "end"]
    assert r.chunks == [{"result": True, "credentials": GOOD}]


@pytest.mark.parametrize(
    "request_builder",
    [
        lambda creds: validate_provider_credentials("toy", creds),
        lambda creds: validate_model_credentials("toy", "toy-chat", creds),
    ],
    ids=["provider", "model"],
)
def test_validate_credentials_bad(toy, request_builder):
    r = toy.invoke(*request_builder(BAD), timeout=30)
    assert cr.check_session(r) == []
    assert [m["type"] for m in r.messages] == ["error", "end"]
    assert r.chunks == []
    assert r.error["error_type"] == "CredentialsValidateFailedError"
    assert "good" in r.error["message"]
    assert "Traceback" in r.error["args"]["traceback"]


# ---------------------------------------------------------------------------------------------
# invoke_llm
# ---------------------------------------------------------------------------------------------
def test_invoke_llm_stream_chunks_text_and_usage(toy):
    r = llm(toy, {"chunks": 5, "chunk_text": "ab "}, prompt=[system_message("be terse"), user_message("one two three")])
    assert cr.check_llm_stream(r, require_finish_reason=True) == []
    assert len(r.chunks) == 6  # 5 content chunks + final usage chunk
    for c in r.chunks:
        assert cr.check_llm_chunk(c) == []
    assert cr.collect_text(r) == "ab " * 5
    assert [c["delta"]["index"] for c in r.chunks] == list(range(6))
    # usage only on the last chunk, with the toy's deterministic counts
    assert all(c["delta"]["usage"] is None for c in r.chunks[:-1])
    usage = cr.final_usage(r)
    assert usage is r.chunks[-1]["delta"]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (5, 5, 10)
    assert usage["currency"] == "USD" and float(usage["prompt_unit_price"]) == 0.14
    assert cr.finish_reason(r) == "stop"
    # arrival timestamps: after the send, non-decreasing, end last
    ts = [m["_t"] for m in r.messages]
    assert ts == sorted(ts) and ts[0] >= r.t_sent and r.t_end == ts[-1]
    assert r.duration is not None and r.duration > 0
    assert len(r.raw_lines) == len(r.messages) == len(r.line_lengths)
    assert all(json.loads(line)["session_id"] == r.session_id for line in r.raw_lines)


def test_invoke_llm_text_defaults_to_prompt(toy):
    r = llm(toy, prompt=[user_message("first"), {"role": "assistant", "content": "x"}, user_message("echo me")])
    assert cr.check_llm_stream(r) == []
    assert cr.collect_text(r) == "echo me" * 3  # default: 3 chunks of the last user message


def test_stream_yields_messages_as_they_arrive(toy):
    seen = []
    for msg in toy.stream(*invoke_llm("toy", "toy-chat", GOOD, [user_message("x")], {"chunks": 4, "chunk_text": "z"})):
        seen.append(msg)
        assert set(msg) >= {"type", "data", "_t", "_seq"}
    assert [m["type"] for m in seen] == ["stream"] * 5 + ["end"]
    assert [m["_seq"] for m in seen] == sorted(m["_seq"] for m in seen)
    assert toy.in_flight() == []


def test_invoke_llm_non_stream_single_chunk(toy):
    r = llm(toy, {"chunks": 4, "chunk_text": "q", "tool_calls": 2}, stream=False)
    assert cr.check_non_stream(r) == []
    assert len(r.chunks) == 1
    assert cr.collect_text(r) == "qqqq"
    assert [(c["id"], c["function"]["name"]) for c in cr.tool_calls(r)] == [("call_0", "toy_tool"),
                                                                             ("call_1", "toy_tool")]
    assert cr.final_usage(r)["completion_tokens"] == 6


def test_tool_calls_complete_mode_is_what_agents_need(toy):
    tools = [
        {"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {}}},
        {"name": "get_time", "description": "time", "parameters": {"type": "object", "properties": {}}},
    ]
    r = llm(toy, {"chunks": 1, "chunk_text": "t", "tool_calls": 3}, tools=tools)
    assert cr.check_llm_stream(r, require_finish_reason=True) == []
    assert cr.check_tool_call_chunks(r) == []
    merged = cr.tool_calls(r)
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in merged] == [
        ("call_0", "get_weather", {"i": 0}),
        ("call_1", "get_time", {"i": 1}),
        ("call_2", "get_weather", {"i": 2}),
    ]
    # the agents' per-chunk view equals the merged view when calls are whole
    assert cr.agent_tool_calls(r) == [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
                                      for c in merged]
    assert cr.finish_reason(r) == "tool_calls"
    # tool-call chunks carry content "" (never null)
    assert all(c["delta"]["message"]["content"] == "" for c in r.chunks if c["delta"]["message"]["tool_calls"])


def test_tool_calls_incremental_fragments_are_flagged(toy):
    r = llm(toy, {"chunks": 0, "tool_calls": 2, "tool_call_mode": "incremental"})
    # the chunks themselves are schema-valid ...
    assert all(cr.check_llm_chunk(c) == [] for c in r.chunks)
    assert cr.check_session(r) == []
    # ... Dify's id-merge reassembles them ...
    merged = cr.tool_calls(r)
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in merged] == [("call_0", {"i": 0}),
                                                                                   ("call_1", {"i": 1})]
    # ... but Dify's streaming agents parse each fragment as a whole call
    problems = cr.check_tool_call_chunks(r)
    assert any("empty id" in p for p in problems) and any("not complete JSON" in p for p in problems)
    assert cr.check_llm_stream(r) != []
    with pytest.raises(json.JSONDecodeError):
        cr.agent_tool_calls(r)


def test_mid_stream_failure_is_error_then_end(toy):
    r = llm(toy, {"chunks": 5, "chunk_text": "a", "fail_after": 2})
    assert cr.check_session(r) == []
    assert [m["type"] for m in r.messages] == ["stream", "stream", "error", "end"]
    assert r.error["error_type"] == "InvokeConnectionError"
    assert cr.collect_text(r) == "aa"
    assert "last chunk has no usage" not in " ".join(cr.check_llm_stream(r))  # errors excuse usage


def test_get_llm_num_tokens_and_schema(toy):
    r = toy.invoke(*get_llm_num_tokens("toy", "toy-chat", GOOD, [user_message("a b c"), system_message("d e")]),
                   timeout=30)
    assert cr.check_session(r) == [] and r.error is None
    assert r.chunks == [{"num_tokens": 5}]
    r = toy.invoke(*get_ai_model_schemas("toy", "toy-chat", GOOD), timeout=30)
    assert cr.check_session(r) == [] and r.error is None
    schema = r.chunks[0]["model_schema"]
    assert schema["model"] == "toy-chat" and schema["model_type"] == "llm"
    assert {rule["name"] for rule in schema["parameter_rules"]} >= {"chunks", "chunk_text", "tool_calls"}


def test_request_builders_match_daemon_fields():
    action, data = invoke_llm("p", "m", {"k": "v"}, [user_message("hi")])
    assert action == "invoke_llm"
    assert data["model_type"] == "llm" and data["model_parameters"] == {}
    assert data["tools"] is None and data["stop"] is None and data["json_schema"] is None and data["stream"] is True
    assert get_llm_num_tokens("p", "m", {}, [])[1]["tools"] == []  # Go sends [] here
    env = build_envelope(action, data, "sid-1")
    assert env["event"] == "request" and env["session_id"] == "sid-1"
    assert all(env[k] is None for k in ("conversation_id", "message_id", "app_id", "endpoint_id", "context"))
    assert env["data"]["user_id"] == "test-user" and env["data"]["type"] == "model"
    assert env["data"]["action"] == "invoke_llm"


# ---------------------------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------------------------
def test_eight_concurrent_sessions_complete_and_interleave(toy):
    n_sessions, n_chunks = 8, 200
    results: dict[int, SessionResult] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_sessions)

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = llm(toy, {"chunks": n_chunks, "chunk_text": f"<{i}>", "yield_every": 1})
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(results) == list(range(n_sessions))
    assert len({r.session_id for r in results.values()}) == n_sessions
    for i, r in results.items():
        assert cr.check_llm_stream(r) == [], (i, cr.check_llm_stream(r))
        assert cr.collect_text(r) == f"<{i}>" * n_chunks  # no cross-talk between sessions
    # every session was in flight together with others ...
    windows = [(r.t_sent, r.t_end) for r in results.values()]
    for a in windows:
        overlapping = sum(1 for b in windows if b is not a and b[0] < a[1] and a[0] < b[1])
        assert overlapping >= 1, windows
    # ... and their messages interleave on stdout (not 8 contiguous blocks)
    timeline = sorted((m["_seq"], i) for i, r in results.items() for m in r.messages)
    runs = 1 + sum(1 for a, b in pairwise(timeline) if a[1] != b[1])
    assert runs > 4 * n_sessions, runs
    assert toy.in_flight() == []


# ---------------------------------------------------------------------------------------------
# odd requests
# ---------------------------------------------------------------------------------------------
def test_unknown_action_gets_only_end(toy):
    r = toy.invoke("no_such_action", {"provider": "toy"}, timeout=30)
    assert cr.check_session(r) == []
    assert [m["type"] for m in r.messages] == ["end"]
    assert r.error is None and r.chunks == []


def test_invalid_request_fields_get_validation_error(toy):
    r = toy.invoke("invoke_llm", {"provider": "toy"}, timeout=30)  # most required fields missing
    assert cr.check_session(r) == []
    assert [m["type"] for m in r.messages] == ["error", "end"]
    assert r.error["error_type"] == "ValidationError"


def test_unparsable_request_line_gets_plugin_error_and_plugin_survives(toy):
    before = len(toy.plugin_errors)
    toy.send_raw("this is not json\n")
    assert toy.wait_for(lambda: len(toy.plugin_errors) > before, timeout=10)
    err = toy.plugin_errors[before]
    assert err["event"] == "error" and err["session_id"] is None and isinstance(err["data"]["error"], str)
    # still serving
    r = llm(toy, {"chunks": 1, "chunk_text": "ok"})
    assert cr.check_llm_stream(r) == [] and cr.collect_text(r) == "ok"


def test_stdout_hygiene_so_far(toy):
    # runs after the tests above in file order; the SDK should never have broken the framing
    assert toy.non_json_lines == []
    assert toy.unknown_events == []
    assert toy.orphan_messages == []
    assert toy.line_lengths and toy.max_line_length == max(toy.line_lengths)
    assert toy.max_line_length + 1 <= MAX_LINE_BYTES


# ---------------------------------------------------------------------------------------------
# chunk rules on hand-made payloads (negative cases)
# ---------------------------------------------------------------------------------------------
def _chunk(**delta_over):
    delta = {"index": 0, "message": {"role": "assistant", "content": "x", "tool_calls": []}, "usage": None,
             "finish_reason": None}
    delta.update(delta_over)
    return {"model": "m", "prompt_messages": [], "system_fingerprint": None, "delta": delta}


def test_chunk_rules_negative_cases():
    assert cr.check_llm_chunk(_chunk()) == []
    null = {"role": "assistant", "content": None, "tool_calls": []}
    assert any("content is null" in v for v in cr.check_llm_chunk(_chunk(message=null)))
    parts = {"role": "assistant", "content": [{"type": "text", "data": "a"}], "tool_calls": []}
    assert cr.check_llm_chunk(_chunk(message=parts)) == []
    assert cr.check_llm_chunk(_chunk(message={"role": "assistant", "content": 3, "tool_calls": []}))
    assert any("index" in v for v in cr.check_llm_chunk(_chunk(index=None)))
    assert any("model" in v for v in cr.check_llm_chunk({**_chunk(), "model": ""}))
    bad_tc = {"id": "a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
    bad = {"role": "assistant", "content": "", "tool_calls": [bad_tc]}
    assert any("arguments must be a string" in v for v in cr.check_llm_chunk(_chunk(message=bad)))
    full = ({f: 0 for f in cr.USAGE_INT_FIELDS} | {f: "0" for f in cr.USAGE_DECIMAL_FIELDS}
            | {"currency": "USD", "latency": 0.1})
    assert len(cr.USAGE_FIELDS) == 12
    assert cr.check_llm_chunk(_chunk(usage=full)) == []
    partial = dict(full)
    del partial["latency"]
    assert any("latency" in v for v in cr.check_llm_chunk(_chunk(usage=partial)))
    assert any("decimal" in v for v in cr.check_llm_chunk(_chunk(usage=full | {"total_price": "abc"})))
    assert any("finish_reason" in v for v in cr.check_llm_chunk(_chunk(finish_reason=1)))


def test_session_rules_negative_cases():
    end = {"type": "end", "data": {}}
    r = SessionResult(session_id="s", messages=[end, {"type": "stream", "data": {}}], ended=True,
                      line_lengths=[10, MAX_LINE_BYTES])
    v = cr.check_session(r)
    assert any("last message" in x for x in v) and any("bytes" in x for x in v)
    r = SessionResult(session_id="s", messages=[end, end], ended=True, stdout_non_json=["oops"])
    v = cr.check_session(r)
    assert any("exactly one" in x for x in v) and any("non-JSON" in x for x in v)
    error = {"type": "error", "data": {"error_type": "E", "message": "m", "args": {}}}
    r = SessionResult(session_id="s", messages=[error, {"type": "stream", "data": {}}, end], ended=True)
    assert any("followed by" in x for x in cr.check_session(r))
    r = SessionResult(session_id="s", messages=[end], ended=True, late_messages=[{"type": "stream"}])
    assert any("after 'end'" in x for x in cr.check_session(r))
    assert any("did not end" in x for x in cr.check_session(SessionResult(session_id="s")))


# ---------------------------------------------------------------------------------------------
# lifecycle
# ---------------------------------------------------------------------------------------------
def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_close_kills_and_reaps():
    p = PluginProcess(TOY_DIR)
    with p.start(ready_timeout=30):
        pid = p.pid
        assert _pid_exists(pid)
        r = p.invoke_llm("toy", "toy-chat", GOOD, [user_message("hi")], {"chunks": 2})
        assert cr.check_llm_stream(r) == []
    assert p.returncode == -9  # SIGKILLed (the SDK would spin forever on stdin EOF)
    assert not _pid_exists(pid)  # reaped: no zombie left behind
    with pytest.raises(PluginDiedError):
        p.invoke_llm("toy", "toy-chat", GOOD, [user_message("hi")])
    p.close()  # idempotent


def test_crash_mid_session_is_reported():
    p = PluginProcess(TOY_DIR)
    with p.start(ready_timeout=30):
        pid = p.pid
        # the process dies while a long stream is in flight: the waiting session is told
        partial = SessionResult(session_id="")
        with pytest.raises(PluginDiedError) as exc:
            request = invoke_llm("toy", "toy-chat", GOOD, [user_message("x")], {"chunks": 1_000_000})
            for i, _msg in enumerate(p.stream(*request, result=partial)):
                if i == 10:
                    os.kill(pid, signal.SIGKILL)
        assert exc.value.result is partial
        assert not partial.ended and partial.failure == "died" and len(partial.chunks) >= 11
        assert any("did not end" in v for v in cr.check_session(partial))
    assert p.returncode == -9
    assert not _pid_exists(pid)  # close() (via __exit__) reaped it


def test_launch_like_the_daemon_and_report_start_failures(tmp_path):
    # a fake "plugin" reports its launch context as its manifest line, then heartbeats
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "main.py").write_text(textwrap.dedent("""
        import json, os, sys
        print(json.dumps({"install_method": os.environ.get("INSTALL_METHOD"),
                          "extra": os.environ.get("HARNESS_EXTRA"), "cwd": os.getcwd(),
                          "argv0": sys.argv[0]}), flush=True)
        print("stray print output", flush=True)
        print(json.dumps({"event": "heartbeat", "session_id": None, "data": {}}), flush=True)
        print(flush=True)
        sys.stdin.read()  # EOF
        while True:       # behave like the SDK: do not exit on EOF
            pass
    """))
    p = PluginProcess(fake, env={"HARNESS_EXTRA": "yes", "INSTALL_METHOD": "remote"}).start(ready_timeout=10)
    try:
        assert p.manifest["install_method"] == "local"  # forced, like the daemon
        assert p.manifest["extra"] == "yes"
        assert Path(p.manifest["cwd"]) == fake.resolve()
        assert p.manifest["argv0"].endswith("main.py")  # run as `python -m main`
        assert p.non_json_lines == ["stray print output"]
        assert p.heartbeats == 1
        assert p.wait_for(lambda: p.blank_lines == 1, timeout=5)  # the line after the heartbeat
        p.proc.stdin.close()  # EOF is not enough to stop it ...
        time.sleep(0.2)
        assert p.alive()
    finally:
        p.close()  # ... close() kills it
    assert not p.alive()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "main.py").write_text("import sys\nsys.stderr.write('boom-marker\\n')\nsys.exit(3)\n")
    with pytest.raises(PluginStartError, match="boom-marker"):
        PluginProcess(broken).start(ready_timeout=10)
