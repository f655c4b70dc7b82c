"""Which server flags fix what the doctor found, per model family (``serve_flags.yaml``), and
which family's tool markup a reply holds. Pure after the import."""

from __future__ import annotations

from pathlib import Path

import yaml

from .probe import FLAVOR_NAME

__all__ = ["hint", "markup_family"]

FLAVORS = ("vllm", "sglang")

_TABLE = yaml.safe_load(Path(__file__).with_name("serve_flags.yaml").read_text(encoding="utf-8"))
_FAMILIES: dict[str, dict] = _TABLE["families"]
_FALLBACK: dict[str, str] = _TABLE["fallback"]


def _flags(family: str, flavor: str, what: str) -> str | None:
    entry = _FAMILIES.get(family)
    if entry is None and what in _FALLBACK:
        entry = _FAMILIES[_FALLBACK[what]]
    return ((entry or {}).get(flavor) or {}).get(what)


def hint(family: str, flavor: str | None, what: str) -> str | None:
    """``"add --reasoning-parser deepseek_v3"`` for the server at hand (both servers' flags when
    the flavour is unknown), or None when the table has nothing for this family."""
    if flavor in FLAVORS:
        flags = _flags(family, flavor, what)
        return f"start {FLAVOR_NAME[flavor]} with {flags}" if flags else None
    both = [f"{FLAVOR_NAME[fl]}: {flags}" for fl in FLAVORS if (flags := _flags(family, fl, what))]
    return "add " + "; ".join(both) if both else None


def markup_family(text: str, named: str | None = None) -> str | None:
    """The family whose raw tool-call markup ``text`` holds: ``named`` (the family the model's name
    says) when its markup is there, else the first family of the table whose markup is."""
    def has(family: str) -> bool:
        return any(m in text for m in _FAMILIES.get(family, {}).get("markup") or ())

    if named and has(named):
        return named
    return next((f for f in _FAMILIES if has(f)), None)
