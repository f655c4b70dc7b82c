"""The Dify Marketplace's review checklist, offline: the package as a reviewer of a pull request to
langgenius/dify-plugins sees it (privacy policy, English README with the sections reviewers look for,
icons, labels in every language the manifest declares, an x.y.z version with its CHANGELOG entry), and
the release and Plugin Auto-PR workflows agreeing with manifest.yaml. ``scripts/package`` runs the same
check (``packager.review``) and prints its result; ``--review`` (the release workflows) makes it fatal."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.catalogue.catalogue_util import ROOT, import_packager

review = import_packager().review


def test_the_plugin_passes_the_marketplace_review_checklist():
    assert review.review(ROOT) == []


def test_the_release_workflows_exist_and_take_everything_from_the_manifest():
    manifest = yaml.safe_load((ROOT / "manifest.yaml").read_text(encoding="utf-8"))
    for rel in (review.RELEASE_WORKFLOW, review.AUTO_PR_WORKFLOW):
        flow = yaml.safe_load((ROOT / rel).read_text(encoding="utf-8"))
        assert flow["jobs"], rel
    publish = (ROOT / review.AUTO_PR_WORKFLOW).read_text(encoding="utf-8")
    # Dify's Auto-PR: <author>/<name>/<name>-<version>.difypkg on a bump-<name>-plugin-<version> branch
    assert 'mkdir -p "$AUTHOR/$NAME"' in publish and "bump-$NAME-plugin-$VERSION" in publish
    assert "grep '^author:' manifest.yaml" in publish and "grep '^version:' manifest.yaml" in publish
    release = (ROOT / review.RELEASE_WORKFLOW).read_text(encoding="utf-8")
    assert 'tags: ["v*"]' in release and '"v$version"' in release  # the tag is the manifest's version
    assert manifest["version"] == review.changelog_versions((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))[0]


@pytest.fixture
def plugin(tmp_path) -> Path:
    """A copy of what the review reads, to break one thing at a time."""
    keep = ("manifest.yaml", "README.md", "PRIVACY.md", "CHANGELOG.md", ".difyignore", "main.py",
            "requirements.txt", "_assets", "provider", "models", ".github")
    for name in keep:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tmp_path / name)
        else:
            shutil.copy2(src, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _one_finding(plugin: Path, *words: str) -> None:
    found = review.review(plugin)
    assert len(found) == 1 and all(w in found[0] for w in words), found


def test_a_version_bumped_without_its_changelog_entry_is_found(plugin):
    _edit(plugin / "manifest.yaml", "version: 0.1.0", "version: 0.1.1")
    _one_finding(plugin, "CHANGELOG.md", "0.1.1")


def test_a_changelog_out_of_order_is_found(plugin):
    _edit(plugin / "CHANGELOG.md", "## [0.1.0] - 2026-12-03", "## [0.1.0] - 2026-12-03\n\n## [0.2.0] - 2026-11-01")
    _one_finding(plugin, "strictly decrease")


def test_a_label_missing_a_declared_language_is_found(plugin):
    model = plugin / "models/llm/deepseek-r1.yaml"
    data = yaml.safe_load(model.read_text(encoding="utf-8"))
    del data["label"]["zh_Hans"]
    model.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    _one_finding(plugin, "deepseek-r1.yaml", ".label", "zh_Hans")


def test_a_missing_privacy_policy_is_found(plugin):
    (plugin / "PRIVACY.md").unlink()
    _one_finding(plugin, "manifest.privacy", "PRIVACY.md")


def test_a_readme_without_its_install_section_is_found(plugin):
    _edit(plugin / "README.md", "\n## Install\n", "\n## Getting it\n")
    _one_finding(plugin, "README.md", "setup steps")


def test_the_template_icon_is_found(plugin):
    (plugin / "_assets/icon.svg").write_text("<svg><!-- DIFY_MARKETPLACE_TEMPLATE_ICON_DO_NOT_USE --></svg>")
    _one_finding(plugin, "manifest.icon", "template")


def test_a_workflow_that_hard_codes_the_version_is_found(plugin):
    _edit(plugin / review.RELEASE_WORKFLOW, "runs-on: ubuntu-24.04", "runs-on: ubuntu-24.04  # 0.1.0")
    _one_finding(plugin, review.RELEASE_WORKFLOW, "0.1.0")


def test_a_missing_auto_pr_workflow_is_found(plugin):
    (plugin / review.AUTO_PR_WORKFLOW).unlink()
    _one_finding(plugin, review.AUTO_PR_WORKFLOW, "missing")


def test_scripts_package_ends_with_the_checks_it_made_and_their_result(plugin, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-P", "-m", "packager", "--root", str(plugin), "--out", str(out),
           "--allow-missing-sources"]
    env = {"PYTHONPATH": str(ROOT / "scripts"), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    tail = ok.stdout.strip().splitlines()
    assert tail[-1].startswith("Result: all 4 checks passed"), tail
    assert "Checks:" in tail and sum(line.lstrip().startswith("ok ") for line in tail) == 4, tail

    _edit(plugin / "manifest.yaml", "version: 0.1.0", "version: 0.1.1")
    warned = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert warned.returncode == 0, warned.stderr  # a local build still works
    assert "WARN" in warned.stdout and "3 of 4 checks passed" in warned.stdout.splitlines()[-1]
    refused = subprocess.run([*cmd, "--review"], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 1 and "CHANGELOG.md" in refused.stderr, refused.stderr


def test_the_readme_reads_in_a_dify_operators_order():
    """What it is, install, serve, configure, try it without a GPU (its one prerequisite stated there),
    then the depth; the contributor half last."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    order = ["## Install", "## Serve a model", "## Configure", "## Try it without a GPU", "## Routing",
             "## Failures", "## Security", "## Metrics", "## For contributors"]
    at = [next(i for i, h in enumerate(headings) if h.startswith(want)) for want in order]
    assert at == sorted(at), headings
    try_it = text.split("## Try it without a GPU", 1)[1].split("\n## ", 1)[0]
    assert "Python 3.12" in try_it and "scripts/demo" in try_it and "scripts/sim" in try_it
    install = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    for way in ("Marketplace", "GitHub", "Local Package File"):  # the three ways Dify documents
        assert way in install, way
