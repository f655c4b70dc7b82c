"""Tool calls a DeepSeek model wrote as text, read back into calls: the server ran no tool parser
(or one for another family), so the model's own markup arrives in ``content``.

Five grammars (vLLM's parsers and DeepSeek's encoders; ``｜`` is U+FF5C, ``▁`` U+2581):

* V3/R1: ``<｜tool▁calls▁begin｜>`` then per call ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME``
  ``\\n```json\\nARGS\\n```<｜tool▁call▁end｜>``, then ``<｜tool▁calls▁end｜>``;
* V3.1: the same block, a call being ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>``;
* V3.2 DSML: ``<｜DSML｜function_calls>`` with ``<｜DSML｜invoke name="NAME">`` holding
  ``<｜DSML｜parameter name="K" string="true|false">V</｜DSML｜parameter>``;
* V4 DSML: the same, the block named ``<｜DSML｜tool_calls>``;
* V4.1 DSML: V4's with a space before each tag name (``<｜DSML｜ calls>``, ``<｜DSML｜ invoke``).

Streaming-safe and pure: text before a block passes at once (its trailing blanks are held, and
dropped when a block follows); a tail that may be the start of a block marker is held only while
it still may be; a block is held until each call in it is whole, and each call comes out as an
OpenAI call (``{"id", "type": "function", "function": {"name", "arguments"}}``, arguments a JSON
object). Whether text is reasoning is the caller's to say: markup inside reasoning is reasoning,
except a V4/V4.1 block, which vLLM's V4 parser lets begin inside ``<think>`` (it ends the reasoning).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .toolcalls import new_call_id

__all__ = ["BadMarkup", "CutMarkup", "Grammar", "ToolMarkup", "parser_flags"]

_WS = " \t\r\n"


class BadMarkup(ValueError):
    """A block the model wrote that is not its grammar: no call in it can be trusted."""

    def __init__(self, family: str, detail: str) -> None:
        super().__init__(detail)
        self.family = family


class CutMarkup(ValueError):
    """The text ended inside a block: its last call (``name``, "" if not written yet) is cut."""

    def __init__(self, family: str, name: str) -> None:
        super().__init__(f"tool-call markup cut off in {name or 'a call'}")
        self.family = family
        self.name = name


@dataclass(frozen=True)
class Grammar:
    """One block syntax: its markers and how one call in it reads. ``in_reasoning``: the block
    may begin inside reasoning (and ends it)."""

    family: str
    start: str
    end: str
    call_end: str
    read: Callable[[str], tuple[str, dict]]  # one call's text (up to call_end) -> name, arguments
    name_of: Callable[[str], str]  # the name in a call's text cut short, "" if not written yet
    in_reasoning: bool = False


def _arguments(text: str, name: str) -> dict:
    try:
        args = json.loads(text)
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise ValueError(f"the arguments of {name!r} are not a JSON object")
    return args


# -- V3 / V3.1 (vLLM: deepseekv3_tool_parser.py, deepseekv31_tool_parser.py) -----------------------
_CALL_BEGIN = "<｜tool▁call▁begin｜>"
_SEP = "<｜tool▁sep｜>"
_V3_CALL = re.compile(r"\s*" + _CALL_BEGIN + r"(?P<head>.*?)" + _SEP + r"(?P<tail>.*)", re.DOTALL)
_V3_FENCED = re.compile(r"(?P<name>[^\n]*)\n```(?:json)?[ \t]*\n(?P<args>.*?)\n?```\s*", re.DOTALL)


def _v3_variant(unit: str) -> str:
    """"v31" when the arguments follow the separator (V3.1), "v3" when a name does (V3: the
    type before the separator, the arguments in a json fence), "" when it cannot tell yet."""
    m = _V3_CALL.fullmatch(unit)
    tail = m["tail"].lstrip(_WS) if m else ""
    return "" if not tail else "v31" if tail.startswith("{") else "v3"


def _read_v3(unit: str) -> tuple[str, dict]:
    m = _V3_CALL.fullmatch(unit)
    if m is None:
        raise ValueError("a call is not a name, a separator and arguments")
    fenced = _V3_FENCED.fullmatch(m["tail"]) if _v3_variant(unit) == "v3" else None
    name, args = (fenced["name"], fenced["args"]) if fenced else (m["head"], m["tail"])
    name = name.strip(_WS)
    if not name:
        raise ValueError("a call has no name")
    return name, _arguments(args, name)


def _v3_name(unit: str) -> str:
    m = _V3_CALL.fullmatch(unit)
    variant = _v3_variant(unit)
    if variant == "v31":
        return m["head"].strip(_WS)
    tail = m["tail"] if m else ""
    return tail.split("\n", 1)[0].strip(_WS) if variant == "v3" and "\n" in tail else ""


# -- DSML: V3.2, V4, V4.1 (vLLM: deepseekv32_tool_parser.py, parser/deepseek_v4.py) ----------------
def _dsml(space: str) -> tuple[Callable[[str], tuple[str, dict]], Callable[[str], str]]:
    """The readers of one DSML call; ``space``: V4.1's blank before each tag name."""
    tag, close = "<｜DSML｜" + space, "</｜DSML｜" + space
    invoke = re.compile(r"\s*" + tag + r'invoke\s+name="(?P<name>[^"]*)"\s*>(?P<body>.*)', re.DOTALL)
    param = re.compile(tag + r'parameter\s+name="(?P<key>[^"]+)"\s+string="(?P<str>true|false)"\s*>'
                       r"(?P<value>.*?)" + close + "parameter>", re.DOTALL)

    def read(unit: str) -> tuple[str, dict]:
        m = invoke.fullmatch(unit)
        if m is None or not m["name"].strip(_WS):
            raise ValueError("a call has no invoke name")
        name, body, args, at = m["name"].strip(_WS), m["body"], {}, 0
        for p in param.finditer(body):
            if body[at:p.start()].strip(_WS):
                break
            value = p["value"]
            if p["str"] == "false":  # JSON; like vLLM, a value that is not JSON stays the string
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            args[p["key"]] = value
            at = p.end()
        if body[at:].strip(_WS):
            raise ValueError(f"the parameters of {name!r} are not parameter tags")
        return name, args

    def name_of(unit: str) -> str:
        m = invoke.match(unit)
        return m["name"].strip(_WS) if m else ""

    return read, name_of


