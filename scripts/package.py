#!/usr/bin/env python3
"""Build and check the Dify plugin package (``.difypkg``) without the Go ``dify`` CLI.

Usage::

    python scripts/package.py [--out dist/] [--root .] [--max-size-mb 50] [--check-only]
                              [--allow-missing-sources]

What it does, mirroring ``dify plugin package`` (dify-plugin-daemon ``pkg/plugin_packager``):

* validates ``manifest.yaml`` and the provider / model YAMLs against the rules the daemon applies at
  package and install time (see ``check_manifest``), and exits non-zero with one line per violation;
* walks the plugin directory honouring ``.difyignore`` (falling back to ``.gitignore``) with go-git
  gitignore semantics: only *exclusions* count (``!negation`` lines are ineffective, as in Go), and an
  excluded directory is skipped entirely;
* refuses a package whose uncompressed size exceeds 50 MiB (``--max-size-mb``);
* writes ``<out>/<name>-<version>.difypkg``: a zip of plain files at their ``/``-separated relative
  paths, sorted by path, no directory entries, Deflate;
* prints a summary, the Go-compatible checksum and the plugin identity
  ``author/name:version@sha256``. The bytes differ from the Go packer's (different Deflate stream and
  zip header fields), but the checksum, identity and signature payload only depend on paths and
  contents, so they match.

Only the standard library and PyYAML are used, so CI can run it without the Dify SDK. Tests import
``build_package``, ``check_manifest``, ``collect_files``, ``compute_checksum``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import os
import re
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

MIB = 1024 * 1024
DEFAULT_MAX_SIZE = 50 * MIB  # `dify plugin package --max-size 50` and the daemon's MAX_PLUGIN_PACKAGE_SIZE

# Daemon rules (dify-plugin-daemon pkg/entities/plugin_entities, manifest_entities/version.go).
AUTHOR_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
NAME_RE = re.compile(r"^[a-z0-9_-]{1,128}$")
VERSION_RE = re.compile(r"^\d{1,4}(\.\d{1,4}){2}(-\w{1,16})?$")
RFC3339_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
MODEL_TYPES = {
    "llm", "text-embedding", "rerank", "speech2text", "moderation", "tts", "text2img",
    "multimodal-embedding", "multimodal-rerank",
}
# keys under provider `models:` the daemon reads (provider YAML uses underscores here)
PROVIDER_MODEL_KEYS = ("llm", "text_embedding", "rerank", "tts", "speech2text", "moderation")
CONFIGURATE_METHODS = {"predefined-model", "customizable-model"}
FORM_TYPES = {"text-input", "secret-input", "select", "radio", "switch"}
PARAMETER_TYPES = {"float", "int", "string", "boolean", "text"}
PARAMETER_TEMPLATES = {
    "temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty", "max_tokens",
    "response_format", "json_schema",
}
ARCHES = {"amd64", "arm64"}
I18N_MAX = 1023
FORBIDDEN_IN_MODEL_PLUGIN = ("tools", "endpoints", "agent_strategies", "datasources", "triggers")
PROVIDER_ICON_FIELDS = ("icon_small", "icon_large", "icon_small_dark", "icon_large_dark")


class PackageError(Exception):
    """A violation that makes the package unusable; the message is meant for humans."""


# --------------------------------------------------------------------------------------------------
# Go path/filepath.Match (Unix), ported so globs and ignore patterns behave exactly as in the daemon.
# --------------------------------------------------------------------------------------------------
class _BadPattern(Exception):
    pass


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern and pattern[0] == "*":
        pattern = pattern[1:]
        star = True
    inrange = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            inrange = True
        elif c == "]":
            inrange = False
        elif c == "*" and not inrange:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise _BadPattern
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise _BadPattern
    r, rest = chunk[0], chunk[1:]
    if not rest:
        raise _BadPattern
    return r, rest


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = False
            if chunk and chunk[0] == "^":
                negated = True
                chunk = chunk[1:]
            match = False
            nrange = 0
            while True:
                if chunk and chunk[0] == "]" and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if not failed and lo <= r <= hi:
                    match = True
                nrange += 1
            if match == negated:
                failed = True
        elif c == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise _BadPattern
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return "", False
    return s, True


def go_filepath_match(pattern: str, name: str) -> bool:
    """Go ``filepath.Match`` on Unix. Raises ``ValueError`` for a malformed pattern (Go: ErrBadPattern)."""
    try:
        return _go_match(pattern, name)
    except _BadPattern:
        raise ValueError(f"syntax error in pattern: {pattern!r}") from None


def _go_match(pattern: str, name: str) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and chunk == "":
            return "/" not in name
        t, ok = _match_chunk(chunk, name)
        if ok and (len(t) == 0 or len(pattern) > 0):
            name = t
            continue
        if star:
            found = False
            i = 0
            while i < len(name) and name[i] != "/":
                t, ok = _match_chunk(chunk, name[i + 1:])
                if ok:
                    if len(pattern) == 0 and len(t) > 0:
                        i += 1
                        continue
                    name = t
                    found = True
                    break
                i += 1
            if found:
                continue
        while pattern:  # remaining pattern must still be well-formed
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return len(name) == 0


# --------------------------------------------------------------------------------------------------
# go-git plumbing/format/gitignore pattern (v5, filepath.Match based), as used by the packager walk.
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IgnorePattern:
    raw: str
    parts: tuple[str, ...]
    inclusion: bool
    dir_only: bool
    is_glob: bool

    @classmethod
    def parse(cls, line: str) -> IgnorePattern:
        p = line
        inclusion = p.startswith("!")
        if inclusion:
            p = p[1:]
        if not p.endswith("\\ "):
            p = p.rstrip(" ")
        dir_only = p.endswith("/")
        if dir_only:
            p = p[:-1]
        return cls(line, tuple(p.split("/")), inclusion, dir_only, "/" in p)

    def excludes(self, path: list[str], is_dir: bool) -> bool:
        """True when go-git would return ``Exclude`` (inclusion patterns never exclude)."""
        if self.inclusion:
            return False
        if self.is_glob:
            return self._glob_match(path, is_dir)
        return self._simple_name_match(path, is_dir)

    @staticmethod
    def _m(pattern: str, name: str) -> bool | None:
        try:
            return go_filepath_match(pattern, name)
        except ValueError:
            return None

    def _simple_name_match(self, path: list[str], is_dir: bool) -> bool:
        for i, name in enumerate(path):
            m = self._m(self.parts[0], name)
            if m is None:
                return False
            if not m:
                continue
            if self.dir_only and not is_dir and i == len(path) - 1:
                return False
            return True
        return False

    def _glob_match(self, path: list[str], is_dir: bool) -> bool:
        matched = False
        can_traverse = False
        path = list(path)
        for i, pat in enumerate(self.parts):
            if pat == "":
                can_traverse = False
                continue
            if pat == "**":
                if i == len(self.parts) - 1:
                    break
                can_traverse = True
                continue
            if "**" in pat:
                return False
            if not path:
                return False
            if can_traverse:
                can_traverse = False
                while path:
                    e = path.pop(0)
                    m = self._m(pat, e)
                    if m is None:
                        return False
                    if m:
                        matched = True
                        break
                    if not path:
                        matched = False
            else:
                m = self._m(pat, path[0])
                if not m:
                    return False
                matched = True
                path.pop(0)
        if matched and self.dir_only and not is_dir and not path:
            matched = False
        return matched


def load_ignore_patterns(root: Path) -> tuple[str | None, list[IgnorePattern]]:
    """Read ``.difyignore`` (else ``.gitignore``) like the Go packager: trimmed lines, ``#`` comments."""
    for fname in (".difyignore", ".gitignore"):
        f = root / fname
        if f.is_file():
            patterns = []
            for line in f.read_text(encoding="utf-8").split("\n"):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                patterns.append(IgnorePattern.parse(line))
            return fname, patterns
    return None, []


