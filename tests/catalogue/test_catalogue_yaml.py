"""The manifest, provider, model YAMLs and customizable template, loaded through the SDK's own models."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from dify_plugin.core.entities.plugin.setup import PluginConfiguration
from dify_plugin.entities.model import AIModelEntity, ModelPropertyKey, ParameterRule
from dify_plugin.entities.model.llm import LLMResult
from dify_plugin.entities.model.message import PromptMessage, PromptMessageTool
from dify_plugin.entities.model.provider import ModelProviderConfiguration
from dify_plugin.errors.model import InvokeError
from dify_plugin.interfaces.model.large_language_model import LargeLanguageModel

from tests.catalogue.catalogue_util import (
    CONTEXT_SIZES,
    EXPECTED_LABELS,
    EXPECTED_ORDER,
    NO_STRUCTURED_OUTPUT,
    PARAMETER_NAMES,
    PROVIDER_YAML,
    R1_FAMILY,
    ROOT,
    STRUCTURED_PARAMETERS,
    TEMPLATE_YAML,
    THINKING_ONLY,
    THINKING_PARAMETERS,
    TOOL_CALL_CHAT,
    TOOL_CALL_THINKING,
    V2_CHAT,
    VISION_ONLY,
    import_packager,
    load_yaml,
    model_yaml_files,
)


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # model globs and python sources are resolved relative to the CWD, as in the daemon-launched process
    monkeypatch.chdir(ROOT)


@pytest.fixture
def provider(in_root) -> ModelProviderConfiguration:
    return ModelProviderConfiguration(**load_yaml(PROVIDER_YAML))


@pytest.fixture
def models(provider) -> dict[str, AIModelEntity]:
    return {m.model: m for m in provider.models}


def rules_of(model: AIModelEntity) -> dict[str, ParameterRule]:
    return {r.name: r for r in model.parameter_rules}


# ------------------------------------------------------------------------------------------------
# manifest
# ------------------------------------------------------------------------------------------------
def test_manifest_is_valid_for_the_sdk(in_root) -> None:
    raw = load_yaml("manifest.yaml")
    m = PluginConfiguration(**raw)
    assert m.author == "selfhosted"
    assert m.author == m.author.lower()
    assert m.name == "deepseek_selfhosted"
    assert m.version == "0.1.0"
    assert m.type.value == "plugin"
    assert m.plugins.models == [PROVIDER_YAML]
    assert not (m.plugins.tools or m.plugins.endpoints or m.plugins.agent_strategies)
    assert m.meta.runner.language.value == "python"
    assert m.meta.runner.version == "3.12"
    assert m.meta.runner.entrypoint == "main"
    assert {a.value for a in m.meta.arch} == {"amd64", "arm64"}
    assert m.resource.memory > 0
    assert m.resource.permission.model.enabled is True
    assert m.resource.permission.model.llm is True
    assert m.created_at.tzinfo is not None
    assert m.label.en_us == "DeepSeek Self-Hosted"
    assert m.description.en_us
    assert (ROOT / "_assets" / m.icon).is_file()
    assert m.icon_dark and (ROOT / "_assets" / m.icon_dark).is_file()
    # fields the SDK does not model but the daemon / marketplace read
    assert re.fullmatch(r"\d{1,4}(\.\d{1,4}){2}", raw["meta"]["version"])
    assert raw["privacy"] == "PRIVACY.md" and (ROOT / "PRIVACY.md").is_file()


def test_icons_are_small_svgs() -> None:
    for name in ("icon.svg", "icon_dark.svg"):
        data = (ROOT / "_assets" / name).read_text(encoding="utf-8")
        assert data.lstrip().startswith("<svg") and "</svg>" in data
        assert len(data.encode()) < 4096


def test_repository_passes_the_daemon_rules() -> None:
    packager = import_packager()
    assert packager.check_manifest(ROOT, require_sources=False) == []


# ------------------------------------------------------------------------------------------------
# provider + catalogue
# ------------------------------------------------------------------------------------------------
def test_provider_loads_every_model(provider) -> None:
    assert provider.provider == "deepseek_selfhosted"
    assert provider.label.en_us == "DeepSeek Self-Hosted"
    assert [t.value for t in provider.supported_model_types] == ["llm"]
    assert [c.value for c in provider.configurate_methods] == ["predefined-model", "customizable-model"]
    assert provider.extra.python.provider_source == "provider/deepseek_selfhosted.py"
    assert provider.extra.python.model_sources == ["models/llm/llm.py"]
    for field in ("icon_small", "icon_large", "icon_small_dark", "icon_large_dark"):
        icon = getattr(provider, field)
        assert icon is not None and (ROOT / "_assets" / icon.en_us).is_file(), field
    assert provider.help and provider.help.url.en_us.startswith("https://")
    assert len(provider.models) == len(model_yaml_files()) == len(EXPECTED_ORDER)


def test_catalogue_equals_position_file(provider, models) -> None:
    position = load_yaml("models/llm/_position.yaml")
    assert len(position) == len(set(position)), "duplicate entries in _position.yaml"
    assert set(position) == set(models)
    assert provider.position.llm == position
    assert position == EXPECTED_ORDER


def test_each_model_file_validates_alone_and_cites_its_source() -> None:
    for path in model_yaml_files():
        text = path.read_text(encoding="utf-8")
        head = text.split("\nmodel:", 1)[0]
        assert head.startswith("#"), f"{path.name}: no header comment"
        assert "Context size" in head and "huggingface.co/deepseek-ai/" in head, path.name
        entity = AIModelEntity(**load_yaml(path.relative_to(ROOT)))
        assert entity.model == path.stem, "file name must be the model id"
        assert entity.model == entity.model.lower()
        assert entity.label.en_us == EXPECTED_LABELS[entity.model]
        assert entity.model_type.value == "llm"
        assert entity.fetch_from.value == "predefined-model"
        assert entity.model_properties[ModelPropertyKey.MODE] == "chat"
        assert entity.pricing is None, "self-hosted models carry no price"


def test_r1_family_sampling_defaults(models) -> None:
    for mid in R1_FAMILY:
        r = rules_of(models[mid])
        assert r["temperature"].default == 0.6, mid
        assert r["top_p"].default == 0.95, mid
        assert r["max_tokens"].max == 32768, mid
        assert r["max_tokens"].default == 8192, mid
        assert "system prompt" in r["temperature"].help.en_us, mid


def test_chat_model_defaults(models) -> None:
    for mid in TOOL_CALL_CHAT + V2_CHAT:
        r = rules_of(models[mid])
        assert r["temperature"].default == 0.3, mid
        assert r["max_tokens"].max == 8192, mid
        assert r["max_tokens"].default == 4096, mid


def test_features_per_family(models) -> None:
    def feats(mid: str) -> set[str]:
        found = {f.value for f in models[mid].features or []}
        assert ("structured-output" in found) is (mid not in NO_STRUCTURED_OUTPUT), mid
        return found - {"structured-output"}

    for mid in TOOL_CALL_CHAT:
        assert feats(mid) == {"tool-call", "multi-tool-call", "stream-tool-call", "agent-thought"}, mid
    for mid in R1_FAMILY + V2_CHAT:
        assert feats(mid) == {"agent-thought"}, mid
    tools = {"tool-call", "multi-tool-call", "stream-tool-call", "agent-thought"}
    for mid in TOOL_CALL_THINKING:
        assert feats(mid) == tools | ({"vision"} if mid == "deepseek-v4.1-flash" else set()), mid
    for mid in THINKING_ONLY:
        assert feats(mid) == {"agent-thought"}, mid
    for mid in VISION_ONLY:
        assert feats(mid) == {"vision"}, mid
    grouped = R1_FAMILY + V2_CHAT + TOOL_CALL_CHAT + TOOL_CALL_THINKING + THINKING_ONLY + VISION_ONLY
    assert sorted(grouped) == sorted(EXPECTED_ORDER), "every model has its expected features"


# (temperature, top_p, max_tokens max, max_tokens default), issue14-facts.md section 8
_CURRENT_GENERATION = {
    "deepseek-r1-0528": (0.6, 0.95, 65536, 32768),
    "deepseek-v3.1": (0.6, 0.95, 65536, 8192),
    "deepseek-v3.1-terminus": (0.6, 0.95, 65536, 8192),
    "deepseek-v3.2": (1.0, 0.95, 65536, 8192),
    "deepseek-v3.2-speciale": (1.0, 0.95, 131072, 32768),
    "deepseek-v4-flash": (1.0, 1.0, 393216, 32768),
    "deepseek-v4-pro": (1.0, 1.0, 393216, 32768),
    "deepseek-v4.1-flash": (1.0, 1.0, 393216, 32768),
    "deepseek-vl2": (0.6, 1.0, 4096, 1024),
    "deepseek-vl2-small": (0.6, 1.0, 4096, 1024),
    "deepseek-vl2-tiny": (0.6, 1.0, 4096, 1024),
    "deepseek-ocr-2": (0.0, 1.0, 8192, 4096),
    "deepseek-ocr": (0.0, 1.0, 8192, 4096),
}


def test_current_generation_sampling_and_thinking_defaults(models) -> None:
    for mid, (temperature, top_p, most, default) in _CURRENT_GENERATION.items():
        r = rules_of(models[mid])
        assert (r["temperature"].default, r["top_p"].default) == (temperature, top_p), mid
        assert (r["max_tokens"].max, r["max_tokens"].default) == (most, default), mid
    for mid in ("deepseek-v3.1", "deepseek-v3.1-terminus", "deepseek-v3.2"):
        assert rules_of(models[mid])["thinking"].default is False, mid  # their templates' default: off
    for mid in ("deepseek-v4-flash", "deepseek-v4-pro", "deepseek-v4.1-flash"):
        r = rules_of(models[mid])
        assert r["thinking"].default is True and r["thinking"].type.value == "boolean", mid
        assert r["reasoning_effort"].options == ["low", "high", "max"], mid
        assert r["reasoning_effort"].default == "high", mid


def test_context_sizes_and_output_limits(models) -> None:
    expected_ctx = dict.fromkeys(EXPECTED_ORDER, 131072) | CONTEXT_SIZES
    for mid, m in models.items():
        ctx = m.model_properties[ModelPropertyKey.CONTEXT_SIZE]
        assert isinstance(ctx, int) and ctx > 0, mid
        assert ctx == expected_ctx[mid], mid
        mt = rules_of(m)["max_tokens"]
        assert mt.max <= ctx, mid
        assert 1 <= mt.default <= mt.max, mid


def test_parameter_rules_are_complete_and_labelled(models) -> None:
    for mid, m in models.items():
        r = rules_of(m)
        structured = set() if mid in NO_STRUCTURED_OUTPUT else STRUCTURED_PARAMETERS
        assert set(r) == PARAMETER_NAMES | THINKING_PARAMETERS.get(mid, set()) | structured, mid
        if structured:  # Dify sets json_schema only when the rule offers it
            assert r["response_format"].options == ["text", "json_object", "json_schema"], mid
            assert r["json_schema"].type.value == "text", mid
        for rule in m.parameter_rules:
            assert rule.label.en_us and rule.label.en_us != rule.name, (mid, rule.name)
            assert rule.help is not None and rule.help.en_us, (mid, rule.name)
            if rule.default is not None and rule.min is not None:
                assert rule.min <= rule.default <= rule.max, (mid, rule.name)
        assert r["top_k"].type.value == "int" and r["top_k"].min == -1 and r["top_k"].default == -1
        assert r["repetition_penalty"].type.value == "float"
        assert (r["repetition_penalty"].min, r["repetition_penalty"].max) == (0.5, 2.0)
        assert r["repetition_penalty"].default == 1.0
        assert r["seed"].type.value == "int"
        assert (r["presence_penalty"].min, r["presence_penalty"].max) == (-2.0, 2.0)
        assert r["temperature"].max == 2.0


def test_raw_yaml_labels_templated_rules_explicitly() -> None:
    # the daemon replaces a missing label by the rule name before it applies the template
    for path in [*model_yaml_files(), ROOT / TEMPLATE_YAML]:
        for rule in load_yaml(path.relative_to(ROOT))["parameter_rules"]:
            assert rule.get("label", {}).get("en_US"), (path.name, rule["name"])


class _DummyLLM(LargeLanguageModel):
    """Just enough of a model to run the SDK's own parameter validation and pricing."""

    def _invoke(self, *args, **kwargs) -> LLMResult:  # pragma: no cover - never called
        raise NotImplementedError

    def get_num_tokens(  # pragma: no cover - never called
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        tools: list[PromptMessageTool] | None = None,
    ) -> int:
        return 0

    def validate_credentials(self, model: str, credentials: Mapping) -> None:  # pragma: no cover
        return None

    @property
    def _invoke_error_mapping(self) -> dict[type[InvokeError], list[type[Exception]]]:
        return {}


