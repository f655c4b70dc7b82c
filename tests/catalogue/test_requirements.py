"""requirements.txt pins exactly what the packaged code relies on, at the versions tested here."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, version

from tests.catalogue.catalogue_util import ROOT, import_packager

packager = import_packager()
LOCAL = {"main", "provider", "models", "deepseek_engine"}
# not imported, but their internals are read (client.py: the h11 receive buffer under httpcore's
# connection; transport.py subclasses httpcore's pool): another version may move them
INTERNALS = {"h11", "httpcore"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, ver = line.partition("==")
            assert sep, f"requirements.txt: {line!r} is not pinned with =="
            pins[_norm(name)] = ver.strip()
    return pins


def _imported_distributions() -> set[str]:
    modules: set[str] = set()
    for rel in packager.collect_files(ROOT):
        if not rel.endswith(".py"):
            continue
        for node in ast.walk(ast.parse((ROOT / rel).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third = {m for m in modules - LOCAL if m not in sys.stdlib_module_names}
    dists = packages_distributions()
    missing = sorted(m for m in third if m not in dists)
    assert not missing, f"imported but not installed: {missing}"
    return {_norm(d) for m in third for d in dists[m]}


def test_every_directly_used_distribution_is_pinned_at_the_installed_version():
    pins = _pins()
    used = _imported_distributions() | INTERNALS
    assert sorted(used - set(pins)) == []
    assert {d: pins[d] for d in used} == {d: version(d) for d in used}


def test_the_package_stays_thin():
    # nothing pinned that the packaged code does not use (the SDK brings the rest itself)
    assert sorted(set(_pins()) - _imported_distributions() - INTERNALS) == []