def collect_files(root: Path | str) -> list[str]:
    """Relative ``/``-separated paths of the files that go into the package, sorted as Go sorts them."""
    root = Path(root)
    _, patterns = load_ignore_patterns(root)
    out: list[str] = []

    def excluded(parts: list[str], is_dir: bool) -> bool:
        return any(p.excludes(parts, is_dir) for p in patterns)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        base = [] if str(rel_dir) == "." else list(rel_dir.parts)
        keep = []
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            if full.is_symlink():
                # Go's WalkDir reports a symlink as a non-directory entry; reading it then fails
                # for a directory target. Refuse instead of producing a surprising package.
                if not excluded(base + [d], False):
                    raise PackageError(f"symlink to a directory is not supported: {'/'.join(base + [d])}")
                continue
            if not excluded(base + [d], True):
                keep.append(d)
        dirnames[:] = keep
        for fn in filenames:
            parts = base + [fn]
            if excluded(parts, False):
                continue
            out.append("/".join(parts))
    out.sort(key=lambda s: s.encode("utf-8"))
    return out


def compute_checksum(entries: Iterable[tuple[str, bytes]]) -> str:
    """dify-plugin-daemon ``decoder.CalculateChecksum``: sha256 over sorted (sha256(path) || sha256(content))."""
    data = bytearray()
    for path, content in sorted(entries, key=lambda e: e[0].encode("utf-8")):
        data += hashlib.sha256(path.encode("utf-8")).digest()
        data += hashlib.sha256(content).digest()
    return hashlib.sha256(bytes(data)).hexdigest()