def test_sdk_validator_accepts_the_vllm_parameters(provider) -> None:
    llm = _DummyLLM(provider.models)
    params = {
        "temperature": 0.6, "top_p": 0.95, "top_k": -1, "repetition_penalty": 1.05,
        "presence_penalty": -0.5, "frequency_penalty": 1.5, "max_tokens": 32768, "seed": 42,
    }
    assert llm._validate_and_filter_model_parameters("deepseek-r1", params, {}) == params
    with pytest.raises(ValueError, match="max_tokens"):
        llm._validate_and_filter_model_parameters("deepseek-r1", {"max_tokens": 32769}, {})
    with pytest.raises(ValueError, match="top_k"):
        llm._validate_and_filter_model_parameters("deepseek-r1", {"top_k": -2}, {})
    with pytest.raises(ValueError, match="max_tokens"):
        llm._validate_and_filter_model_parameters("deepseek-v3", {"max_tokens": 8193}, {})


def test_no_pricing_means_zero_cost(provider) -> None:
    from dify_plugin.entities.model import PriceType

    llm = _DummyLLM(provider.models)
    price = llm.get_price("deepseek-r1", {}, PriceType.INPUT, 1000)
    assert price.total_amount == 0
    usage = llm._calc_response_usage("deepseek-v3", {}, 100, 50)
    assert usage.total_tokens == 150 and usage.total_price == 0


