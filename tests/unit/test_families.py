"""The family table (families.yaml) and served-name matching (discovery.pick_served_model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepseek_engine.discovery import pick_served_model
from deepseek_engine.errors import ModelNotFoundError
from deepseek_engine.families import FAMILIES, custom_family, family_named, family_of, release_name, same_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,family", [
    ("deepseek-r1", "r1"), ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "r1"),
    ("deepseek-r1-0528", "r1-0528"), ("deepseek-ai/DeepSeek-R1-0528", "r1-0528"),
    ("deepseek-v3", "v3"), ("deepseek-ai/DeepSeek-V3-0324", "v3"), ("deepseek-v2.5", "v3"),
    ("deepseek-v2-lite-chat", "v2"),
    ("deepseek-v3.1", "v3.1"), ("deepseek-ai/DeepSeek-V3.1-Terminus", "v3.1"), ("nvidia/DeepSeek-V3.1-NVFP4", "v3.1"),
    ("deepseek-v3.2", "v3.2"), ("deepseek-ai/DeepSeek-V3.2-Exp", "v3.2"),
    ("deepseek-v3.2-speciale", "v3.2-speciale"), ("DeepSeek-V3.2-Speciale", "v3.2-speciale"),
    ("deepseek-v4-flash", "v4"), ("DeepSeek-V4-Pro-0813", "v4"), ("nvidia/DeepSeek-V4-Flash-NVFP4", "v4"),
    ("DeepSeek-V4-Flash-Vision-Exp", "v4-vision"),
    ("deepseek-v4.1-flash", "v4.1"), ("DeepSeek-V4.1-Flash-1017", "v4.1"),
    ("deepseek-vl2-tiny", "vl2"), ("deepseek-ai/deepseek-vl2", "vl2"),
    ("deepseek-ocr-2", "ocr"), ("deepseek-ai/DeepSeek-OCR", "ocr"),
    ("ds31", "chat"), ("qwen2.5-72b-instruct", "chat"), ("my-distill-32b", "reasoner"),
])
def test_a_name_belongs_to_its_most_specific_family(name, family):
    assert family_of(name).name == family


def test_the_first_name_a_family_matches_decides():
    assert family_of("deepseek-v3.1", "ds31").name == "v3.1"  # Dify's catalogue name, served under an alias
    assert family_of("my-model", "deepseek-ai/DeepSeek-V4-Flash").name == "v4"  # typed name first: none
    assert family_of(None, "", "DeepSeek-V3.2").name == "v3.2"


def test_families_say_what_the_facts_say():
    v31, v32, sp, v4, v41 = (family_named(n) for n in ("v3.1", "v3.2", "v3.2-speciale", "v4", "v4.1"))
    assert (v31.thinking, v31.thinking_default, v31.tools_with_thinking) == ("switch", False, False)
    assert (v32.thinking, v32.thinking_default, v32.reasoning_history) == ("switch", False, "since_last_user")
    assert (sp.thinking, sp.thinking_fixed, sp.tools) == ("always", True, False)
    for f in (v4, v41):
        assert (f.thinking, f.thinking_default, f.efforts) == ("switch", True, ("low", "high", "max"))
        assert f.reasoning_history == "tool_loop" and f.tokenizer == "v4"
    assert v41.vision and not v4.vision and family_named("v4-vision").vision
    assert family_named("r1").reasoning_history == family_named("r1-0528").reasoning_history == "strip"
    assert v31.reasoning_history == "strip"
    # vLLM's Python encoders for V3.2 / V4 ignore continue_final_message: never continued
    assert [f.name for f in FAMILIES if not f.resumable] == ["v3.2", "v3.2-speciale", "v4", "v4-vision", "v4.1"]
    ocr = family_named("ocr")
    assert ocr.extra_body["skip_special_tokens"] is False and ocr.extra_body["vllm_xargs"]["ngram_size"] == 30


def test_catalogue_entries_offer_what_their_family_does():
    """A catalogue YAML's thinking rules agree with its family: a hybrid offers the switch with
    the family's default, and exactly the family's effort levels."""
    for path in sorted((ROOT / "models/llm").glob("deepseek-*.yaml")):
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
        family = family_of(entry["model"])
        assert family.name not in ("chat", "reasoner"), entry["model"]
        rules = {r["name"]: r for r in entry["parameter_rules"]}
        if family.hybrid:
            assert rules["thinking"]["default"] is family.thinking_default, entry["model"]
        else:
            assert "thinking" not in rules, entry["model"]
        assert tuple(rules.get("reasoning_effort", {}).get("options", ())) == family.efforts, entry["model"]
        features = set(entry.get("features") or ())
        assert ("vision" in features) is family.vision, entry["model"]
        assert ("tool-call" in features) is family.tools, entry["model"]


def test_every_family_is_reachable_by_its_own_names():
    for f in FAMILIES:
        for prefix in f.match:
            assert family_of(prefix) is f, prefix


@pytest.mark.parametrize("kind,names,family", [
    (None, ("DeepSeek-V4-Flash",), "v4"),
    ("hybrid", ("DeepSeek-V4-Flash",), "v4"),  # the matched family, of the chosen kind: keeps V4's efforts
    ("hybrid", ("my-hybrid",), "custom-hybrid"),
    ("hybrid", ("deepseek-r1",), "custom-hybrid"),  # the operator knows best
    ("reasoning", ("my-model",), "custom-reasoner"),
    ("reasoning", ("deepseek-ai/DeepSeek-R1-0528",), "r1-0528"),
    ("none", ("deepseek-r1-custom",), "custom-chat"),
    (None, ("llama-3",), "chat"), (None, ("x", "deepseek-r1"), "r1"),
])
def test_a_customizable_model_is_the_kind_the_operator_chose(kind, names, family):
    assert custom_family(kind, *names).name == family


@pytest.mark.parametrize("name,release", [
    ("nvidia/DeepSeek-V4-Flash-0731-NVFP4", "deepseekv4flash"), ("DeepSeek-V3.1-Terminus-FP8", "deepseekv31terminus"),
    ("deepseek-ai/DeepSeek-R1-0528", "deepseekr1"), ("DeepSeek-V3.2-Speciale", "deepseekv32speciale"),
    ("DeepSeek-V4-Flash-Vision-Exp", "deepseekv4flashvision"), ("deepseek-v3.2", "deepseekv32"),
])
def test_the_release_name_drops_variant_tags_only(name, release):
    assert release_name(name) == release


@pytest.mark.parametrize("served,catalogue,same", [
    ("deepseek-ai/DeepSeek-V4-Flash-0731", "deepseek-v4-flash", True),
    ("DeepSeek-V4-Pro-0813", "deepseek-v4-pro", True),
    ("nvidia/DeepSeek-V3.1-NVFP4", "deepseek-v3.1", True),
    ("DEEPSEEK-V3.1-TERMINUS-FP8", "deepseek-v3.1-terminus", True),
    ("deepseek-ai/DeepSeek-R1-0528-FP8", "deepseek-r1-0528", True),
    ("deepseek-ai/DeepSeek-V3-0324", "deepseek-v3", True),
    ("deepseek-ai/DeepSeek-V3.2-Exp", "deepseek-v3.2", True),
    ("deepseek-ai/DeepSeek-R1-0528", "deepseek-r1", False),  # a release of its own
    ("deepseek-ai/DeepSeek-R1", "deepseek-r1-0528", False),
    ("DeepSeek-V3.2-Speciale", "deepseek-v3.2", False),
    ("DeepSeek-V3.1-Terminus", "deepseek-v3.1", False),
    ("DeepSeek-V4-Flash-Vision-Exp", "deepseek-v4-flash", False),
    ("DeepSeek-V4-Flash-Base", "deepseek-v4-flash", False),
    ("DeepSeek-V4.1-Flash", "deepseek-v4-flash", False),
])
def test_a_served_variant_is_its_catalogue_entry_and_never_another(served, catalogue, same):
    assert same_model(served, catalogue) is same


def _served(*ids):
    return [{"id": i, "max_model_len": 1000 + n} for n, i in enumerate(ids)]


def test_discovery_prefers_the_exact_name_then_the_one_variant():
    served = _served("deepseek-ai/DeepSeek-V3.1-Terminus", "nvidia/DeepSeek-V3.1-NVFP4", "DeepSeek-V3.1")
    assert pick_served_model(served, wanted=None, catalogue="deepseek-v3.1", endpoint="e").id == "DeepSeek-V3.1"
    assert pick_served_model(served, wanted=None, catalogue="deepseek-v3.1-terminus",
                             endpoint="e").id == "deepseek-ai/DeepSeek-V3.1-Terminus"
    served = _served("deepseek-ai/DeepSeek-R1-0528", "deepseek-ai/DeepSeek-V4-Flash-0731")
    assert pick_served_model(served, wanted=None, catalogue="deepseek-r1-0528", endpoint="e").id == served[0]["id"]
    m = pick_served_model(served, wanted=None, catalogue="deepseek-v4-flash", endpoint="e")
    assert (m.id, m.context_size) == ("deepseek-ai/DeepSeek-V4-Flash-0731", 1001)
    with pytest.raises(ModelNotFoundError, match="Set served_model_name"):  # R1-0528 is not R1
        pick_served_model(served, wanted=None, catalogue="deepseek-r1", endpoint="e")


def test_discovery_refuses_two_variants_and_a_lone_model_of_another_family():
    served = _served("DeepSeek-V4-Flash-FP8", "DeepSeek-V4-Flash-0731")
    with pytest.raises(ModelNotFoundError, match="several served models are deepseek-v4-flash"):
        pick_served_model(served, wanted=None, catalogue="deepseek-v4-flash", endpoint="e")
    with pytest.raises(ModelNotFoundError, match="a v3.2-speciale model, not deepseek-v3.2"):
        pick_served_model(_served("DeepSeek-V3.2-Speciale"), wanted=None, catalogue="deepseek-v3.2", endpoint="e")
    with pytest.raises(ModelNotFoundError, match="a v4-vision model"):
        pick_served_model(_served("DeepSeek-V4-Flash-Vision-Exp"), wanted=None, catalogue="deepseek-v4-flash",
                          endpoint="e")
    # the only model served, under an alias or as a sibling of one family, is still taken
    assert pick_served_model(_served("ds31"), wanted=None, catalogue="deepseek-v3.1", endpoint="e").id == "ds31"
    assert pick_served_model(_served("DeepSeek-V3.1-Terminus"), wanted=None, catalogue="deepseek-v3.1",
                             endpoint="e").id == "DeepSeek-V3.1-Terminus"