# --------------------------------------------------------------------------------------------------
# Manifest / provider / model checks
# --------------------------------------------------------------------------------------------------
def _load_yaml(path: Path, errors: list[str], what: str):
    if not path.is_file():
        errors.append(f"{what}: file not found: {path.as_posix()}")
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        errors.append(f"{what}: invalid YAML in {path.as_posix()}: {exc}")
        return None


def _check_i18n(obj, where: str, errors: list[str], required: bool = True) -> None:
    if obj is None:
        if required:
            errors.append(f"{where}: missing (an object with at least en_US)")
        return
    if not isinstance(obj, dict):
        errors.append(f"{where}: must be an object like {{en_US: ...}}")
        return
    en = obj.get("en_US")
    if not isinstance(en, str) or not en.strip():
        errors.append(f"{where}.en_US: required and non-empty")
    for lang, text in obj.items():
        if isinstance(text, str) and len(text) > I18N_MAX:
            errors.append(f"{where}.{lang}: longer than {I18N_MAX} characters")


def _check_version(value, where: str, errors: list[str]) -> None:
    if not isinstance(value, str) or not VERSION_RE.match(value):
        errors.append(
            f"{where}: {value!r} is not a valid version; the daemon requires x.y.z "
            r"(regex ^\d{1,4}(\.\d{1,4}){2}(-\w{1,16})?$), e.g. 0.1.0 - and quote it in YAML"
        )


def _asset_exists(root: Path, name) -> bool:
    return isinstance(name, str) and bool(name) and (root / "_assets" / name).is_file()


def _parse_created_at(value) -> bool:
    if isinstance(value, _dt.datetime):  # an unquoted YAML timestamp; Go's YAML decoder accepts it too
        return True
    if not isinstance(value, str) or not RFC3339_RE.match(value):
        return False
    try:
        _dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return False
    return True


