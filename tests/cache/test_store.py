"""The cache's Redis as the plugin's environment names it: a password and TLS (``rediss://`` with
the operator's CA) work; a wrong password, an unknown CA or a full Redis are errors the cache
absorbs (a miss, the circuit), never a failed request, and never show the password."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest

from deepseek_engine.answer_cache import AnswerCache, Entry
from deepseek_engine.settings import parse_settings
from tests.cache.redisserver import RedisServer
from tests.security.certs import issue, make_ca

SETTINGS = parse_settings({"endpoint_urls": "http://gpu:8000/v1", "api_key": "sk-store-0001", "answer_cache": "on"})
BODY = {"model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 0}
ENTRY = Entry("<think>\nhm\n</think>\n\nyes", [], "stop", 3, 4)
PASSWORD = "cache-pw-SECRET-5521"


@pytest.fixture(scope="module")
def pki():
    d = Path(tempfile.mkdtemp(prefix="dshc-tls-"))
    ca, ca_cert, ca_key = make_ca("Cache CA")
    server = issue(ca_cert, ca_key, "127.0.0.1", server=True)
    other, _, _ = make_ca("Another CA")
    for name, text in (("ca.pem", ca.cert), ("other.pem", other.cert), ("cert.pem", server.cert),
                       ("key.pem", server.key)):
        (d / name).write_text(text)
    return d


def round_trip(cache: AnswerCache) -> Entry | None:
    visit = cache.visit(SETTINGS, BODY, "m", revision="r")
    visit.keep(ENTRY)
    assert cache.writer.drain()
    return cache.visit(SETTINGS, BODY, "m", revision="r").lookup()


def test_tls_and_a_password_from_the_environment(redis_binary, pki):
    server = RedisServer(redis_binary, password=PASSWORD, tls=(str(pki / "cert.pem"), str(pki / "key.pem"))).start()
    try:
        url = f"rediss://127.0.0.1:{server.port}/0"
        env = {"DEEPSEEK_CACHE_REDIS_URL": url, "DEEPSEEK_CACHE_REDIS_PASSWORD": PASSWORD,
               "DEEPSEEK_CACHE_REDIS_CA": str(pki / "ca.pem"), "DEEPSEEK_CACHE_TIMEOUT_MS": "1000"}
        assert round_trip(AnswerCache.from_env(env)) == ENTRY
        for wrong in ({"DEEPSEEK_CACHE_REDIS_CA": str(pki / "other.pem")},
                      {"DEEPSEEK_CACHE_REDIS_PASSWORD": "not-the-password"},
                      {"DEEPSEEK_CACHE_REDIS_URL": url.replace("rediss", "redis"), "DEEPSEEK_CACHE_REDIS_CA": ""}):
            cache = AnswerCache.from_env({**env, **wrong})
            assert round_trip(cache) is None and cache.counts["error"] == 2  # the write and the read
    finally:
        server.close()


def test_a_full_redis_refuses_writes_and_costs_nothing_else(redis_server, caplog):
    redis_server.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis_server.command("CONFIG", "SET", "maxmemory", "1")  # full already: every write refused
    cache = AnswerCache.from_env({"DEEPSEEK_CACHE_REDIS_URL": redis_server.url, "DEEPSEEK_CACHE_TIMEOUT_MS": "1000"})
    with caplog.at_level(logging.WARNING, logger="deepseek_engine.answer_cache.cache"):
        for _ in range(3):
            assert round_trip(cache) is None  # the read worked: a miss
    assert cache.counts["error"] == 3 and cache.counts["miss"] == 3
    assert cache.counts["bytes_written"] == 0


def test_no_password_reaches_a_log_or_a_count(redis_binary, caplog):
    server = RedisServer(redis_binary, password=PASSWORD).start()
    try:
        wrong = server.url.replace(PASSWORD, "wrong-pw-SECRET-0000")
        cache = AnswerCache.from_env({"DEEPSEEK_CACHE_REDIS_URL": wrong, "DEEPSEEK_CACHE_TIMEOUT_MS": "1000"})
        with caplog.at_level(logging.DEBUG):
            for _ in range(6):
                round_trip(cache)
        assert cache.circuit.open
        text = caplog.text + repr(dict(cache.counts)) + cache.store.name
        assert "SECRET" not in text and "127.0.0.1" in caplog.text
    finally:
        server.close()


def test_a_malformed_environment_leaves_the_cache_off_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        cache = AnswerCache.from_env({"DEEPSEEK_CACHE_REDIS_URL": "http://cache:6379"})
        bad_ms = AnswerCache.from_env({"DEEPSEEK_CACHE_REDIS_URL": "redis://c:6379", "DEEPSEEK_CACHE_TIMEOUT_MS": "0"})
        no_tls = AnswerCache.from_env({"DEEPSEEK_CACHE_REDIS_URL": "redis://c:6379", "DEEPSEEK_CACHE_REDIS_CA": "/ca"})
    assert cache.store is None and bad_ms.store is None and no_tls.store is None
    assert "DEEPSEEK_CACHE_REDIS_URL" in caplog.text and "DEEPSEEK_CACHE_TIMEOUT_MS" in caplog.text
    assert "rediss://" in caplog.text
    assert cache.visit(SETTINGS, BODY, "m", revision="r") is None and cache.counts["bypass:no_store"] == 1
