"""Streamed tool-call deltas merged into whole calls.

Servers cut calls differently: vLLM sends id+name, then argument pieces; llama.cpp sends the name
with the first argument bytes; transformers sends the whole call at once. Deltas are merged by
``index`` (falling back to ``id``); a call is released once complete, i.e. when the next call
starts or the stream finishes, so Dify never sees half a call. Argument pieces are kept as a list
and joined once, at release: adding each piece to a string was quadratic in the call's length.
"""

from __future__ import annotations

import json
import uuid

__all__ = ["ToolCallAccumulator", "arguments_complete", "new_call_id"]


class ToolCallAccumulator:
    __slots__ = ("_calls", "_args", "_order", "_released")

    def __init__(self) -> None:
        self._calls: dict[object, dict] = {}
        self._args: dict[object, list[str]] = {}  # argument pieces of each call, joined at release
        self._order: list[object] = []
        self._released = 0

    def feed(self, deltas: list) -> list[dict]:
        """Merge deltas; return the calls that became complete."""
        for d in deltas:
            if not isinstance(d, dict):
                continue
            key = d.get("index")
            if key is None:
                key = d.get("id") or (self._order[-1] if self._order else 0)
            call = self._calls.get(key)
            if call is None:
                call = {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                self._calls[key] = call
                self._args[key] = []
                self._order.append(key)
            if d.get("id"):
                call["id"] = d["id"]
            fn = d.get("function") or {}
            if fn.get("name"):
                call["function"]["name"] += fn["name"] if not call["function"]["name"] else ""
            args = fn.get("arguments")
            if isinstance(args, str):
                self._args[key].append(args)
            elif isinstance(args, dict):  # a few servers send parsed arguments
                self._args[key].append(json.dumps(args, ensure_ascii=False))
        # every call but the newest is complete
        return self._release(len(self._order) - 1)

    def finish(self) -> list[dict]:
        return self._release(len(self._order))

    def _release(self, upto: int) -> list[dict]:
        out = []
        while self._released < upto:
            key = self._order[self._released]
            call = self._calls[key]
            call["function"]["arguments"] = "".join(self._args.pop(key))
            if not call["id"]:
                call["id"] = new_call_id()
            out.append(call)
            self._released += 1
        return out

    @property
    def count(self) -> int:
        return len(self._order)


def new_call_id() -> str:
    """An id for a call the server sent without one."""
    return f"call_{uuid.uuid4().hex[:24]}"


def arguments_complete(call: dict) -> bool:
    """Whether a released call's arguments are whole JSON (``{"location": "Par`` is not)."""
    try:
        json.loads(call["function"]["arguments"])
    except (ValueError, RecursionError):
        return False
    return True