def check_manifest(root: Path | str, *, require_sources: bool = True) -> list[str]:
    """Return human-readable violations of the daemon's rules (empty list = OK).

    Checks manifest.yaml, every provider YAML it lists, their model YAMLs and position files, icons
    under ``_assets/`` and that nothing the daemon needs is excluded by ``.difyignore``. With
    ``require_sources`` the Python entrypoint and the provider / model sources must exist too.
    """
    root = Path(root)
    errors: list[str] = []
    manifest = _load_yaml(root / "manifest.yaml", errors, "manifest")
    if manifest is None:
        return errors
    if not isinstance(manifest, dict):
        return ["manifest: manifest.yaml must be a mapping"]

    try:
        packaged = set(collect_files(root))
    except PackageError as exc:
        errors.append(f"files: {exc}")
        packaged = set()
    needed: list[tuple[str, str]] = [("manifest.yaml", "manifest")]

    # ---- manifest fields -----------------------------------------------------------------------
    _check_version(manifest.get("version"), "manifest.version", errors)
    if manifest.get("type") != "plugin":
        errors.append(f"manifest.type: must be 'plugin', got {manifest.get('type')!r}")
    author = manifest.get("author")
    if not isinstance(author, str) or not AUTHOR_RE.match(author):
        errors.append(
            f"manifest.author: {author!r} is invalid; the daemon requires ^[a-z0-9_-]{{1,64}}$ "
            "(lower case letters, digits, '_' and '-' only)"
        )
    elif re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", author):
        errors.append("manifest.author: must not look like a UUID (the daemon rejects it)")
    name = manifest.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors.append(f"manifest.name: {name!r} is invalid; required ^[a-z0-9_-]{{1,128}}$")
    _check_i18n(manifest.get("label"), "manifest.label", errors)
    _check_i18n(manifest.get("description"), "manifest.description", errors)

    for key in ("icon", "icon_dark"):
        icon = manifest.get(key)
        if key == "icon" and not icon:
            errors.append("manifest.icon: required (a file name under _assets/)")
        elif icon:
            if not _asset_exists(root, icon):
                errors.append(f"manifest.{key}: _assets/{icon} not found")
            else:
                needed.append((f"_assets/{icon}", f"manifest.{key}"))

    if not _parse_created_at(manifest.get("created_at")):
        errors.append(
            f"manifest.created_at: {manifest.get('created_at')!r} is not an RFC 3339 timestamp "
            "(e.g. \"2025-01-31T00:00:00Z\")"
        )

    privacy = manifest.get("privacy")
    if privacy:
        if not (root / privacy).is_file():
            errors.append(f"manifest.privacy: {privacy} not found")
        else:
            needed.append((str(privacy), "manifest.privacy"))

    resource = manifest.get("resource")
    if not isinstance(resource, dict):
        errors.append("manifest.resource: required (with memory)")
    else:
        mem = resource.get("memory")
        if not isinstance(mem, int) or isinstance(mem, bool) or mem <= 0:
            errors.append(f"manifest.resource.memory: must be a positive integer (bytes), got {mem!r}")

    plugins = manifest.get("plugins")
    provider_files: list[str] = []
    if not isinstance(plugins, dict):
        errors.append("manifest.plugins: required")
    else:
        provider_files = plugins.get("models") or []
        if not isinstance(provider_files, list) or not provider_files:
            errors.append("manifest.plugins.models: must list at least one provider YAML")
            provider_files = []
        for key in FORBIDDEN_IN_MODEL_PLUGIN:
            if plugins.get(key):
                errors.append(f"manifest.plugins.{key}: a model plugin may not declare {key}")

    meta = manifest.get("meta")
    if not isinstance(meta, dict):
        errors.append("manifest.meta: required")
    else:
        _check_version(meta.get("version"), "manifest.meta.version", errors)
        arch = meta.get("arch")
        if not isinstance(arch, list) or not arch or not set(arch) <= ARCHES:
            errors.append(f"manifest.meta.arch: must be a non-empty subset of {sorted(ARCHES)}, got {arch!r}")
        runner = meta.get("runner")
        if not isinstance(runner, dict):
            errors.append("manifest.meta.runner: required (language, version, entrypoint)")
        else:
            if runner.get("language") != "python":
                errors.append(f"manifest.meta.runner.language: must be 'python', got {runner.get('language')!r}")
            rv = runner.get("version")
            if not isinstance(rv, str) or not rv or len(rv) > 128:
                errors.append(f"manifest.meta.runner.version: must be a quoted string such as \"3.12\", got {rv!r}")
            ep = runner.get("entrypoint")
            if not isinstance(ep, str) or not ep or len(ep) > 256:
                errors.append(f"manifest.meta.runner.entrypoint: required (<=256 chars), got {ep!r}")
            elif require_sources:
                ep_file = ep.replace(".", "/") + ".py"
                if not (root / ep_file).is_file():
                    errors.append(f"manifest.meta.runner.entrypoint: {ep_file} not found")
                else:
                    needed.append((ep_file, "entrypoint"))
        mdv = meta.get("minimum_dify_version")
        if mdv is not None and (not isinstance(mdv, str) or not re.match(r"^\d+(\.\d+)*", mdv)):
            errors.append(f"manifest.meta.minimum_dify_version: invalid version {mdv!r}")

    if require_sources:
        if not (root / "requirements.txt").is_file() and not (
            (root / "pyproject.toml").is_file() and (root / "uv.lock").is_file()
        ):
            errors.append("dependencies: requirements.txt not found (the daemon installs from it)")
        elif (root / "requirements.txt").is_file():
            needed.append(("requirements.txt", "dependencies"))

    # ---- providers -----------------------------------------------------------------------------
    for pf in provider_files:
        _check_provider(root, pf, errors, needed, packaged, require_sources)

    # ---- nothing required may be ignored -------------------------------------------------------
    if packaged:
        for rel, why in needed:
            rel = rel.replace("\\", "/")
            if rel not in packaged:
                errors.append(f".difyignore: {rel} ({why}) is excluded from the package")
    return errors


