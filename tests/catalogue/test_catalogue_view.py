"""The adapter reads the catalogue once per list of schemas (issue 16: it scanned the predefined
models twice for every request): what each request asks of it stays what a scan would answer,
and a new list of schemas is read again."""

from __future__ import annotations

import yaml
from dify_plugin.entities.model import AIModelEntity, ModelFeature

from models.llm.llm import DeepSeekSelfHostedLLM
from tests.catalogue.catalogue_util import ROOT


def _schemas() -> list[AIModelEntity]:
    return [AIModelEntity(**yaml.safe_load(p.read_text()))
            for p in sorted((ROOT / "models" / "llm").glob("*.yaml")) if not p.name.startswith("_")]


def test_catalogue_answers_are_those_of_a_scan_and_a_new_list_is_read_again() -> None:
    schemas = _schemas()
    llm = DeepSeekSelfHostedLLM(schemas)
    vision = tuple(m.model for m in schemas if ModelFeature.VISION in (m.features or ()))
    assert vision and llm._vision_models() == vision
    assert all(llm._is_predefined(m.model) for m in schemas)
    assert not llm._is_predefined("my-own-served-model")
    assert llm._catalogue() is llm._catalogue()  # worked out once
    assert llm.get_model_schema(schemas[0].model) is schemas[0]  # the catalogue's own object

    llm.model_schemas = [m for m in schemas if ModelFeature.VISION not in (m.features or ())]
    assert llm._vision_models() == ()
    assert not llm._is_predefined(vision[0])
    llm.model_schemas.append(schemas[[m.model for m in schemas].index(vision[0])])  # the same list, grown
    assert llm._is_predefined(vision[0]) and llm._vision_models() == (vision[0],)


def test_instances_of_one_list_share_its_view_and_another_list_gets_its_own() -> None:
    schemas = _schemas()
    # the SDK makes an instance per request, each given the provider's one list
    first, second = DeepSeekSelfHostedLLM(schemas), DeepSeekSelfHostedLLM(schemas)
    assert first._catalogue() is second._catalogue()
    full, empty = DeepSeekSelfHostedLLM(schemas), DeepSeekSelfHostedLLM([])
    assert full._is_predefined(schemas[0].model) and not empty._is_predefined(schemas[0].model)
    assert empty._vision_models() == () and full._vision_models() != ()
