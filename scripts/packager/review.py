"""The Dify Marketplace's review checklist, offline (``review``): what a reviewer of a pull request to
``langgenius/dify-plugins`` looks for (its PR template and docs/plugin-submission-requirements.md, and
its pre-check workflow), and that this repository's release and Plugin Auto-PR workflows agree with
``manifest.yaml``. One finding per problem; none means the package is ready to submit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from .ignore import collect_files
from .manifest import VERSION_RE

__all__ = ["RELEASE_WORKFLOW", "AUTO_PR_WORKFLOW", "README_SECTIONS", "changelog_versions", "review"]

RELEASE_WORKFLOW = ".github/workflows/release.yml"
AUTO_PR_WORKFLOW = ".github/workflows/plugin-publish.yml"
#: what the submission requirements ask of the README, and the heading that answers each
README_SECTIONS = {
    "setup steps": "## Install",
    "connection requirements": "## Serve a model",
    "required credentials": "## Configure",
    "usage instructions": "## Try it without a GPU",
}
#: the pre-check workflow refuses these authors (reserved for Dify's own plugins)
RESERVED_AUTHORS = ("langgenius", "dify")
#: the pre-check refuses an icon still carrying the plugin template's marker
TEMPLATE_ICON_MARKER = "DIFY_MARKETPLACE_TEMPLATE_ICON_DO_NOT_USE"
#: never in a package (submission requirements: secrets, development state, OS files)
FORBIDDEN_IN_PACKAGE = re.compile(r"(^|/)(\.env(\..*)?|\.git|\.venv|venv|__pycache__|\.ruff_cache|\.pytest_cache"
                                  r"|\.DS_Store)(/|$)|\.(pem|key|log|pyc)$")
CHANGELOG_ENTRY = re.compile(r"^## \[(?P<version>[^\]]+)\]", re.M)


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("-")[0].split("."))


def changelog_versions(text: str) -> list[str]:
    """The versions of CHANGELOG.md's entries (``## [x.y.z] - date``), newest first; ``Unreleased`` skipped."""
    return [m["version"] for m in CHANGELOG_ENTRY.finditer(text) if m["version"].lower() != "unreleased"]


