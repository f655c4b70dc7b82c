"""deepseek_sim.deltas without a socket: however vLLM or SGLang group the pieces into deltas,
the deltas carry every piece once, in order, and end with the finish reason."""

import json

import pytest

from deepseek_sim import script
from deepseek_sim.deltas import Limited, sglang_deltas, vllm_deltas

HI = {"messages": [{"role": "user", "content": "hi"}]}
TOOLS = {**HI, "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]}


def _replay(deltas, body: dict, vllm: bool, n: int, limit: int = 10_000):
    pieces = list(script.generate(body, "reasoning", vllm))
    out = list(deltas(Limited(iter(pieces), limit), n, "reasoning", script.wants_tools(body)))
    got = {"r": "", "c": "", "ta": ""}
    for delta, _, _ in out:
        d = json.loads(delta)
        got["r"] += d.get("reasoning") or ""
        got["c"] += d.get("content") or ""
        got["ta"] += "".join(c["function"].get("arguments") or "" for c in d.get("tool_calls") or [])
    return pieces, out, got


@pytest.mark.parametrize("deltas, vllm", [(vllm_deltas, True), (sglang_deltas, False)], ids=["vllm", "sglang"])
@pytest.mark.parametrize("body, finish", [(HI, "stop"), (TOOLS, "tool_calls")], ids=["chat", "tools"])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_deltas_carry_every_piece_once_and_end_with_the_finish_reason(deltas, vllm, body, finish, n):
    pieces, out, got = _replay(deltas, body, vllm, n)
    want = {k: "".join(p[-1] for p in pieces if p[0] == k) for k in ("r", "c", "ta")}
    assert got == want
    assert sum(ntok for _, ntok, _ in out) == len(pieces)
    assert all(ntok <= n for _, ntok, _ in out)
    assert [f for _, _, f in out if f is not None] == [finish]
    assert out[-1][2] == finish


@pytest.mark.parametrize("deltas, vllm", [(vllm_deltas, True), (sglang_deltas, False)], ids=["vllm", "sglang"])
def test_a_reply_cut_by_max_tokens_ends_with_length(deltas, vllm):
    pieces, out, _ = _replay(deltas, HI, vllm, 1, limit=3)
    assert sum(ntok for _, ntok, _ in out) == 3 < len(pieces)
    assert out[-1][2] == "length"
