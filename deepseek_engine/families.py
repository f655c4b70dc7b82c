"""Which DeepSeek family a model belongs to, and how that family behaves on the wire.

The table is ``families.yaml`` (YAML declares); this module loads it once and matches names. Pure:
no I/O after the import, no settings: the caller says which names and which customizable kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import yaml

from .reasoning import looks_like_reasoner

__all__ = ["FAMILIES", "KINDS", "Family", "custom_family", "family_named", "family_of", "normalise",
           "known_other_family", "release_name", "same_model"]

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
# What operators append to a release's name without making it another model: a dated snapshot
# (V4-Flash-0731, V3-0324), a quantisation (FP8, NVFP4, AWQ...), a draft model for speculative
# decoding (DSpark), an experimental build (V3.2-Exp). Never: Speciale, Terminus, Vision, Base.
_VARIANT = re.compile(r"\d{4}|fp8|fp4|nvfp4|mxfp4|int4|int8|w4a16|w8a8|awq|gptq|bf16|fp16|dspark|exp")


def normalise(name: str) -> str:
    """``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`` and ``deepseek-r1-distill-qwen-1.5b`` agree."""
    return _NON_ALNUM.sub("", name.rsplit("/", 1)[-1].lower())


def release_name(name: str) -> str:
    """``name`` normalised without the variant tags it ends with:
    ``nvidia/DeepSeek-V4-Flash-0731-NVFP4`` -> ``deepseekv4flash``."""
    words = re.split(r"[-_ ]+", name.rsplit("/", 1)[-1].lower())
    while len(words) > 1 and _VARIANT.fullmatch(words[-1]):
        words.pop()
    return normalise("".join(words))

Thinking = Literal["never", "always", "switch"]
History = Literal["strip", "since_last_user", "tool_loop"]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    match: tuple[str, ...] = ()  # normalised name prefixes
    thinking: Thinking = "never"
    thinking_default: bool = False
    thinking_fixed: bool = False
    efforts: tuple[str, ...] = ()
    effort_default: str | None = None
    tools_with_thinking: bool = True
    tools: bool = True
    reasoning_history: History = "strip"
    vision: bool = False
    extra_body: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    resumable: bool = True
    tokenizer: Literal["v3", "v4"] = "v3"

    @property
    def hybrid(self) -> bool:
        """Thinking on demand: the workflow author's switch decides."""
        return self.thinking == "switch"


_CHOICES = {"thinking": ("never", "always", "switch"),
            "reasoning_history": ("strip", "since_last_user", "tool_loop"), "tokenizer": ("v3", "v4")}


def _family(raw: dict, defaults: dict) -> Family:
    values = {**defaults, **raw}
    unknown = set(values) - set(Family.__dataclass_fields__)
    if unknown:
        raise ValueError(f"families.yaml: {values.get('name')}: unknown fields {sorted(unknown)}")
    for key, allowed in _CHOICES.items():
        if values[key] not in allowed:
            raise ValueError(f"families.yaml: {values['name']}: {key} must be one of {allowed}")
    if values["efforts"] and values["effort_default"] not in values["efforts"]:
        raise ValueError(f"families.yaml: {values['name']}: effort_default must be one of its efforts")
    return Family(**{**values, "match": tuple(values.get("match", ())), "efforts": tuple(values["efforts"]),
                     "extra_body": MappingProxyType(dict(values["extra_body"]))})


def _load(path: Path) -> tuple[tuple[Family, ...], dict[str, Family], dict[str, Family]]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    defaults = raw["defaults"]
    families = tuple(_family(f, defaults) for f in raw["families"])
    unmatched = {k: _family(v, defaults) for k, v in raw["unmatched"].items()}
    kinds = {k: _family(v, defaults) for k, v in raw["kinds"].items()}
    return families, unmatched, kinds


FAMILIES, _UNMATCHED, _KINDS = _load(Path(__file__).with_name("families.yaml"))
KINDS = tuple(_KINDS)  # the customizable model's kinds ("none", "reasoning", "hybrid")
# every prefix with its family, longest first: the most specific match wins
_PREFIXES = sorted(((p, f) for f in FAMILIES for p in f.match), key=lambda pf: -len(pf[0]))


@lru_cache(maxsize=1024)  # pure, and asked for on every request: keyed by the whole name
def _matched(name: str) -> Family | None:
    key = normalise(name)
    return next((f for prefix, f in _PREFIXES if key.startswith(prefix)), None)


def family_of(*names: str | None) -> Family:
    """The family of a model known by ``names`` (Dify's name first, then the served id): the
    first name that a family matches decides; none matching, a chat model unless a name says it
    reasons."""
    present = [n for n in names if n]
    for name in present:
        found = _matched(name)
        if found is not None:
            return found
    return _UNMATCHED["reasoner" if any(looks_like_reasoner(n) for n in present) else "chat"]


def custom_family(kind: str | None, *names: str | None) -> Family:
    """A customizable model's family: ``kind`` is what the operator chose (None: by the names).
    The family its names match serves when it is of that kind (a V4 typed as hybrid keeps V4's
    efforts and history rule); otherwise the kind's generic family."""
    found = family_of(*names)
    if kind is None:
        return found
    generic = _KINDS[kind]
    return found if found.thinking == generic.thinking else generic


def same_model(served: str, catalogue: str) -> bool:
    """Whether the served id ``served`` is catalogue entry ``catalogue`` in one of its variants.
    Both must be one family, so a dated name that is a release of its own (R1-0528 beside R1) or
    a sibling (V3.2-Speciale, V4-Flash-Vision-Exp) is never taken for another entry."""
    return release_name(served) == release_name(catalogue) and family_of(served) is family_of(catalogue)


def known_other_family(served: str, catalogue: str) -> str | None:
    """The family ``served`` belongs to when it is a known family other than ``catalogue``'s
    (None for the same family, or a name no family matches: an alias such as ``ds31``)."""
    found = _matched(served)
    return found.name if found is not None and found is not family_of(catalogue) else None


def family_named(name: str) -> Family:
    """The family called ``name`` (tests, the doctor)."""
    for f in (*FAMILIES, *_UNMATCHED.values(), *_KINDS.values()):
        if f.name == name:
            return f
    raise KeyError(name)
