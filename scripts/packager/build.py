"""The build: the files ``.difyignore`` keeps, zipped as the Go packager zips them, refused over the
size limit, with the daemon's checksum and the plugin identity."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import PackageError
from .ignore import collect_files
from .manifest import check_manifest

__all__ = ["DEFAULT_MAX_SIZE", "MIB", "BuildResult", "build", "build_package", "compute_checksum"]

MIB = 1024 * 1024
DEFAULT_MAX_SIZE = 50 * MIB  # `dify plugin package --max-size 50` and the daemon's MAX_PLUGIN_PACKAGE_SIZE


def compute_checksum(entries: Iterable[tuple[str, bytes]]) -> str:
    """dify-plugin-daemon ``decoder.CalculateChecksum``: sha256 over sorted (sha256(path) || sha256(content))."""
    data = bytearray()
    for path, content in sorted(entries, key=lambda e: e[0].encode("utf-8")):
        data += hashlib.sha256(path.encode("utf-8")).digest()
        data += hashlib.sha256(content).digest()
    return hashlib.sha256(bytes(data)).hexdigest()


@dataclass
class BuildResult:
    path: Path
    files: list[str]
    uncompressed_size: int
    compressed_size: int
    checksum: str
    identity: str
    sizes: dict[str, int]



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
