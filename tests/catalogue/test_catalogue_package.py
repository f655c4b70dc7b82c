"""scripts/packager: the .difypkg built from the real repository, ignore semantics, manifest checks."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.catalogue.catalogue_util import (
    NEVER_PACKAGED_TOP_LEVEL,
    PACKAGE_TOP_LEVEL,
    ROOT,
    TEMPLATE_YAML,
    import_packager,
    model_yaml_files,
)

packager = import_packager()

SOURCES = ["main.py", "provider/deepseek_selfhosted.py", "models/llm/llm.py"]


def _sources_present() -> bool:
    return all((ROOT / s).is_file() for s in SOURCES)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    # Other parts of the plugin (main.py, llm.py, provider .py, README.md) may still be missing while
    # they are being written; require them only once they all exist.
    out = tmp_path_factory.mktemp("dist")
    return packager.build(ROOT, out, require_sources=_sources_present())


@pytest.fixture(scope="module")
def zip_entries(built) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(built.path) as zf:
        assert zf.testzip() is None
        return zf.infolist()


def test_package_name_and_size(built) -> None:
    assert built.path.name == "deepseek_selfhosted-0.1.0.difypkg"
    assert built.uncompressed_size < 50 * 1024 * 1024
    assert built.path.stat().st_size < 50 * 1024 * 1024


def test_zip_layout_matches_the_go_packager(zip_entries) -> None:
    names = [i.filename for i in zip_entries]
    assert names == sorted(names, key=lambda s: s.encode())
    assert not any(n.endswith("/") for n in names), "no directory entries"
    assert not any("\\" in n or n.startswith("/") for n in names)
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zip_entries)


def test_package_contains_exactly_the_needed_entries(zip_entries) -> None:
    names = {i.filename for i in zip_entries}
    top = {n.split("/")[0] for n in names}
    assert top <= PACKAGE_TOP_LEVEL, f"unexpected entries: {sorted(top - PACKAGE_TOP_LEVEL)}"
    assert not top & NEVER_PACKAGED_TOP_LEVEL
    # everything needed that exists in the tree right now is there
    for entry in PACKAGE_TOP_LEVEL:
        if (ROOT / entry).exists():
            assert entry in top, f"{entry} missing from the package"
    for must in ("manifest.yaml", ".difyignore", "PRIVACY.md", "_assets/icon.svg", "_assets/icon_dark.svg",
                 "provider/deepseek_selfhosted.yaml", "models/llm/_position.yaml", TEMPLATE_YAML,
                 "requirements.txt"):
        assert must in names, must
    for path in model_yaml_files():
        assert path.relative_to(ROOT).as_posix() in names
    for src in SOURCES:
        if (ROOT / src).is_file():
            assert src in names
    assert not any("__pycache__" in n or n.endswith((".pyc", ".pyo")) for n in names)
    assert not any(n.split("/")[-1] in (".env", "pyproject.toml", "uv.lock") for n in names)


def test_checksum_and_identity(built) -> None:
    with zipfile.ZipFile(built.path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    # independent re-implementation of decoder.CalculateChecksum
    data = b"".join(
        hashlib.sha256(p.encode()).digest() + hashlib.sha256(entries[p]).digest()
        for p in sorted(entries, key=str.encode)
    )
    assert built.checksum == hashlib.sha256(data).hexdigest()
    assert built.identity == f"selfhosted/deepseek_selfhosted:0.1.0@{built.checksum}"
    assert built.uncompressed_size == sum(len(v) for v in entries.values())


def test_checksum_known_value() -> None:
    entries = [("b.txt", b"2"), ("a.txt", b"1")]
    h = hashlib.sha256
    expected = h(h(b"a.txt").digest() + h(b"1").digest() + h(b"b.txt").digest() + h(b"2").digest()).hexdigest()
    assert packager.compute_checksum(entries) == expected


def test_cli_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--root", str(ROOT), "--out", str(tmp_path)]
    if not _sources_present():
        argv.append("--allow-missing-sources")
    assert packager.main(argv) == 0
    out = capsys.readouterr().out
    assert "Checksum:" in out and "Identity:     selfhosted/deepseek_selfhosted:0.1.0@" in out
    assert (tmp_path / "deepseek_selfhosted-0.1.0.difypkg").is_file()


def test_scripts_package_runs_the_packager_from_anywhere(tmp_path: Path) -> None:
    """The entry point's own command line, run from another directory that holds a ``packager`` of
    its own: the package comes from scripts/, whatever the caller's directory."""
    text = (ROOT / "scripts" / "package").read_text(encoding="utf-8")
    assert '"$root/scripts/bootstrap"' in text
    (run,) = [line for line in text.splitlines() if "-m packager" in line]
    decoy = tmp_path / "packager"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise SystemExit('the caller directory packager')\n", encoding="utf-8")
    argv = ["--root", str(ROOT), "--check-only"] + ([] if _sources_present() else ["--allow-missing-sources"])
    r = subprocess.run(["bash", "-c", f'set -euo pipefail; root="$1"; py="$2"; shift 2; {run}', "package",
                        str(ROOT), sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK: manifest and model declarations valid;"), r.stdout


# ------------------------------------------------------------------------------------------------
# ignore semantics
# ------------------------------------------------------------------------------------------------
def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel, encoding="utf-8")


def test_ignore_semantics_follow_go_git(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "keep.py", "x.pyc", "pkg/mod.py", "pkg/tests/test_a.py", "tests/test_b.py", "scripts/s.py",
        "pkg/scripts/s.py", "build.log", "important.log", "docs/a.md", "a/b/c.txt", "z/a/b/c.txt",
        "tests_file",
    )
    (tmp_path / ".difyignore").write_text(
        "# comment\n\n*.pyc\ntests/\n/scripts/\n*.log\n!important.log\n  docs/  \na/b\n", encoding="utf-8"
    )
    files = packager.collect_files(tmp_path)
    assert files == sorted(files, key=str.encode)
    assert set(files) == {".difyignore", "keep.py", "pkg/mod.py", "pkg/scripts/s.py", "z/a/b/c.txt", "tests_file"}


def test_gitignore_is_the_fallback(tmp_path: Path) -> None:
    _touch(tmp_path, "a.py", "secret.env")
    (tmp_path / ".gitignore").write_text("*.env\n", encoding="utf-8")
    assert packager.collect_files(tmp_path) == [".gitignore", "a.py"]
    (tmp_path / ".difyignore").write_text("*.py\n", encoding="utf-8")
    assert packager.collect_files(tmp_path) == [".difyignore", ".gitignore", "secret.env"]


# ------------------------------------------------------------------------------------------------
# manifest violations
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def plugin_copy(tmp_path: Path) -> Path:
    """A copy of the declarative part of the plugin (no Python sources needed)."""
    dst = tmp_path / "plugin"
    dst.mkdir()
    for rel in ("manifest.yaml", "PRIVACY.md", ".difyignore", "requirements.txt"):
        shutil.copy2(ROOT / rel, dst / rel)
    for d in ("_assets", "provider", "models"):
        shutil.copytree(ROOT / d, dst / d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    assert packager.check_manifest(dst, require_sources=False) == []
    return dst


def _edit_manifest(root: Path, **changes) -> None:
    m = yaml.safe_load((root / "manifest.yaml").read_text(encoding="utf-8"))
    for key, value in changes.items():
        target = m
        *parents, leaf = key.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    (root / "manifest.yaml").write_text(yaml.safe_dump(m, allow_unicode=True), encoding="utf-8")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"author": "SelfHosted"}, "manifest.author"),
        ({"author": "self hosted"}, "manifest.author"),
        ({"name": "DeepSeek"}, "manifest.name"),
        ({"version": "1.0"}, "manifest.version"),
        ({"version": "v0.1.0"}, "manifest.version"),
        ({"meta__version": "0.0"}, "manifest.meta.version"),
        ({"created_at": "yesterday"}, "manifest.created_at"),
        ({"type": "tool"}, "manifest.type"),
        ({"meta__runner__language": "go"}, "manifest.meta.runner.language"),
        ({"meta__arch": ["x86"]}, "manifest.meta.arch"),
        ({"icon": "missing.svg"}, "manifest.icon"),
        ({"icon_dark": "missing_dark.svg"}, "manifest.icon_dark"),
        ({"plugins__tools": ["provider/x.yaml"]}, "manifest.plugins.tools"),
    ],
)
def test_bad_manifest_is_rejected(plugin_copy: Path, changes: dict, needle: str, tmp_path: Path) -> None:
    _edit_manifest(plugin_copy, **changes)
    errors = packager.check_manifest(plugin_copy, require_sources=False)
    assert any(e.startswith(needle) for e in errors), errors
    with pytest.raises(packager.PackageError, match="manifest check failed"):
        packager.build_package(plugin_copy, tmp_path / "out", require_sources=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_icon_file_is_rejected(plugin_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (plugin_copy / "_assets" / "icon.svg").unlink()
    errors = packager.check_manifest(plugin_copy, require_sources=False)
    assert any("manifest.icon: _assets/icon.svg not found" in e for e in errors), errors
    assert any("icon_small.en_US" in e for e in errors), errors
    assert packager.main(["--root", str(plugin_copy), "--check-only", "--allow-missing-sources"]) == 1
    assert "icon" in capsys.readouterr().err


def test_position_and_catalogue_must_agree(plugin_copy: Path) -> None:
    pos = plugin_copy / "models/llm/_position.yaml"
    pos.write_text(pos.read_text(encoding="utf-8") + "- deepseek-v9\n", encoding="utf-8")
    (plugin_copy / "models/llm/deepseek-v3.yaml").unlink()
    errors = packager.check_manifest(plugin_copy, require_sources=False)
    assert any("undeclared models ['deepseek-v3', 'deepseek-v9']" in e for e in errors), errors


def test_ignored_model_yaml_is_reported(plugin_copy: Path) -> None:
    with (plugin_copy / ".difyignore").open("a", encoding="utf-8") as f:
        f.write("deepseek-r1.yaml\n")
    errors = packager.check_manifest(plugin_copy, require_sources=False)
    assert any("resolves differently in the SDK and the daemon" in e for e in errors), errors


def test_credential_field_without_required_is_rejected(plugin_copy: Path) -> None:
    path = plugin_copy / "provider/deepseek_selfhosted.yaml"
    prov = yaml.safe_load(path.read_text(encoding="utf-8"))
    api_key = next(f for f in prov["provider_credential_schema"]["credential_form_schemas"]
                   if f["variable"] == "api_key")
    del api_key["required"]
    path.write_text(yaml.safe_dump(prov, allow_unicode=True), encoding="utf-8")
    errors = packager.check_manifest(plugin_copy, require_sources=False)
    assert any("api_key.required" in e for e in errors), errors


def test_missing_sources_are_reported_when_required(plugin_copy: Path) -> None:
    errors = packager.check_manifest(plugin_copy, require_sources=True)
    assert any("main.py not found" in e for e in errors), errors


def test_size_limit(plugin_copy: Path, tmp_path: Path) -> None:
    (plugin_copy / "blob.bin").write_bytes(b"\0" * 4096)
    with pytest.raises(packager.PackageError, match="too large"):
        packager.build_package(plugin_copy, tmp_path / "out", max_size=1024, require_sources=False)
    path = packager.build_package(plugin_copy, tmp_path / "out", require_sources=False)
    with zipfile.ZipFile(path) as zf:
        assert "blob.bin" in zf.namelist()


# ------------------------------------------------------------------------------------------------
# the endpoint doctor: a development-only package beside the engine
# ------------------------------------------------------------------------------------------------
DOCTOR = "deepseek_doctor"  # scripts/doctor, an operator tool: not Dify's


def test_the_doctor_is_not_packaged_and_every_other_engine_module_is(zip_entries) -> None:
    names = {i.filename for i in zip_entries}
    assert (ROOT / DOCTOR / "__init__.py").is_file()
    assert [n for n in names if n.startswith(DOCTOR + "/")] == []
    engine = {p.relative_to(ROOT).as_posix() for p in (ROOT / "deepseek_engine").glob("*.py")}
    assert sorted(engine - names) == []


def _imported_modules(rel: str) -> set[str]:
    """Repository-relative paths (without .py) of what ``rel`` imports, modules or names."""
    import ast

    package = rel.split("/")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / rel).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name.replace(".", "/") for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = "/".join([*base, *(node.module or "").split(".")]).strip("/")
            out.add(module)
            out.update(f"{module}/{a.name}" for a in node.names)  # from pkg import module
    return out


def test_packaged_code_imports_only_packaged_modules(zip_entries) -> None:
    """Leaving a module out is safe only while nothing in the package imports it."""
    names = {i.filename for i in zip_entries}
    missing = [f"{rel} imports {mod}" for rel in sorted(n for n in names if n.endswith(".py"))
               for mod in sorted(_imported_modules(rel))
               for path in (f"{mod}.py", f"{mod}/__init__.py")
               if (ROOT / path).is_file() and path not in names]
    assert missing == []
