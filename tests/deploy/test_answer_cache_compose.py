"""deploy/compose/answer-cache.yaml: the answer cache's Redis beside Dify's compose, validated
against the Compose spec, bounded (maxmemory, allkeys-lru), with a password and the plugin
daemon's environment naming it."""

from __future__ import annotations

import jsonschema
import pytest
import yaml
from conftest import DEPLOY
from test_compose import MissingVariable, compose_schema, interpolate

FILE = DEPLOY / "compose" / "answer-cache.yaml"
ENV = {"ANSWER_CACHE_REDIS_PASSWORD": "pw-123", "ANSWER_CACHE_SECRET": "sec-456"}


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load(interpolate(FILE.read_text(), ENV))


def test_validates_against_the_compose_spec(project):
    schema = compose_schema()
    errors = list(jsonschema.validators.validator_for(schema)(schema).iter_errors(project))
    assert not errors, "\n".join(e.message for e in errors)


def test_the_redis_is_bounded_and_evicts(project):
    args = project["services"]["answer_cache_redis"]["command"]
    assert args[args.index("--maxmemory") + 1] == "256mb"
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert args[args.index("--requirepass") + 1] == "pw-123"


def test_the_plugin_daemon_names_it(project):
    env = project["services"]["plugin_daemon"]["environment"]
    assert env["DEEPSEEK_CACHE_REDIS_URL"] == "redis://answer_cache_redis:6379/0"
    assert env["DEEPSEEK_CACHE_REDIS_PASSWORD"] == "pw-123" and env["DEEPSEEK_CACHE_SECRET"] == "sec-456"
    assert "answer_cache_redis" in project["services"]["plugin_daemon"]["depends_on"]


@pytest.mark.parametrize("missing", sorted(ENV))
def test_the_password_and_secret_are_required(missing):
    with pytest.raises(MissingVariable, match=missing):
        interpolate(FILE.read_text(), {k: v for k, v in ENV.items() if k != missing})
