"""The doctor against real vLLM: what it says about each server of the tier is what those servers
are (conftest.py): ``hybrid`` honours the thinking switch with V3.1's parsers, ``raw`` runs no
parser, none of them takes images. The served names are aliases (``tiny-…``), so the plugin model
each stands for is given as ``--catalogue`` does."""

from __future__ import annotations

import pytest

import deepseek_doctor as doctor


def _report(server, catalogue: str) -> dict:
    report = doctor.run([server.base_url], doctor.Options(requests=1, catalogue=catalogue))
    checks = {c.name: c for c in report.endpoints[0].checks}
    assert report.endpoints[0].flavor == "vllm"
    return checks


def test_doctor_on_the_hybrid_server(vllm_servers):
    checks = _report(vllm_servers.hybrid, "deepseek-v3.1")
    assert checks["models"].data["family"] == "v3.1"
    assert checks["reasoning"].status == "ok" and "`reasoning`" in checks["reasoning"].detail
    thinking = checks["thinking"]
    assert thinking.status == "ok" and "honours the thinking switch" in thinking.detail, thinking
    assert (thinking.data["on"], thinking.data["off"], thinking.data["omitted"]) == (True, False, False)
    tools = checks["tools"]
    assert tools.status == "ok" and tools.data["called"] == ["get_weather"], tools
    images = checks["images"]
    assert images.status == "ok" and images.data["accepted"] is False, images
    assert f"{vllm_servers.hybrid.served_name} is not a multimodal model" in images.detail


@pytest.mark.parametrize("name, reasoning, tools", [
    ("parsed", "ok", "ok"),
    ("raw", "warn", "warn"),  # no parser: both named with R1's flags
])
def test_doctor_on_the_r1_servers(vllm_servers, name, reasoning, tools):
    checks = _report(vllm_servers[name], "deepseek-r1")
    assert checks["reasoning"].status == reasoning, checks["reasoning"]
    assert checks["tools"].status == tools, checks["tools"]
    if name == "raw":
        assert "--reasoning-parser deepseek_r1" in checks["reasoning"].detail
        assert "--enable-auto-tool-choice" in checks["tools"].detail
    assert checks["thinking"].status == "ok" and checks["thinking"].data["switch"] is False
    assert checks["images"].status == "ok" and checks["images"].data["accepted"] is False
    structured = checks["structured"]  # vLLM's xgrammar, after the reasoning when a parser runs
    assert structured.status == "ok" and structured.data["constrained"] is True, structured
    assert ("after its reasoning" in structured.detail) == (name == "parsed"), structured
