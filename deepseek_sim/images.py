"""Image parts in a chat request (OpenAI ``{"type": "image_url", "image_url": {"url": ...}}``), as
a vLLM server takes them: a vision model counts them (and its scripted answer says how many it
saw), a text-only model refuses any, and a vision model refuses more than
``--limit-mm-per-prompt`` allows."""

from __future__ import annotations

from typing import Any

from .config import SimConfig

__all__ = ["image_error", "images_in", "seen"]


def images_in(messages: Any) -> int:
    """How many image parts the messages carry, in any role (vLLM counts them all)."""
    if not isinstance(messages, list):
        return 0
    return sum(1 for m in messages if isinstance(m, dict) and isinstance(m.get("content"), list)
               for p in m["content"] if isinstance(p, dict) and p.get("type") == "image_url")


def image_error(body: Any, cfg: SimConfig) -> tuple | None:
    """The 400 a server answers to the request's images, or None (none, or all accepted).

    vLLM's words (0.32, tests/real/test_real_hybrid.py pins them): a text-only model answers
    ``<served-name> is not a multimodal model``; a vision model sent more than its
    ``--limit-mm-per-prompt`` answers ``At most {limit} image(s) may be provided in one prompt.``
    (*unconfirmed*: SGLang's refusal was not found and is given vLLM's words here)."""
    n = images_in(body.get("messages") if isinstance(body, dict) else None)
    if not n:
        return None
    if not cfg.vision:
        return 400, f"{cfg.served_model} is not a multimodal model", {"param": None}
    limit = cfg.max_images if cfg.max_images is not None else n
    if n <= limit:
        return None
    message = (f"At most {limit} image(s) may be provided in one prompt. "
               "Set `--limit-mm-per-prompt` to increase this limit.")
    return 400, message, {"param": "image"}


def seen(messages: Any) -> str:
    """What the scripted vision model says first about the images it was shown ("" for none)."""
    n = images_in(messages)
    return f"I see {n} image{'s' if n > 1 else ''}. " if n else ""
