"""Every YAML file under deploy/ passes yamllint with deploy/.yamllint.yaml (and the config
itself is found and strict enough to mean something)."""

from pathlib import Path

import pytest
from conftest import DEPLOY
from yamllint import linter
from yamllint.config import YamlLintConfig

CONFIG = DEPLOY / ".yamllint.yaml"


def _files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.fixture(scope="module")
def config() -> YamlLintConfig:
    return YamlLintConfig(file=str(CONFIG))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yamllint(path, config):
    problems = list(linter.run(path.read_text(), config, str(path)))
    assert not problems, "\n".join(f"{path}:{p.line}:{p.column}: {p.message} ({p.rule})"
                                   for p in problems)


def test_lint_catches_problems(config):
    bad = "a: 1\na: 2\nb:   [1,2]\nc: yes\n"
    rules = {p.rule for p in linter.run(bad, config)}
    assert {"key-duplicates", "truthy"} <= rules