def _i18n_objects(obj, where: str) -> Iterator[tuple[str, dict]]:
    """Every user-facing text object ({en_US: ..., ...}); icons and URLs are per-language files, not text."""
    if isinstance(obj, dict):
        if "en_US" in obj and all(isinstance(v, str) for v in obj.values()):
            yield where, obj
            return
        for k, v in obj.items():
            if not (str(k).startswith("icon") or k == "url"):
                yield from _i18n_objects(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _i18n_objects(v, f"{where}[{i}]")


def _load(root: Path, rel: str):
    return yaml.safe_load((root / rel).read_text(encoding="utf-8"))


def review(root: Path | str) -> list[str]:
    """The review checklist's findings for the plugin at ``root``; [] when it passes."""
    root = Path(root)
    found: list[str] = []
    manifest = _load(root, "manifest.yaml")
    version, author = str(manifest.get("version")), manifest.get("author")
    found += _privacy(root, manifest)
    found += _readme(root)
    found += _icons(root, manifest)
    found += _languages(root, manifest)
    found += _version(root, version)
    if any(r in str(author) for r in RESERVED_AUTHORS):
        found.append(f"manifest.author {author!r} contains a name reserved for Dify's own plugins")
    bad = [f for f in collect_files(root) if FORBIDDEN_IN_PACKAGE.search(f)]
    if bad:
        found.append(f"the package would contain files reviewers refuse (secrets, caches, VCS): {bad[:5]}")
    found += _workflows(root, version, author)
    return found


def _privacy(root: Path, manifest: dict) -> list[str]:
    privacy = manifest.get("privacy")
    if not privacy:
        return ["manifest.privacy: the marketplace requires a privacy policy (PRIVACY.md)"]
    path = root / privacy
    if not path.is_file():
        return [f"manifest.privacy: {privacy} not found"]
    text = path.read_text(encoding="utf-8").lower()
    if "data" not in text or len(text) < 200:
        return [f"{privacy}: must say what user data is collected, stored, logged or sent to third parties"]
    return []


def _readme(root: Path) -> list[str]:
    path = root / "README.md"
    if not path.is_file():
        return ["README.md: missing"]
    text = path.read_text(encoding="utf-8")
    found = [f"README.md: no {what} (a `{heading}` section)" for what, heading in README_SECTIONS.items()
             if not re.search(rf"^{re.escape(heading)}\b", text, re.M)]
    if "Source repository" not in text:
        found.append("README.md: no link to the source repository (a 'Source repository' line)")
    letters = [c for c in text if c.isalpha()]
    latin = sum(c.isascii() for c in letters)
    if letters and latin / len(letters) < 0.95:
        found.append("README.md: user-facing text must be primarily English "
                     f"({latin / len(letters):.0%} ASCII letters)")
    return found


def _icons(root: Path, manifest: dict) -> list[str]:
    found = []
    for key in ("icon", "icon_dark"):
        icon = manifest.get(key)
        path = root / "_assets" / str(icon)
        if not icon or not path.is_file() or path.stat().st_size == 0:
            found.append(f"manifest.{key}: _assets/{icon} missing or empty")
        elif TEMPLATE_ICON_MARKER in path.read_text(encoding="utf-8", errors="replace"):
            found.append(f"manifest.{key}: _assets/{icon} is still the plugin template's icon")
    return found


def _languages(root: Path, manifest: dict) -> list[str]:
    """Every label in the manifest's, the provider's and the models' YAML in each language the manifest declares."""
    declared = set(manifest.get("label") or {})
    files = ["manifest.yaml"]
    for provider in (manifest.get("plugins") or {}).get("models") or []:
        files.append(provider)
        models_dir = (root / provider).parent.parent / "models"
        files += sorted(p.relative_to(root).as_posix() for p in models_dir.rglob("*.yaml"))
    found = []
    for rel in files:
        for where, obj in _i18n_objects(_load(root, rel), rel):
            missing = declared - set(obj)
            if missing:
                found.append(f"{where}: no {', '.join(sorted(missing))} (manifest.label declares {sorted(declared)})")
    return found


def _version(root: Path, version: str) -> list[str]:
    if not VERSION_RE.match(version) or "-" in version:
        return [f"manifest.version {version!r}: the marketplace takes x.y.z"]
    path = root / "CHANGELOG.md"
    if not path.is_file():
        return ["CHANGELOG.md: missing (each version says what changed)"]
    versions = changelog_versions(path.read_text(encoding="utf-8"))
    if not versions or versions[0] != version:
        return [f"CHANGELOG.md: its newest entry is {versions[:1]}, manifest.version is {version}: "
                "bump the version and add its entry together"]
    keys = [_version_key(v) for v in versions]
    if any(a <= b for a, b in zip(keys, keys[1:], strict=False)):
        return [f"CHANGELOG.md: versions must strictly decrease from the top, got {versions}"]
    return []


def _workflows(root: Path, version: str, author: str) -> list[str]:
    found = []
    for rel in (RELEASE_WORKFLOW, AUTO_PR_WORKFLOW):
        path = root / rel
        if not path.is_file():
            found.append(f"{rel}: missing")
            continue
        text = path.read_text(encoding="utf-8")
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as exc:
            found.append(f"{rel}: invalid YAML: {exc}")
            continue
        # name, version and author come from manifest.yaml at run time; a copy written in the
        # workflow would go stale at the next bump
        if "manifest.yaml" not in text:
            found.append(f"{rel}: must read name, version and author from manifest.yaml")
        for what, value in (("version", version), ("author", author)):
            if re.search(rf"(?<![\w.-]){re.escape(str(value))}(?![\w.-])", text):
                found.append(f"{rel}: hard-codes the manifest's {what} {value!r}; read it from manifest.yaml")
    auto_pr = root / AUTO_PR_WORKFLOW
    if auto_pr.is_file():
        text = auto_pr.read_text(encoding="utf-8")
        for needed, why in (("secrets.PLUGIN_ACTION", "the token Dify's Auto-PR documents"),
                            ("langgenius/dify-plugins", "the marketplace repository"),
                            ("bump-", "Dify's branch name bump-<name>-plugin-<version>")):
            if needed not in text:
                found.append(f"{AUTO_PR_WORKFLOW}: no {needed} ({why})")
    release = root / RELEASE_WORKFLOW
    if release.is_file():
        text = release.read_text(encoding="utf-8")
        for needed in ("scripts/package", "sha256sum", "CHANGELOG.md"):
            if needed not in text:
                found.append(f"{RELEASE_WORKFLOW}: does not use {needed}")
    return found