_V3 = Grammar("v3", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁end｜>", _read_v3, _v3_name)
_GRAMMARS = (
    _V3,
    Grammar("v32", "<｜DSML｜function_calls>", "</｜DSML｜function_calls>", "</｜DSML｜invoke>", *_dsml("")),
    Grammar("v4", "<｜DSML｜tool_calls>", "</｜DSML｜tool_calls>", "</｜DSML｜invoke>", *_dsml(""),
            in_reasoning=True),
    Grammar("v41", "<｜DSML｜ calls>", "</｜DSML｜ calls>", "</｜DSML｜ invoke>", *_dsml(" "), in_reasoning=True),
)
_BY_START = {g.start: g for g in _GRAMMARS}
_START = re.compile("|".join(re.escape(g.start) for g in _GRAMMARS))
_LONGEST = max(len(g.start) for g in _GRAMMARS)

# vLLM's --tool-call-parser for each family's markup (SGLang's names drop the "_"): facts §7
_PARSERS = {"v3": "deepseek_v3", "v31": "deepseek_v31", "v3/v31": "deepseek_v3 (V3, R1) or deepseek_v31 (V3.1)",
            "v32": "deepseek_v32", "v4": "deepseek_v4", "v41": "deepseek_v41",
            "any": "the model's (deepseek_v3, deepseek_v31, deepseek_v32, deepseek_v4 or deepseek_v41)"}


def parser_flags(family: str) -> str:
    """The server flags with which a server reads ``family``'s tool calls itself."""
    vllm = _PARSERS[family]
    sglang = re.sub(r"deepseek_(v\d+)", r"deepseek\1", vllm)
    return (f"start vLLM with --enable-auto-tool-choice --tool-call-parser {vllm}, "
            f"or SGLang with --tool-call-parser {sglang}")


def _waits_from(buf: str) -> int:
    """Where the tail of ``buf`` that must wait begins: the start of a block marker cut short,
    and the blanks before it (dropped if a block follows)."""
    cut = len(buf)
    for i in range(max(0, len(buf) - _LONGEST + 1), len(buf)):
        if buf[i] == "<" and any(g.start.startswith(buf[i:]) for g in _GRAMMARS):
            cut = i
            break
    return len(buf[:cut].rstrip(_WS))


def _never() -> bool:
    return False


class ToolMarkup:
    """``feed(text, in_reasoning)`` yields text (``str``) and whole calls (``dict``) in order;
    ``finish()`` returns the text still held. ``in_reasoning()`` is asked when a block marker is
    found, once the text before it was taken: whether the caller is in reasoning there (where
    only a V4/V4.1 block counts). Raises ``BadMarkup`` for a block not in its grammar, and from
    ``finish`` ``CutMarkup`` inside a block. ``family``: the markup read last ("v3" or "v31"
    for V3's markers, "v3/v31" before a call tells which)."""

    __slots__ = ("_grammar", "_held", "_pieces", "_size", "_tail", "_blank", "family")

    def __init__(self) -> None:
        self._grammar: Grammar | None = None  # inside a block of this grammar
        self._held = ""  # outside: text that may be the start of a block
        self._pieces: list[str] = []  # inside: the current call's text, joined once it is whole
        self._size = 0
        self._tail = ""  # inside: the last characters, where an end marker may have begun
        self._blank = False  # just after a block: the blanks that follow it are dropped
        self.family = ""

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def feed(self, text: str, in_reasoning: Callable[[], bool] = _never) -> Iterator[str | dict]:
        while text:
            if self._grammar is None:
                text = yield from self._outside(text, in_reasoning)
            else:
                text = yield from self._inside(text)

    def finish(self, in_reasoning: bool = False) -> str:
        """The text still held, at the end of the text; ``in_reasoning``: the text ended inside
        reasoning (where only a V4/V4.1 block may have begun)."""
        g = self._grammar
        if g is not None:
            unit = "".join(self._pieces)
            if g is _V3 and self.family == "v3/v31":
                self.family = _v3_variant(unit) or self.family
            raise CutMarkup(self.family, g.name_of(unit))
        marker = self._held.lstrip(_WS)
        begun = [g for g in _GRAMMARS if g.start.startswith(marker) and (g.in_reasoning or not in_reasoning)]
        if len(marker) > 1 and begun:  # "<｜…": the text ended in a block's first marker
            raise CutMarkup("v3/v31" if begun == [_V3] else begun[0].family if len(begun) == 1 else "any", "")
        return self.release()

    def release(self) -> str:
        """The text held, as text: what follows it is not text of this stream (the server's
        reasoning field ended, its content began)."""
        held, self._held = self._held, ""
        return held

    def _outside(self, text: str, in_reasoning: Callable[[], bool]) -> Iterator[str]:
        buf = self._held + text
        self._held = ""
        if self._blank:
            buf = buf.lstrip(_WS)
            if not buf:
                return ""
            self._blank = False
        at = 0  # what is before ``at`` went out
        for m in _START.finditer(buf):
            grammar = _BY_START[m[0]]
            before = buf[at:m.start()]
            body = before.rstrip(_WS)
            if body:
                yield body
            if grammar.in_reasoning or not in_reasoning():
                self._open(grammar)
                return buf[m.end():]
            yield before[len(body):] + m[0]  # markup inside reasoning is reasoning
            at = m.end()
        rest = buf[at:]
        out = _waits_from(rest)
        if out:
            yield rest[:out]
        self._held = rest[out:]
        return ""

    def _open(self, grammar: Grammar) -> None:
        self._grammar = grammar
        if grammar is not _V3:
            self.family = grammar.family
        elif self.family not in ("v3", "v31"):  # V3's markers: its calls will tell V3 from V3.1
            self.family = "v3/v31"
        self._pieces, self._size, self._tail = [], 0, ""

    def _inside(self, text: str) -> Iterator[dict]:
        g = self._grammar
        window = self._tail + text
        call_at, end_at = window.find(g.call_end), window.find(g.end)
        if call_at < 0 and end_at < 0:
            self._pieces.append(text)
            self._size += len(text)
            self._tail = window[-max(len(g.call_end), len(g.end)):]
            return ""
        closes = call_at >= 0 and (end_at < 0 or call_at < end_at)
        at = call_at if closes else end_at
        whole = "".join(self._pieces) + text
        cut = self._size - len(self._tail) + at  # the marker's place in ``whole``
        unit = whole[:cut]
        rest = whole[cut + len(g.call_end if closes else g.end):]
        self._pieces, self._size, self._tail = [], 0, ""
        if closes or unit.strip(_WS):  # vLLM's V4 parser also takes a call the block's end closes
            yield self._call(g, unit)
        if closes:
            return rest
        self._grammar = None
        self._blank = True
        return rest

    def _call(self, g: Grammar, unit: str) -> dict:
        if g is _V3:
            self.family = _v3_variant(unit) or self.family
        try:
            name, args = g.read(unit)
        except ValueError as e:
            raise BadMarkup(self.family, str(e)) from None
        return {"id": new_call_id(), "type": "function",
                "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}
