"""A burst of token counting on a fresh plugin: every session ends, with its count (issue 12, item 1).

The plugin counts tokens in gevent's OS-thread pool, and the first counts of a process load the
tokenizer there, behind one lock: 16 at once used to leave 5-8 sessions unanswered forever."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from deepseek_sim import SimConfig, Simulator
from tests.protocol import chunk_rules as cr
from tests.protocol.harness import SessionResult, get_llm_num_tokens, invoke_llm, user_message
from tests.protocol.plugin_util import PROVIDER, free_url, running_plugin

BURST = 16
BOUND = 45  # seconds each session may take: counting takes milliseconds, a lost one takes forever


def _hellos(n: int) -> str:
    return " ".join(["hello"] * n)  # n tokens


def _burst(run) -> list[SessionResult]:
    """``run(i)`` for i in range(BURST), all at once; the results in order."""
    with ThreadPoolExecutor(BURST) as pool:
        results = list(pool.map(run, range(BURST)))
    unanswered = [i for i, r in enumerate(results) if not r.ended]
    assert not unanswered, f"{len(unanswered)} of {BURST} sessions never ended: {unanswered}"
    return results


def test_sixteen_concurrent_token_counts_on_a_fresh_plugin_all_answer():
    creds = {"endpoint_urls": free_url(), "api_key": None, "served_model_name": None}  # no server asked
    with running_plugin() as plugin:
        results = _burst(lambda i: plugin.invoke(
            *get_llm_num_tokens(PROVIDER, "deepseek-r1", creds, [user_message(_hellos(i + 1))]),
            timeout=BOUND, allow_incomplete=True))
        assert plugin.alive()
    for i, r in enumerate(results):
        assert r.error is None, (i, r.error)
        assert r.chunks[0]["num_tokens"] == (i + 1) + 2 + 2, (i, r.chunks)  # text + per message + per request


def test_sixteen_concurrent_invokes_without_server_usage_all_end_with_usage():
    """A server that sends no usage: the plugin counts both sides itself, at the end of each stream."""
    with Simulator(SimConfig(served_model="deepseek-ai/DeepSeek-R1", usage="never")) as sim, \
            running_plugin() as plugin:
        creds = {"endpoint_urls": sim.base_url, "api_key": None, "served_model_name": None}
        results = _burst(lambda i: plugin.invoke(
            *invoke_llm(PROVIDER, "deepseek-r1", creds, [user_message(f"question {i}")]),
            timeout=BOUND, allow_incomplete=True))
        assert plugin.alive()
    for i, r in enumerate(results):
        assert r.error is None, (i, r.error)
        assert cr.check_llm_stream(r, require_usage=True, require_finish_reason=True) == [], i
        usage = cr.final_usage(r)
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, (i, usage)
