"""The doctor says whether the server constrains output to a JSON schema (Dify's structured
output through the plugin), and what to change when it refuses or ignores the constraint."""

from __future__ import annotations

import pytest

from tests.doctor.test_doctor import _check, _json


@pytest.mark.parametrize("shape, flavor, model, backend, phrase", [
    ("reasoning", "vllm", "deepseek-r1", "chosen per request by vLLM", "after its reasoning"),
    ("think_inline", "sglang", "deepseek-r1", "not named by the server", "constrains output to a JSON schema"),
    ("plain", "vllm", "deepseek-v3", "chosen per request by vLLM", "constrains output to a JSON schema"),
])
def test_a_server_that_constrains_output_is_reported(make_sim, run_doctor, shape, flavor, model, backend, phrase):
    sim = make_sim(shape=shape, flavor=flavor, served_model=model)
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "structured")
    assert c["status"] == "ok" and c["data"]["constrained"] is True, c
    assert phrase in c["detail"] and backend in c["data"]["backend"]
    assert code == 0


def test_sglang_without_a_grammar_backend_is_told_the_flag(make_sim, run_doctor):
    sim = make_sim(flavor="sglang", grammar_backend="none")
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "structured")
    assert c["status"] == "warn" and c["data"]["constrained"] is False, c
    assert "without --grammar-backend none" in c["detail"] and "Structured output off" in c["detail"]
    assert code == 0


def test_a_server_that_ignores_the_constraint_is_flagged(make_sim, run_doctor):
    sim = make_sim(grammar_backend="ignored")
    code, rep, _ = _json(run_doctor, sim.base_url)
    c = _check(rep, "structured")
    assert c["status"] == "warn" and "ignores response_format" in c["detail"], c
    assert c["data"]["constrained"] is False