# ------------------------------------------------------------------------------------------------
# credential forms
# ------------------------------------------------------------------------------------------------
def _forms(raw: dict, key: str) -> list[dict]:
    return raw[key]["credential_form_schemas"]


def test_every_credential_field_states_required() -> None:
    raw = load_yaml(PROVIDER_YAML)
    for key in ("provider_credential_schema", "model_credential_schema"):
        for form in _forms(raw, key):
            assert isinstance(form.get("required"), bool), (key, form["variable"])
            assert form["label"]["en_US"], form["variable"]
            if form["type"] in ("text-input", "secret-input"):
                # `help` on a credential field is not carried by the SDK nor the daemon, so the
                # placeholder is where the user-visible guidance lives
                assert form.get("placeholder", {}).get("en_US"), form["variable"]


CONNECTION = ["auth_mode", "api_key", "oauth2_token_url", "oauth2_client_id", "oauth2_client_secret",
              "oauth2_scope", "oauth2_audience", "tls_mode", "tls_ca_bundle", "tls_client_cert",
              "tls_client_key", "tls_verify", "timeouts", "routing_policy",
              "answer_cache", "answer_cache_ttl", "answer_cache_sampled"]


def test_connection_fields_are_shared_and_shown_only_for_their_mode(provider) -> None:
    p = {f.variable: f for f in provider.provider_credential_schema.credential_form_schemas}
    m = {f.variable: f for f in provider.model_credential_schema.credential_form_schemas}
    for name in CONNECTION:
        assert p[name].model_dump() == m[name].model_dump(), name
    for name in CONNECTION:
        shown = [(s.variable, s.value) for s in p[name].show_on]
        if name.startswith("oauth2_"):
            assert shown == [("auth_mode", "oauth2")]
        elif name.startswith("tls_") and name != "tls_mode":
            assert shown == [("tls_mode", "custom")]
        elif name == "api_key":
            assert shown == [("auth_mode", "api_key")]
        else:
            assert shown == []
    for secret in ("api_key", "oauth2_client_secret", "tls_client_key"):
        assert p[secret].type.value == "secret-input"


