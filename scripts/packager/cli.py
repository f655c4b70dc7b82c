"""The command line: ``scripts/package [--out DIR] [--root DIR] [--max-size-mb N] [--check-only]
[--allow-missing-sources] [--review]``; a summary of what was packaged and the checks made with their
result, or one line per violation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import DEFAULT_MAX_SIZE, MIB, BuildResult, build
from .errors import PackageError
from .ignore import collect_files
from .manifest import check_manifest
from .review import review

__all__ = ["main"]


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


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


def _checks(res: BuildResult, max_size: int, findings: list[str]) -> str:
    """What was checked and how it came out: the last lines a packager prints."""
    models = sum(1 for f in res.files if f.startswith("models/") and f.endswith(".yaml"))
    checks = [
        ("ok", f"manifest.yaml, the provider and {models} model YAMLs against the plugin daemon's rules "
               "(name, author, version, icons, privacy, runner, entrypoint, sources)"),
        ("ok", f".difyignore keeps everything the daemon needs; {len(res.files)} files packaged"),
        ("ok", f"size {_human(res.uncompressed_size)} uncompressed, limit {_human(max_size)}"),
        ("ok" if not findings else "WARN",
         "marketplace review checklist (privacy policy, README sections, icons, labels in every declared "
         "language, version and CHANGELOG.md, release and Auto-PR workflows)"
         + "".join(f"\n          - {f}" for f in findings)),
    ]
    lines = ["Checks:"] + [f"  {status:<6}  {what}" for status, what in checks]
    passed = sum(status == "ok" for status, _ in checks)
    if findings:
        lines.append(f"Result: package written; {passed} of {len(checks)} checks passed. The review findings do "
                     "not stop a local install; fix them before a release "
                     "(scripts/package --review makes them errors).")
    else:
        lines.append(f"Result: all {len(checks)} checks passed; {res.path.name} is ready to install or submit.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/package",
                                 description="Build and check the Dify plugin package (.difypkg).")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2]),
                    help="plugin directory (default: the repository root)")
    ap.add_argument("--out", default=None, help="output directory (default: <root>/dist)")
    ap.add_argument("--max-size-mb", type=int, default=DEFAULT_MAX_SIZE // MIB,
                    help="refuse packages larger than this many MiB uncompressed (default 50)")
    ap.add_argument("--check-only", action="store_true", help="only validate; write nothing")
    ap.add_argument("--allow-missing-sources", action="store_true",
                    help="do not require main.py / provider / model Python sources to exist")
    ap.add_argument("--review", action="store_true",
                    help="a marketplace review finding is an error (the release workflows use it)")
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
        findings = review(root)
        if findings and args.review:
            raise PackageError("marketplace review checklist failed:\n  - " + "\n  - ".join(findings))
        res = build(root, args.out, max_size=args.max_size_mb * MIB, require_sources=require)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(_summary(res))
    print(_checks(res, args.max_size_mb * MIB, findings))
    return 0
