"""Which files go into the package: ``.difyignore`` (else ``.gitignore``) read as the Go packager
reads it, go-git's gitignore patterns (v5, ``filepath.Match`` based) and the packager's walk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import PackageError
from .gomatch import go_filepath_match

__all__ = ["IgnorePattern", "collect_files", "load_ignore_patterns"]


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