def _check_provider(root, pf, errors, needed, packaged, require_sources) -> None:
    where = f"provider {pf}"
    prov = _load_yaml(root / pf, errors, where)
    if prov is None:
        return
    if not isinstance(prov, dict):
        errors.append(f"{where}: must be a mapping")
        return
    needed.append((pf, where))
    if not prov.get("provider"):
        errors.append(f"{where}: `provider` is required")
    _check_i18n(prov.get("label"), f"{where}: label", errors)
    for field in PROVIDER_ICON_FIELDS:
        icons = prov.get(field)
        if icons is None:
            continue
        if not isinstance(icons, dict):
            errors.append(f"{where}: {field} must be an object of language -> file")
            continue
        for lang, icon in icons.items():
            if not _asset_exists(root, icon):
                errors.append(f"{where}: {field}.{lang}: _assets/{icon} not found")
            else:
                needed.append((f"_assets/{icon}", f"{where}: {field}.{lang}"))
    helpd = prov.get("help")
    if helpd is not None:
        if not isinstance(helpd, dict) or "title" not in helpd or "url" not in helpd:
            errors.append(f"{where}: help needs both title and url")
        else:
            _check_i18n(helpd.get("title"), f"{where}: help.title", errors)
            _check_i18n(helpd.get("url"), f"{where}: help.url", errors)

    smt = prov.get("supported_model_types")
    if not isinstance(smt, list) or not smt or not set(smt) <= MODEL_TYPES:
        errors.append(f"{where}: supported_model_types must be a non-empty list of {sorted(MODEL_TYPES)}")
    cms = prov.get("configurate_methods")
    if not isinstance(cms, list) or not cms or not set(cms) <= CONFIGURATE_METHODS:
        errors.append(f"{where}: configurate_methods must be a non-empty list of {sorted(CONFIGURATE_METHODS)}")
        cms = []

    pcs = prov.get("provider_credential_schema")
    if pcs is not None:
        _check_forms((pcs or {}).get("credential_form_schemas"), f"{where}: provider_credential_schema", errors)
    mcs = prov.get("model_credential_schema")
    if "customizable-model" in cms and mcs is None:
        errors.append(f"{where}: customizable-model needs a model_credential_schema")
    if mcs is not None:
        if not isinstance(mcs, dict) or not isinstance(mcs.get("model"), dict):
            errors.append(f"{where}: model_credential_schema.model (label, placeholder) is required")
        else:
            _check_i18n(mcs["model"].get("label"), f"{where}: model_credential_schema.model.label", errors)
        _check_forms((mcs or {}).get("credential_form_schemas"), f"{where}: model_credential_schema", errors)

    extra = ((prov.get("extra") or {}).get("python")) or {}
    if not extra.get("provider_source"):
        errors.append(f"{where}: extra.python.provider_source is required")
    elif require_sources:
        for src in [extra["provider_source"], *(extra.get("model_sources") or [])]:
            if not (root / src).is_file():
                errors.append(f"{where}: python source {src} not found")
            else:
                needed.append((src, f"{where}: python source"))
    for src in extra.get("model_sources") or []:
        if len(Path(src).with_suffix("").parts) < 3:
            errors.append(f"{where}: model source {src} should be at least 3 path levels (models/llm/llm.py)")

    models = prov.get("models") or {}
    if not isinstance(models, dict):
        errors.append(f"{where}: models must be a mapping like {{llm: {{predefined: [...], position: ...}}}}")
        return
    all_model_ids: dict[str, list[str]] = {}
    for mtype in PROVIDER_MODEL_KEYS:
        spec = models.get(mtype)
        if spec is None:
            continue
        if not isinstance(spec, dict):
            errors.append(f"{where}: models.{mtype} must be a mapping")
            continue
        if "predefine" in spec and "predefined" not in spec:
            errors.append(f"{where}: models.{mtype}.predefine is a typo for `predefined` (yields 0 models)")
        ids = _check_model_globs(root, where, mtype, spec, errors, needed, packaged, "predefined-model" in cms)
        all_model_ids[mtype] = ids
        pos = spec.get("position")
        if pos:
            plist = _load_yaml(root / pos, errors, f"{where}: models.{mtype}.position")
            if plist is not None:
                needed.append((pos, f"{where}: position"))
                if not isinstance(plist, list) or not all(isinstance(x, str) for x in plist):
                    errors.append(f"{where}: {pos} must be a YAML list of model names")
                else:
                    dup = sorted({x for x in plist if plist.count(x) > 1})
                    if dup:
                        errors.append(f"{where}: {pos} lists models twice: {dup}")
                    missing = sorted(set(ids) - set(plist))
                    unknown = sorted(set(plist) - set(ids))
                    if missing:
                        errors.append(f"{where}: {pos} does not list declared models {missing}")
                    if unknown:
                        errors.append(f"{where}: {pos} lists undeclared models {unknown}")


