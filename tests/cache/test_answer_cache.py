"""The answer cache on a real redis-server, through the engine's ``Completion`` against the
simulator over loopback: hit, miss, expiry, isolation, replay of reasoning and tool calls
streamed and whole, what is never kept, and Redis killed, hanging or holding garbage."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from deepseek_engine import ChatClient, Completion, Finished
from deepseek_engine.answer_cache import AnswerCache
from deepseek_engine.answer_cache.circuit import Circuit
from deepseek_engine.answer_cache.store import RedisStore, StoreConfig
from deepseek_engine.discovery import DIRECTORY
from deepseek_engine.errors import EngineError
from deepseek_engine.health import HealthBook
from deepseek_engine.retry import RetryBudget, RetryPolicy
from deepseek_sim import SimConfig, Simulator
from tests.cache.redisserver import Mute

Q = [{"role": "user", "content": "Classify this ticket: my order never arrived"}]
DET = {"temperature": 0}
ON = {"answer_cache": "on", "api_key": "sk-team-0000"}
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                              "parameters": {"type": "object",
                                                             "properties": {"location": {"type": "string"}}}}}]


@pytest.fixture
def sim():
    DIRECTORY.clear()
    with Simulator(SimConfig(served_model="deepseek-r1", shape="reasoning")) as s:
        yield s


def make_cache(url: str, timeout: float = 2.0, circuit: Circuit | None = None) -> AnswerCache:
    return AnswerCache(RedisStore(StoreConfig(url=url, timeout=timeout)), secret=b"cache-tier" * 4,
                       circuit=circuit)


@pytest.fixture
def cache(redis_server):
    c = make_cache(redis_server.url)
    yield c
    c.store.close()


def chats(sim) -> int:
    return sum(1 for r in sim.requests if r.path.endswith("/chat/completions"))


def ask(sim, registry, cache, messages=Q, params=DET, *, creds=ON, tools=None, buffered=False) -> list:
    def make_client(settings):
        policy = RetryPolicy(backoff_base=0.01, backoff_cap=0.05, budget=RetryBudget(cap=100))
        return ChatClient(settings, registry=registry, health=HealthBook(), policy=policy, prober=None)

    full = {"endpoint_urls": sim.base_url, "served_model_name": "deepseek-r1", **creds}
    c = Completion(full, "deepseek-r1", messages, params, catalogue=True, tools=tools, buffered=buffered,
                   make_client=make_client, cache=cache)
    pieces = list(c.pieces())
    cache.writer.drain()
    return pieces


def warm(sim, registry, cache, **kw) -> list:
    """The first ask reads /v1/models in the background (the served revision is in the key) and
    bypasses the cache; once the listing is known, the next one is kept."""
    ask(sim, registry, cache, **kw)
    deadline = time.monotonic() + 5
    while not any(r.path.endswith("/models") for r in sim.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    return ask(sim, registry, cache, **kw)


def text(pieces) -> str:
    return "".join(p.text for p in pieces)


def calls(pieces) -> list:
    return [c for p in pieces for c in p.tool_calls]


def keys(server) -> list[bytes]:
    return redis.Redis.from_url(server.url).keys("dshc:*")


def test_a_repeat_is_answered_from_redis_streamed_and_whole(sim, registry, cache, redis_server):
    live = warm(sim, registry, cache)
    assert len(keys(redis_server)) == 1 and chats(sim) == 2
    streamed = ask(sim, registry, cache)
    whole = ask(sim, registry, cache, buffered=True)
    assert chats(sim) == 2  # neither reached the GPU
    assert text(streamed) == text(whole) == text(live) and text(live).startswith("<think>\n")
    assert len(streamed) > 1 and len(whole) == 1  # a stream, and one answer as blocking gives it
    for pieces in (streamed, whole):
        last = pieces[-1]
        assert isinstance(last, Finished) and last.cached and last.finish_reason == "stop"
        assert (last.prompt_tokens, last.completion_tokens) == (live[-1].prompt_tokens, live[-1].completion_tokens)
    assert not live[-1].cached
    assert cache.counts["hit"] == 2 and cache.counts["bytes_written"] > 0 and cache.counts["bytes_read"] > 0


def test_tool_calls_and_reasoning_replay_as_they_came(sim, registry, cache):
    live = warm(sim, registry, cache, tools=WEATHER)
    assert live[-1].finish_reason == "tool_calls" and calls(live)
    for buffered in (False, True):
        again = ask(sim, registry, cache, tools=WEATHER, buffered=buffered)
        assert again[-1].cached and again[-1].finish_reason == "tool_calls"
        assert calls(again) == calls(live) and text(again) == text(live) and "<think>" in text(again)
    assert chats(sim) == 2


def test_another_question_is_a_miss(sim, registry, cache):
    warm(sim, registry, cache)
    other = ask(sim, registry, cache, [{"role": "user", "content": "Classify: refund please"}])
    assert not other[-1].cached and chats(sim) == 3 and cache.counts["miss"] == 2


def test_an_entry_expires_with_its_ttl(sim, registry, cache, redis_server):
    short = {**ON, "answer_cache_ttl": "1"}
    warm(sim, registry, cache, creds=short)
    [k] = keys(redis_server)
    assert 0 < redis.Redis.from_url(redis_server.url).ttl(k) <= 1
    assert ask(sim, registry, cache, creds=short)[-1].cached
    time.sleep(1.2)
    assert not ask(sim, registry, cache, creds=short)[-1].cached and chats(sim) == 3


def test_two_credentials_never_share_entries(sim, registry, cache, redis_server):
    warm(sim, registry, cache, creds={**ON, "api_key": "sk-team-a-0001"})
    b = warm(sim, registry, cache, creds={**ON, "api_key": "sk-team-b-0002"})
    assert not b[-1].cached  # team B's first ask of the same question reached the GPU
    assert len(keys(redis_server)) == 2
    assert all(b"sk-team" not in k for k in keys(redis_server))  # no credential in a key
    assert ask(sim, registry, cache, creds={**ON, "api_key": "sk-team-a-0001"})[-1].cached


def test_sampled_answers_are_kept_only_when_opted_in(sim, registry, cache, redis_server):
    warm(sim, registry, cache, params={"temperature": 0.8})
    assert keys(redis_server) == [] and cache.counts["bypass:sampled"] == 2
    warm(sim, registry, cache, params={"temperature": 0.8}, creds={**ON, "answer_cache_sampled": "true"})
    assert ask(sim, registry, cache, params={"temperature": 0.8},
               creds={**ON, "answer_cache_sampled": "true"})[-1].cached


def test_shadow_mode_counts_would_be_hits_and_never_serves(sim, registry, cache):
    shadow = {"answer_cache": "shadow", "api_key": "sk-team-0000"}
    warm(sim, registry, cache, creds=shadow)
    again = ask(sim, registry, cache, creds=shadow)
    assert not again[-1].cached and chats(sim) == 3
    assert cache.counts["shadow_hit"] == 1 and cache.counts["shadow_miss"] == 1 and cache.counts["hit"] == 0


def test_cut_continued_and_unfinished_answers_are_never_kept(sim, registry, cache, redis_server):
    warm(sim, registry, cache, messages=[{"role": "user", "content": "[[long]]"}], params={**DET, "max_tokens": 20})
    assert keys(redis_server) == []  # finish_reason "length"
    sim.inject("drop_mid_stream", after=4)  # cut, then continued on the same endpoint
    continued = ask(sim, registry, cache)
    assert continued[-1].finish_reason == "stop" and not continued[-1].cached
    assert keys(redis_server) == []
    sim.inject("status", status=400)
    with pytest.raises(EngineError):
        ask(sim, registry, cache)
    assert keys(redis_server) == []


def test_redis_killed_mid_run_costs_nothing_and_the_cache_comes_back(sim, registry, redis_server):
    cache = make_cache(redis_server.url, timeout=0.05, circuit=Circuit(threshold=3, cooldown=0.5))
    warm(sim, registry, cache)
    assert ask(sim, registry, cache)[-1].cached
    redis_server.kill()
    answers = [ask(sim, registry, cache) for _ in range(6)]
    assert all(a[-1].finish_reason == "stop" and not a[-1].cached for a in answers)
    assert cache.circuit.open and cache.counts["error"] == 3 and cache.counts["bypass:circuit_open"] >= 3
    redis_server.start()  # empty again (no persistence): the next answers fill it
    time.sleep(0.6)
    ask(sim, registry, cache)  # the trial read: the circuit closes
    ask(sim, registry, cache)  # its write went; this one reads it
    assert not cache.circuit.open and ask(sim, registry, cache)[-1].cached


def test_a_hanging_redis_costs_one_deadline_until_the_circuit_opens(sim, registry, caplog):
    with Mute() as mute:
        cache = make_cache(mute.url, timeout=0.05, circuit=Circuit(threshold=2, cooldown=30))
        DIRECTORY.clear()
        ask(sim, registry, cache)  # the listing is read (bypassed: revision unknown)
        time.sleep(0.2)
        with caplog.at_level(logging.WARNING, logger="deepseek_engine.answer_cache.cache"):
            spent = []
            for _ in range(6):
                t = time.monotonic()
                assert ask(sim, registry, cache)[-1].finish_reason == "stop"
                spent.append(time.monotonic() - t)
        assert cache.circuit.open and cache.counts["error"] == 2
        warnings = [r for r in caplog.records if "failing" in r.getMessage()]
        assert len(warnings) == 1  # once, not per request
        assert "127.0.0.1" in warnings[0].getMessage()
        # with the circuit open a request waits on nothing: as fast as without the cache
        assert max(spent[3:]) < max(spent[:2]) + 0.5


def test_a_corrupted_value_is_a_miss_then_overwritten(sim, registry, cache, redis_server, caplog):
    live = warm(sim, registry, cache)
    [k] = keys(redis_server)
    r = redis.Redis.from_url(redis_server.url)
    with caplog.at_level(logging.WARNING, logger="deepseek_engine.answer_cache.cache"):
        for garbage in (b"\x01not zlib at all", b"\x00\xff\xfe"):
            r.set(k, garbage)
            again = ask(sim, registry, cache)
            assert not again[-1].cached and text(again) == text(live)
    assert cache.counts["unreadable"] == 2 and chats(sim) == 4
    assert len([x for x in caplog.records if "unreadable" in x.getMessage()]) == 1
    assert ask(sim, registry, cache)[-1].cached  # the miss wrote a good value back
