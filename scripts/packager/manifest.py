"""The daemon's rules for the declarative files: ``manifest.yaml``, the provider YAMLs it lists, their
model YAMLs and position files, the icons under ``_assets/``, and that ``.difyignore`` leaves out
nothing the daemon needs (``check_manifest``)."""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

import yaml

from .errors import PackageError
from .gomatch import go_filepath_match
from .ignore import collect_files

__all__ = ["check_manifest"]

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

