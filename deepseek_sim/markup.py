"""A server that parses no tool calls: the model's own tool-call markup arrives in ``content``.

``SimConfig.tool_markup`` names the family whose markup the scripted tool calls are written in
(v3, v31, v32, v4, v41: the grammars of deepseek_engine/toolmarkup.py, after vLLM's parsers and
DeepSeek's encoders). The markup is cut into small pieces (one token each), so its markers are
split across the stream's deltas as a tokenizer may split them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

MARKUP_FAMILIES = ("v3", "v31", "v32", "v4", "v41")

_PIECE = re.compile(r"\s+|<|｜|[^\s<｜]{1,5}")  # markers split at their bars and every few characters


def _v3(calls: list[tuple[str, str]], fenced: bool) -> str:
    out = ["<｜tool▁calls▁begin｜>"]
    for name, args in calls:
        if fenced:  # V3/R1: type, name, arguments in a json fence
            out.append(f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{args}\n```<｜tool▁call▁end｜>")
        else:  # V3.1
            out.append(f"<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{args}<｜tool▁call▁end｜>")
    return "".join(out) + "<｜tool▁calls▁end｜>"


def _dsml(calls: list[tuple[str, str]], block: str, space: str) -> str:
    tag, close = "<｜DSML｜" + space, "</｜DSML｜" + space
    out = [f"{tag}{block}>\n"]
    for name, args in calls:
        out.append(f'{tag}invoke name="{name}">\n')
        for key, value in json.loads(args).items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            kind = "true" if isinstance(value, str) else "false"
            out.append(f'{tag}parameter name="{key}" string="{kind}">{text}{close}parameter>\n')
        out.append(f"{close}invoke>\n")
    return "".join(out) + f"{close}{block}>"


def render(calls: list[tuple[str, str]], family: str) -> str:
    """``calls`` (name, JSON arguments) as ``family``'s block."""
    if family in ("v3", "v31"):
        return _v3(calls, fenced=family == "v3")
    if family == "v32":
        return _dsml(calls, "function_calls", "")
    if family == "v4":
        return _dsml(calls, "tool_calls", "")
    if family == "v41":
        return _dsml(calls, "calls", " ")
    raise ValueError(f"tool_markup must be one of {MARKUP_FAMILIES}, got {family!r}")


def as_markup(pieces: Iterator[tuple], family: str | None) -> Iterator[tuple]:
    """The script's pieces with its tool calls ("th"/"ta" pieces) written as ``family``'s markup
    in content pieces (None: as they are, for a server that parses them)."""
    if family is None:
        yield from pieces
        return
    calls: list[tuple[str, list[str]]] = []
    for piece in pieces:
        if piece[0] == "th":
            calls.append((piece[3], []))
            continue
        if piece[0] == "ta":
            calls[-1][1].append(piece[2])
            continue
        if calls:
            yield from _block(calls, family)
            calls = []
        yield piece
    if calls:
        yield from _block(calls, family)


def tokens(text: str) -> list[str]:
    """``text`` as the pieces (tokens) the simulator sends it in."""
    return _PIECE.findall(text)


def _block(calls: list[tuple[str, list[str]]], family: str) -> Iterator[tuple]:
    for p in tokens(render([(name, "".join(args)) for name, args in calls], family)):
        yield ("c", p)