def test_provider_credential_form(provider) -> None:
    forms = {f.variable: f for f in provider.provider_credential_schema.credential_form_schemas}
    assert list(forms) == ["endpoint_urls", "auth_mode", "api_key", "served_model_name", *CONNECTION[2:]]
    assert forms["endpoint_urls"].type.value == "text-input" and forms["endpoint_urls"].required
    assert forms["endpoint_urls"].label.en_us == "Endpoint URLs"
    assert "http://gpu-1:8000/v1" in forms["endpoint_urls"].placeholder.en_us
    assert forms["api_key"].type.value == "secret-input" and not forms["api_key"].required
    assert forms["api_key"].label.en_us == "API Key"
    assert forms["served_model_name"].type.value == "text-input"
    assert not forms["served_model_name"].required


def test_routing_policy_choices_are_the_factory_s(provider) -> None:
    from deepseek_engine.routing import DEFAULT_POLICY, POLICIES

    field = {f.variable: f for f in provider.provider_credential_schema.credential_form_schemas}["routing_policy"]
    assert field.type.value == "select" and not field.required and field.default == DEFAULT_POLICY
    assert [o.value for o in field.options] == list(POLICIES)  # a policy added to the factory is offered
    assert field.label.zh_hans and all(o.label.en_us and o.label.zh_hans for o in field.options)


def test_answer_cache_choices_are_the_settings_and_off_by_default(provider) -> None:
    from deepseek_engine.settings import ANSWER_CACHE_MODES

    forms = {f.variable: f for f in provider.provider_credential_schema.credential_form_schemas}
    field = forms["answer_cache"]
    assert field.type.value == "select" and not field.required and field.default == "off"
    assert [o.value for o in field.options] == list(ANSWER_CACHE_MODES)
    assert [o.value for o in forms["answer_cache_sampled"].options] == ["false", "true"]
    assert all(f.label.zh_hans for f in (field, forms["answer_cache_ttl"], forms["answer_cache_sampled"]))