def _check_forms(forms, where, errors) -> None:
    if forms is None:
        errors.append(f"{where}: credential_form_schemas is required")
        return
    if not isinstance(forms, list):
        errors.append(f"{where}: credential_form_schemas must be a list")
        return
    seen = set()
    for i, f in enumerate(forms):
        w = f"{where}.credential_form_schemas[{i}]"
        if not isinstance(f, dict):
            errors.append(f"{w}: must be a mapping")
            continue
        var = f.get("variable")
        if not var:
            errors.append(f"{w}: variable is required")
        elif var in seen:
            errors.append(f"{w}: duplicate variable {var!r}")
        seen.add(var)
        w = f"{where}.{var}"
        _check_i18n(f.get("label"), f"{w}.label", errors)
        if f.get("type") not in FORM_TYPES:
            errors.append(f"{w}.type: must be one of {sorted(FORM_TYPES)}, got {f.get('type')!r}")
        if "required" not in f or not isinstance(f.get("required"), bool):
            errors.append(f"{w}.required: write it explicitly (SDK defaults to true, the daemon to false)")
        default = f.get("default")
        if default is not None and (not isinstance(default, str) or len(default) >= 256):
            errors.append(f"{w}.default: must be a string shorter than 256 characters")
        if f.get("type") in ("select", "radio"):
            opts = f.get("options")
            if not isinstance(opts, list) or not opts:
                errors.append(f"{w}.options: a {f.get('type')} needs options")
            else:
                values = [o.get("value") for o in opts if isinstance(o, dict)]
                for j, o in enumerate(opts):
                    if not isinstance(o, dict) or not o.get("value"):
                        errors.append(f"{w}.options[{j}]: value is required")
                    else:
                        _check_i18n(o.get("label"), f"{w}.options[{j}].label", errors)
                if default is not None and default not in values:
                    errors.append(f"{w}.default: {default!r} is not one of the options {values}")


def _check_model_globs(root, where, mtype, spec, errors, needed, packaged, predefined) -> list[str]:
    patterns = spec.get("predefined") or []
    if not isinstance(patterns, list):
        errors.append(f"{where}: models.{mtype}.predefined must be a list of globs")
        return []
    if predefined and not patterns:
        errors.append(f"{where}: predefined-model is configured but models.{mtype}.predefined is empty")
    matched: list[str] = []
    candidates = sorted(packaged) if packaged else []
    for pat in patterns:
        if "**" in pat:
            errors.append(
                f"{where}: glob {pat!r} uses '**': the SDK (Path.glob) recurses but the daemon "
                "(Go filepath.Match) does not; list the folder explicitly"
            )
            continue
        try:
            go_hits = {c for c in candidates if not c.endswith("_position.yaml") and go_filepath_match(pat, c)}
        except ValueError as exc:
            errors.append(f"{where}: glob {pat!r}: {exc}")
            continue
        sdk_hits = {
            p.relative_to(root).as_posix()
            for p in root.glob(pat)
            if p.is_file() and not str(p).endswith("_position.yaml")
        }
        if not go_hits:
            errors.append(f"{where}: glob {pat!r} matches no packaged model YAML")
        if sdk_hits != go_hits:
            only_sdk = sorted(sdk_hits - go_hits)
            only_go = sorted(go_hits - sdk_hits)
            errors.append(
                f"{where}: glob {pat!r} resolves differently in the SDK and the daemon "
                f"(SDK only: {only_sdk}, daemon only: {only_go}); check .difyignore"
            )
        matched.extend(sorted(go_hits))
    ids: list[str] = []
    for rel in matched:
        m = _load_yaml(root / rel, errors, f"model {rel}")
        if m is None:
            continue
        needed.append((rel, f"model {rel}"))
        ids.extend(_check_model(rel, m, mtype, errors))
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        errors.append(f"{where}: model names declared twice: {dup}")
    return ids


