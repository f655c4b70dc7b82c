"""The simulator as a server with no tool parser for its model: tool calls as raw markup in content."""

import httpx
import pytest

from deepseek_sim import SimConfig
from deepseek_sim.__main__ import main
from deepseek_sim.markup import MARKUP_FAMILIES, render
from deepseek_sim.script import TOOL_REASONING
from tests.sim.simtest_util import WEATHER_TOOL, chunks_of, collect, deltas_of, stream_chat

TWO = [{"role": "user", "content": "weather please [[two tools]]"}]
CALLS = [("get_weather", '{"location": "Paris"}'), ("get_weather", '{"location": "London"}')]
MARKERS = ("<｜tool▁calls▁begin｜>", "<｜DSML｜function_calls>", "<｜DSML｜tool_calls>", "<｜DSML｜ calls>")


def test_each_family_renders_its_grammar():
    assert render(CALLS[:1], "v3") == ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n'
                                       '```json\n{"location": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
    assert render(CALLS[:1], "v31") == ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>'
                                        '{"location": "Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
    assert render([("f", '{"n": 3, "s": "杭州"}')], "v41") == (
        '<｜DSML｜ calls>\n<｜DSML｜ invoke name="f">\n'
        '<｜DSML｜ parameter name="n" string="false">3</｜DSML｜ parameter>\n'
        '<｜DSML｜ parameter name="s" string="true">杭州</｜DSML｜ parameter>\n'
        '</｜DSML｜ invoke>\n</｜DSML｜ calls>')
    assert render(CALLS[:1], "v32").startswith("<｜DSML｜function_calls>\n<｜DSML｜invoke name=")
    assert render(CALLS[:1], "v4").endswith("</｜DSML｜invoke>\n</｜DSML｜tool_calls>")


@pytest.mark.parametrize("flavor", ["vllm", "sglang"])
@pytest.mark.parametrize("family", MARKUP_FAMILIES)
def test_tool_calls_arrive_as_markup_in_content_split_across_deltas(make_sim, family, flavor):
    sim = make_sim(flavor=flavor, tool_markup=family)
    with httpx.Client(base_url=sim.base_url) as client:
        _, datas, _ = stream_chat(client, {"messages": TWO, "tools": WEATHER_TOOL})
    chunks = chunks_of(datas)
    got = collect(chunks)
    lead = "\n\n" if flavor == "vllm" else ""  # what R1 writes before a call, as vLLM cuts it
    assert got["content"] == lead + render(CALLS, family)
    assert got["reasoning"].strip() == TOOL_REASONING
    assert got["tool_calls"] == {} and got["finish_reason"] == "stop"  # a server that saw no call
    texts = [d.get("content") or "" for d in deltas_of(chunks)]
    assert not any(m in t for t in texts for m in MARKERS)  # every block marker is cut across deltas


@pytest.mark.parametrize("family", MARKUP_FAMILIES)
def test_a_blocking_answer_has_the_markup_as_its_content(make_sim, family):
    sim = make_sim(flavor="sglang", shape="plain", tool_markup=family)
    body = {"model": "deepseek-r1", "messages": TWO, "tools": WEATHER_TOOL}
    msg = httpx.post(sim.base_url + "/chat/completions", json=body).json()["choices"][0]
    assert msg["message"]["content"] == render(CALLS, family)
    assert msg["message"]["tool_calls"] == [] and msg["finish_reason"] == "stop"


def test_without_tools_or_without_the_switch_nothing_changes(make_sim):
    sim = make_sim(shape="plain", tool_markup="v4")
    with httpx.Client(base_url=sim.base_url) as client:
        assert "｜" not in collect(chunks_of(stream_chat(client, {"messages": TWO})[1]))["content"]
    sim = make_sim(shape="plain")
    with httpx.Client(base_url=sim.base_url) as client:
        got = collect(chunks_of(stream_chat(client, {"messages": TWO, "tools": WEATHER_TOOL})[1]))
    assert got["content"] == "" and len(got["tool_calls"]) == 2


def test_an_unknown_family_is_refused():
    with pytest.raises(ValueError, match="tool_markup must be one of"):
        SimConfig(tool_markup="v5")


def test_the_cli_flag_sets_the_family(monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake(cfg, host, port):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr("deepseek_sim.__main__.Simulator", fake)
    with pytest.raises(Stop):
        main(["--tool-markup", "v41", "--port", "0"])
    assert seen["cfg"].tool_markup == "v41"
