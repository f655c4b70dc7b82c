"""deploy/compose: interpolated as docker compose does, validated against the Compose spec
schema (offline: the copy bundled in check-jsonschema), and checked for what serving needs."""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import DEPLOY

COMPOSE = DEPLOY / "compose" / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "compose" / "env.example"
_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $$."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if (value is None if op == "-" else empty) else value
        if op in (":?", "?"):
            if value is None if op == "?" else empty:
                raise MissingVariable(f"{name}: {arg}")
            return value
        return value or ""
    return _VAR.sub(sub, text)


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def compose_schema() -> dict:
    ref = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return json.loads(ref.read_text())


@pytest.fixture(scope="module")
def project() -> dict:
    env = {**env_example(), "API_KEY": "test-key"}
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env))


def test_validates_against_the_compose_spec(project):
    schema = compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(project), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_catches_a_bad_key(project):
    """The check above is real: a misspelt key fails it."""
    schema = compose_schema()
    bad = json.loads(json.dumps(project))
    bad["services"]["vllm"]["helthcheck"] = bad["services"]["vllm"].pop("healthcheck")
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(bad))


def test_api_key_is_required_and_every_variable_documented():
    text = COMPOSE.read_text()
    with pytest.raises(MissingVariable, match="API_KEY"):
        interpolate(text, {k: v for k, v in env_example().items() if k != "API_KEY"})
    used = {m.group(1) or m.group(4) for m in _VAR.finditer(text) if m.group(0) != "$$"}
    assert used <= set(env_example()), f"not in env.example: {sorted(used - set(env_example()))}"


def test_vllm_service(project):
    svc = project["services"]["vllm"]
    args = svc["command"]
    assert "--reasoning-parser=deepseek_r1" in args
    assert "--enable-auto-tool-choice" in args and "--tool-call-parser=deepseek_v3" in args
    assert args[0].startswith("deepseek-ai/DeepSeek-R1-Distill")  # the image's entrypoint is vllm serve
    assert svc["environment"]["VLLM_API_KEY"] == "test-key"  # vLLM reads --api-key from here
    assert not any("api-key" in a for a in args)  # ... and not from the process list
    _serving_basics(svc)


def test_sglang_alternative(project):
    svc = project["services"]["sglang"]
    args = svc["command"]
    assert "sglang.launch_server" in args
    assert "--reasoning-parser=deepseek-r1" in args  # SGLang's spelling
    assert "--enable-metrics" in args
    assert "--api-key=test-key" in args
    _serving_basics(svc)


def test_services_are_alternatives():
    """Both use the same port: profiles make `up` start only the one asked for."""
    project = yaml.safe_load(interpolate(COMPOSE.read_text(), {"API_KEY": "k"}))
    assert project["services"]["vllm"]["profiles"] == ["vllm"]
    assert project["services"]["sglang"]["profiles"] == ["sglang"]


def _serving_basics(svc: dict) -> None:
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    hc = svc["healthcheck"]
    assert any("/health" in part for part in hc["test"])
    assert _seconds(hc["start_period"]) >= 30 * 60  # weights load (and download) first
    assert any(v.endswith(":/root/.cache/huggingface") for v in svc["volumes"])
    assert svc["ports"] == ["8000:8000"]
    assert svc["restart"] == "unless-stopped"


def _seconds(text: str) -> int:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([hms])", text))


def test_interpolation_rules():
    env = {"A": "a", "E": ""}
    assert interpolate("${A} ${A:-x} ${B:-x} ${E:-x} ${E-x} $$A $A", env) == "a a x x  $A a"
    with pytest.raises(MissingVariable):
        interpolate("${E:?no}", env)
    assert Path(ENV_EXAMPLE).read_text().count("API_KEY=\n") == 1  # shipped empty