def _check_model(rel: str, m, mtype: str, errors: list[str]) -> list[str]:
    w = f"model {rel}"
    if not isinstance(m, dict):
        errors.append(f"{w}: must be a mapping")
        return []
    model = m.get("model")
    if not isinstance(model, str) or not model or len(model) >= 256:
        errors.append(f"{w}: `model` is required (a name shorter than 256 characters)")
        model = None
    _check_i18n(m.get("label"), f"{w}: label", errors)
    if m.get("model_type") not in MODEL_TYPES:
        errors.append(f"{w}: model_type must be one of {sorted(MODEL_TYPES)}")
    elif m["model_type"].replace("-", "_") != mtype:
        errors.append(f"{w}: model_type {m['model_type']!r} listed under models.{mtype}")
    ff = m.get("fetch_from")
    if ff is not None and ff not in CONFIGURATE_METHODS:
        errors.append(f"{w}: fetch_from must be one of {sorted(CONFIGURATE_METHODS)}")
    props = m.get("model_properties")
    if not isinstance(props, dict):
        errors.append(f"{w}: model_properties is required")
    elif mtype == "llm":
        cs = props.get("context_size")
        if not isinstance(cs, int) or isinstance(cs, bool) or cs <= 0:
            errors.append(f"{w}: model_properties.context_size must be a positive integer")
        if props.get("mode") not in ("chat", "completion"):
            errors.append(f"{w}: model_properties.mode must be chat or completion")
    rules = m.get("parameter_rules") or []
    if not isinstance(rules, list):
        errors.append(f"{w}: parameter_rules must be a list")
        rules = []
    names = []
    for i, r in enumerate(rules):
        rw = f"{w}: parameter_rules[{i}]"
        if not isinstance(r, dict) or not r.get("name"):
            errors.append(f"{rw}: name is required")
            continue
        names.append(r["name"])
        rw = f"{w}: parameter {r['name']}"
        tmpl = r.get("use_template")
        if tmpl is not None and tmpl not in PARAMETER_TEMPLATES:
            errors.append(f"{rw}: use_template {tmpl!r} not found (known: {sorted(PARAMETER_TEMPLATES)})")
        if tmpl is None and (not r.get("label") or not r.get("type")):
            errors.append(f"{rw}: without use_template both label and type are required")
        if r.get("type") is not None and r["type"] not in PARAMETER_TYPES:
            errors.append(f"{rw}: type must be one of {sorted(PARAMETER_TYPES)}")
        lo, hi, d = r.get("min"), r.get("max"), r.get("default")
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
            errors.append(f"{rw}: min {lo} > max {hi}")
        if isinstance(d, (int, float)) and not isinstance(d, bool):
            if isinstance(lo, (int, float)) and d < lo or isinstance(hi, (int, float)) and d > hi:
                errors.append(f"{rw}: default {d} outside [{lo}, {hi}]")
        if r["name"] == "max_tokens" and isinstance(props, dict):
            cs = props.get("context_size")
            if isinstance(hi, int) and isinstance(cs, int) and hi > cs:
                errors.append(f"{rw}: max {hi} exceeds context_size {cs}")
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        errors.append(f"{w}: parameter rules declared twice: {dup}")
    return [model] if model else []


