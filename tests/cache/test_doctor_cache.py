"""The doctor's check of the answer cache's Redis, against real redis-servers: sized and fast is
ok, no maxmemory warns, down or hanging fails, and no password is ever shown."""

from __future__ import annotations

from deepseek_doctor import Options, run
from deepseek_doctor.cache import check_cache
from deepseek_sim import SimConfig, Simulator
from tests.cache.redisserver import Mute, RedisServer
from tests.protocol.plugin_util import free_port


def test_a_sized_redis_is_ok(redis_server):
    c = check_cache({"DEEPSEEK_CACHE_REDIS_URL": redis_server.url})
    assert c.status == "ok", c.detail
    assert c.data["policy"] == "allkeys-lru" and c.data["maxmemory"] > 0


def test_no_maxmemory_warns_with_what_to_set(redis_server):
    redis_server.command("CONFIG", "SET", "maxmemory", "0")
    c = check_cache({"DEEPSEEK_CACHE_REDIS_URL": redis_server.url})
    assert c.status == "warn" and "maxmemory" in c.detail and "allkeys-lru" in c.detail


def test_down_or_hanging_fails_and_no_url_is_no_check():
    assert check_cache({}) is None
    down = check_cache({"DEEPSEEK_CACHE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.status == "fail" and "DEEPSEEK_CACHE_REDIS_URL" in down.detail
    with Mute() as mute:
        hanging = check_cache({"DEEPSEEK_CACHE_REDIS_URL": mute.url})
    assert hanging.status == "fail" and "Timeout" in hanging.detail
    bad = check_cache({"DEEPSEEK_CACHE_REDIS_URL": "http://cache:6379"})
    assert bad.status == "fail" and "redis://" in bad.detail


def test_the_doctor_reports_the_cache_without_its_password(redis_binary, monkeypatch):
    server = RedisServer(redis_binary, password="cache-PASSWORD-9913").start()
    try:
        monkeypatch.setenv("DEEPSEEK_CACHE_REDIS_URL", server.url)
        with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
            report = run([sim.base_url], Options(requests=1))
        [cache] = [c for c in report.fleet if c.name == "cache"]
        assert cache.status == "ok", cache.detail
        monkeypatch.setenv("DEEPSEEK_CACHE_REDIS_URL", server.url.replace("PASSWORD", "WRONG"))
        with Simulator(SimConfig(served_model="deepseek-r1")) as sim:
            report = run([sim.base_url], Options(requests=1))
        [cache] = [c for c in report.fleet if c.name == "cache"]
        assert cache.status == "fail"
        assert "cache-WRONG-9913" not in report.render() and "cache-WRONG-9913" not in report.to_json()
    finally:
        server.close()