def test_model_credential_form(provider) -> None:
    mcs = provider.model_credential_schema
    assert mcs.model.label.en_us == "Served Model Name"
    assert "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B" in mcs.model.placeholder.en_us
    forms = {f.variable: f for f in mcs.credential_form_schemas}
    assert list(forms) == [
        "endpoint_urls", *CONNECTION, "context_size", "max_tokens_to_sample", "function_calling", "reasoning",
        "vision_support", "structured_output_support",
    ]
    assert forms["endpoint_urls"].required
    assert not any(f.required for name, f in forms.items() if name != "endpoint_urls")
    assert forms["api_key"].type.value == "secret-input"
    assert forms["context_size"].type.value == "text-input" and forms["context_size"].default is None
    assert forms["max_tokens_to_sample"].default == "8192"
    assert forms["function_calling"].type.value == "select"
    assert forms["function_calling"].default == "no_call"
    assert [(o.value, o.label.en_us) for o in forms["function_calling"].options] == [
        ("tool_call", "Tool call"), ("no_call", "Not supported"),
    ]
    # blank by default: the kind follows the model name, so a V3-style chat model is not shown
    # as one long <think> block
    assert forms["reasoning"].default is None
    assert "From the model name" in forms["reasoning"].placeholder.en_us
    assert [(o.value, o.label.en_us) for o in forms["reasoning"].options] == [
        ("reasoning", "Reasoning model (R1 style, shows <think>)"), ("none", "Chat model"),
        ("hybrid", "Thinking on demand (V3.1, V3.2, V4 style)"),
    ]
    # off by default: an image sent to a text-only model is refused by the plugin, not the server
    assert forms["vision_support"].type.value == "select" and forms["vision_support"].default == "no_support"
    assert [o.value for o in forms["vision_support"].options] == ["support", "no_support"]
    assert forms["vision_support"].label.zh_hans and all(o.label.zh_hans for o in forms["vision_support"].options)
    # on by default: vLLM and SGLang constrain decoding to a JSON schema unless started otherwise
    field = forms["structured_output_support"]
    assert field.type.value == "select" and field.default == "support"
    assert [o.value for o in field.options] == ["support", "no_support"] and field.label.zh_hans
    from deepseek_engine.families import KINDS

    assert sorted(o.value for o in forms["reasoning"].options) == sorted(KINDS)  # the engine knows each kind


# ------------------------------------------------------------------------------------------------
# customizable template
# ------------------------------------------------------------------------------------------------
def test_customizable_template_loads_as_parameter_rules() -> None:
    raw = load_yaml(TEMPLATE_YAML)
    assert set(raw) == {"parameter_rules"}
    rules = {r.name: r for r in (ParameterRule(**x) for x in raw["parameter_rules"])}
    # the switch rules are offered to thinking-on-demand models only (llm.py drops them otherwise)
    assert set(rules) == PARAMETER_NAMES | {"thinking", "reasoning_effort"} | STRUCTURED_PARAMETERS
    assert rules["thinking"].type.value == "boolean" and rules["reasoning_effort"].options == ["low", "high", "max"]
    assert rules["max_tokens"].max is not None and rules["max_tokens"].default <= rules["max_tokens"].max
    assert rules["temperature"].default == 0.6 and rules["top_p"].default == 0.95
    # it is a valid rule list for a model entity too
    AIModelEntity(
        model="x", label={"en_US": "x"}, model_type="llm", fetch_from="customizable-model",
        model_properties={"mode": "chat", "context_size": 32768}, parameter_rules=raw["parameter_rules"],
    )


def test_customizable_template_is_not_a_predefined_model(in_root, models) -> None:
    packager = import_packager()
    sdk_hits = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("models/llm/*.yaml")}
    assert TEMPLATE_YAML not in sdk_hits and "models/llm/deepseek-r1.yaml" in sdk_hits
    assert not packager.go_filepath_match("models/llm/*.yaml", TEMPLATE_YAML)
    assert packager.go_filepath_match("models/llm/*.yaml", "models/llm/deepseek-r1.yaml")
    assert "customizable" not in models and len(models) == len(EXPECTED_ORDER)


def test_the_family_table_and_the_catalogue_agree_on_vision():
    """Two places say a model takes images: its catalogue YAML (Dify offers uploads by it, and the
    engine checks images by it) and its family in deepseek_engine/families.yaml (the doctor's
    images check). They must not drift apart."""
    from deepseek_engine.families import family_of

    for path in model_yaml_files():
        data = load_yaml(path)
        declared = "vision" in (data.get("features") or [])
        assert family_of(data["model"]).vision == declared, data["model"]