# --------------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------------
@dataclass
class BuildResult:
    path: Path
    files: list[str]
    uncompressed_size: int
    compressed_size: int
    checksum: str
    identity: str
    sizes: dict[str, int]


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def build(root: Path | str, out_dir: Path | str | None = None, *, max_size: int = DEFAULT_MAX_SIZE,
          require_sources: bool = True) -> BuildResult:
    """Validate, then write the package. Raises ``PackageError`` listing every violation."""
    root = Path(root).resolve()
    errors = check_manifest(root, require_sources=require_sources)
    if errors:
        raise PackageError("manifest check failed:\n  - " + "\n  - ".join(errors))
    manifest = yaml.safe_load((root / "manifest.yaml").read_text(encoding="utf-8"))

    files = collect_files(root)
    contents: list[tuple[str, bytes]] = []
    total = 0
    for rel in files:
        data = (root / rel).read_bytes()
        contents.append((rel, data))
        total += len(data)
    if total > max_size:
        top = sorted(contents, key=lambda e: len(e[1]), reverse=True)[:5]
        listing = "\n".join(f"  {i + 1}. {p}: {len(d)} bytes" for i, (p, d) in enumerate(top))
        raise PackageError(
            f"plugin package too large: {total} bytes uncompressed, limit {max_size} bytes "
            f"({max_size // MIB} MiB). Largest files:\n{listing}\nExclude them in .difyignore."
        )

    out_dir = Path(out_dir) if out_dir is not None else root / "dist"
    if not out_dir.is_absolute():
        out_dir = Path.cwd() / out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{manifest['name']}-{manifest['version']}.difypkg"
    try:
        out.resolve().relative_to(root)
        inside = True
    except ValueError:
        inside = False
    if inside and out.resolve().relative_to(root).as_posix() in files:
        raise PackageError(f"output {out} would be packaged into itself; exclude it in .difyignore")

    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, data in contents:
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 0  # like Go's zip.Writer.Create: no Unix mode bits
            info.external_attr = 0
            zf.writestr(info, data)
    tmp.replace(out)

    checksum = compute_checksum(contents)
    identity = f"{manifest['author']}/{manifest['name']}:{manifest['version']}@{checksum}"
    sizes = {rel: len(data) for rel, data in contents}
    return BuildResult(out, files, total, out.stat().st_size, checksum, identity, sizes)


def build_package(root: Path | str, out_dir: Path | str | None = None, *, max_size: int = DEFAULT_MAX_SIZE,
                  require_sources: bool = True) -> Path:
    """Build ``<out_dir>/<name>-<version>.difypkg`` and return its path (see ``build``)."""
    return build(root, out_dir, max_size=max_size, require_sources=require_sources).path


def _summary(res: BuildResult) -> str:
    groups: dict[str, list[int]] = {}
    for rel in res.files:
        top = rel.split("/")[0] + ("/" if "/" in rel else "")
        g = groups.setdefault(top, [0, 0])
        g[0] += 1
        g[1] += res.sizes[rel]
    lines = [f"Packaged {len(res.files)} files:"]
    for top in sorted(groups, key=lambda s: s.encode()):
        n, size = groups[top]
        lines.append(f"  {top:<24} {n:>3} file{'s' if n != 1 else ' '}  {_human(size):>10}")
    lines += [
        f"Uncompressed: {res.uncompressed_size} bytes ({_human(res.uncompressed_size)}), "
        f"package: {res.compressed_size} bytes ({_human(res.compressed_size)})",
        f"Checksum:     {res.checksum}",
        f"Identity:     {res.identity}",
        f"Written:      {res.path}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build and check the Dify plugin package (.difypkg).")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent),
                    help="plugin directory (default: the repository root)")
    ap.add_argument("--out", default=None, help="output directory (default: <root>/dist)")
    ap.add_argument("--max-size-mb", type=int, default=DEFAULT_MAX_SIZE // MIB,
                    help="refuse packages larger than this many MiB uncompressed (default 50)")
    ap.add_argument("--check-only", action="store_true", help="only validate; write nothing")
    ap.add_argument("--allow-missing-sources", action="store_true",
                    help="do not require main.py / provider / model Python sources to exist")
    args = ap.parse_args(argv)
    root = Path(args.root)
    require = not args.allow_missing_sources
    try:
        if args.check_only:
            errors = check_manifest(root, require_sources=require)
            if errors:
                raise PackageError("manifest check failed:\n  - " + "\n  - ".join(errors))
            files = collect_files(root)
            print(f"OK: manifest and model declarations valid; {len(files)} files would be packaged.")
            return 0
        res = build(root, args.out, max_size=args.max_size_mb * MIB, require_sources=require)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_summary(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
