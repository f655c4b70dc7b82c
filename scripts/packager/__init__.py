"""Build and check the Dify plugin package (``.difypkg``) without the Go ``dify`` CLI.

Usage (``scripts/package`` is the entry point; it runs ``python -m packager`` from ``scripts/``)::

    scripts/package [--out dist/] [--root .] [--max-size-mb 50] [--check-only] [--allow-missing-sources]

What it does, mirroring ``dify plugin package`` (dify-plugin-daemon ``pkg/plugin_packager``), one
module a job:

* ``manifest``: validates ``manifest.yaml`` and the provider / model YAMLs against the rules the
  daemon applies at package and install time (``check_manifest``), and exits non-zero with one line
  per violation;
* ``ignore`` (on ``gomatch``, a port of Go's ``filepath.Match``): walks the plugin directory
  honouring ``.difyignore`` (falling back to ``.gitignore``) with go-git gitignore semantics: only
  *exclusions* count (``!negation`` lines are ineffective, as in Go), and an excluded directory is
  skipped entirely;
* ``build``: refuses a package whose uncompressed size exceeds 50 MiB (``--max-size-mb``); writes
  ``<out>/<name>-<version>.difypkg``: a zip of plain files at their ``/``-separated relative paths,
  sorted by path, no directory entries, Deflate;
* ``cli``: prints a summary, the Go-compatible checksum and the plugin identity
  ``author/name:version@sha256``. The bytes differ from the Go packer's (different Deflate stream and
  zip header fields), but the checksum, identity and signature payload only depend on paths and
  contents, so they match.

Only the standard library and PyYAML are used, so CI can run it without the Dify SDK. Tests import
``build_package``, ``check_manifest``, ``collect_files``, ``compute_checksum`` from this package.
"""

from .build import DEFAULT_MAX_SIZE, MIB, BuildResult, build, build_package, compute_checksum
from .cli import main
from .errors import PackageError
from .gomatch import go_filepath_match
from .ignore import IgnorePattern, collect_files, load_ignore_patterns
from .manifest import check_manifest

__all__ = [
    "DEFAULT_MAX_SIZE", "MIB", "BuildResult", "IgnorePattern", "PackageError", "build", "build_package",
    "check_manifest", "collect_files", "compute_checksum", "go_filepath_match", "load_ignore_patterns",
    "main",
]
