"""The answer cache's pure parts: which requests it may answer, their keys, the stored value,
the replay and the circuit (answer_cache/)."""

import zlib

import pytest

from deepseek_engine.answer_cache.circuit import Circuit
from deepseek_engine.answer_cache.entry import BadEntry, Entry, decode, encode
from deepseek_engine.answer_cache.key import answer_key, cache_scope, canonical, uncacheable
from deepseek_engine.answer_cache.replay import replay
from deepseek_engine.answer_cache.revision import served_revision
from deepseek_engine.errors import ConfigError
from deepseek_engine.settings import AnswerCacheSettings, parse_settings

BODY = {"model": "deepseek-r1", "messages": [{"role": "user", "content": "classify: refund"}],
        "temperature": 0, "max_tokens": 64, "stream": True, "stream_options": {"include_usage": True}}
CALL = {"id": "call-1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}


def key(body, scope="s", revision="r", epoch=""):
    return answer_key(scope, body, revision=revision, epoch=epoch)


def test_only_one_deterministic_choice_without_logprobs_is_cacheable():
    assert uncacheable(BODY, sampled=False) is None
    assert uncacheable({**BODY, "temperature": 0.7}, sampled=False) == "sampled"
    assert uncacheable({k: v for k, v in BODY.items() if k != "temperature"}, sampled=False) == "sampled"
    assert uncacheable({**BODY, "temperature": 0.7}, sampled=True) is None  # the explicit opt-in
    assert uncacheable({**BODY, "n": 2}, sampled=True) == "n"
    assert uncacheable({**BODY, "logprobs": True}, sampled=True) == "logprobs"


def test_the_key_ignores_stream_and_user_and_order_but_nothing_that_decides_the_answer():
    k = key(BODY)
    assert k.startswith("dshc:v1:s:")
    assert key({**BODY, "stream": False, "user": "u-1", "stream_options": None}) == k
    assert key(dict(reversed(list(BODY.items())))) == k  # the canonical form sorts keys
    changed = [
        {**BODY, "messages": [{"role": "user", "content": "classify: refund!"}]},
        {**BODY, "messages": [{"role": "system", "content": "x"}, *BODY["messages"]]},
        {**BODY, "max_tokens": 65}, {**BODY, "stop": ["\n"]}, {**BODY, "tools": [{"type": "function"}]},
        {**BODY, "response_format": {"type": "json_object"}}, {**BODY, "model": "deepseek-v3"},
        {**BODY, "chat_template_kwargs": {"thinking": True}},
    ]
    assert len({key(b) for b in changed} | {k}) == len(changed) + 1
    assert key(BODY, scope="t") != k and key(BODY, revision="r2") != k and key(BODY, epoch="2") != k


def test_the_canonical_form_is_versioned_and_unambiguous():
    doc = canonical(BODY, revision="r", epoch="e")
    assert doc.startswith(b'{"body":') and b'"schema":1' in doc and b'"stream"' not in doc
    # a message's text cannot forge the structure around it (JSON escapes it)
    assert key({**BODY, "messages": [{"role": "user", "content": 'a"},{"role":"user","content":"b'}]}) != \
        key({**BODY, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})


def test_scopes_are_keyed_and_differ_by_credential_and_endpoints():
    a = cache_scope("cred-a", ("http://gpu:8000/v1",), b"k" * 32)
    assert a == cache_scope("cred-a", ("http://gpu:8000/v1",), b"k" * 32)
    assert a != cache_scope("cred-b", ("http://gpu:8000/v1",), b"k" * 32)
    assert a != cache_scope("cred-a", ("http://gpu-2:8000/v1",), b"k" * 32)
    assert a != cache_scope("cred-a", ("http://gpu:8000/v1",), b"j" * 32)
    assert "cred-a" not in a and len(a) == 32


def test_an_entry_round_trips_and_anything_else_is_unreadable():
    e = Entry("<think>\nhm\n</think>\n\nyes", [CALL], "tool_calls", 12, 7)
    assert decode(encode(e)) == e
    raw = encode(e)
    flipped = raw[:10] + bytes([raw[10] ^ 0xFF]) + raw[11:]
    for bad in (b"", b"garbage", b"\x02" + raw[1:], flipped, raw[:-3],
                b"\x01" + zlib.compress(b'{"t": 1}'), b"\x01" + zlib.compress(b"[1]"),
                b"\x01" + zlib.compress(b'{"t":"a","c":[{"id":1}],"f":"stop","p":1,"o":1}'),
                b"\x01" + zlib.compress(b'{"t":"a","c":[],"f":"length","p":1,"o":1}')):
        with pytest.raises(BadEntry):
            decode(bad)


def test_replay_streams_text_in_pieces_then_calls_or_gives_it_whole():
    e = Entry("x" * 600, [CALL], "tool_calls", 1, 2)
    before, last = replay(e, streamed=True, chars=256)
    assert [len(p.text) for p in before] == [256, 256, 88] and last.text == "" and last.tool_calls == [CALL]
    assert last.tool_calls[0] is not CALL  # the caller may change its copy, not the entry
    before, last = replay(e, streamed=False)
    assert before == [] and last.text == "x" * 600 and last.tool_calls == [CALL]


def test_the_circuit_opens_after_repeated_errors_and_tries_once_per_cooldown():
    now = [0.0]
    c = Circuit(threshold=3, cooldown=10, clock=lambda: now[0])
    assert [c.failure() for _ in range(3)] == [False, False, True]
    assert not c.allows()
    now[0] = 10.5
    assert c.allows() and not c.allows()  # one trial, the others still bypass
    c.failure()
    now[0] = 15
    assert not c.allows()
    now[0] = 21
    assert c.allows()
    assert c.success() and c.allows() and c.allows()


def test_a_success_resets_the_count_of_errors():
    c = Circuit(threshold=2, cooldown=10, clock=lambda: 0.0)
    c.failure()
    c.success()
    assert not c.failure() and c.allows()


def test_the_revision_is_what_the_listing_says_of_the_served_id():
    listing = [{"id": "other", "root": "/m/o"}, {"id": "deepseek-r1", "root": "/m/r1", "max_model_len": 8192}]
    assert served_revision("deepseek-r1", listing) == "/m/r1|8192"
    assert served_revision("deepseek-r1", None) == "" and served_revision("x", listing) == ""


def test_the_credential_fields_are_validated():
    base = {"endpoint_urls": "http://gpu:8000/v1", "api_key": "sk-team-a-0001"}
    assert parse_settings(base).answer_cache == AnswerCacheSettings("off", 3600, False)
    s = parse_settings({**base, "answer_cache": "shadow", "answer_cache_ttl": "60", "answer_cache_sampled": "true"})
    assert s.answer_cache == AnswerCacheSettings("shadow", 60, True)
    for bad in ({"answer_cache": "always"}, {"answer_cache": "on", "answer_cache_ttl": "0"},
                {"answer_cache": "on", "answer_cache_ttl": "999999"}, {"answer_cache_sampled": "maybe"}):
        with pytest.raises(ConfigError, match="answer_cache"):
            parse_settings({**base, **bad})


@pytest.mark.parametrize("mode", ["on", "shadow"])
def test_a_credential_without_a_secret_cannot_turn_the_cache_on(mode):
    # nothing tells two workspaces' keyless credentials apart: their entries would be shared
    keyless = {"endpoint_urls": "http://gpu:8000/v1", "answer_cache": mode}
    with pytest.raises(ConfigError, match="has none: set an API key") as e:
        parse_settings(keyless)
    assert "answer_cache off" in str(e.value)
    assert parse_settings({**keyless, "answer_cache": "off"}).answer_cache.mode == "off"
    assert parse_settings({**keyless, "endpoint_urls": "http://u:pw-0001@gpu:8000/v1"}).answer_cache.mode == mode


def test_a_body_json_cannot_hold_exactly_bypasses_the_cache_instead_of_failing():
    from deepseek_engine.answer_cache import AnswerCache

    cache = AnswerCache(store=object())  # never reached: the key cannot be made
    settings = parse_settings({"endpoint_urls": "http://gpu:8000/v1", "api_key": "sk-1", "answer_cache": "on"})
    for odd in (float("nan"), object()):
        assert cache.visit(settings, {**BODY, "top_p": odd}, "deepseek-r1", revision="r") is None
    assert cache.counts["bypass:unkeyable"] == 2
    assert cache.visit(settings, BODY, "deepseek-r1", revision="r") is not None
