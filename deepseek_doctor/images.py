"""Whether the server takes images (``images``), probed with a tiny PNG made here (no image
library, no file)."""

from __future__ import annotations

import base64
import struct
import zlib

from .chat import failed_outright, plugin_body
from .flags import hint
from .probe import Probe
from .report import FAIL, OK, WARN, Check
from .wire import raw_chat

__all__ = ["check_images", "tiny_png", "tiny_png_data_url"]

# Large enough for every vision encoder's minimum (Qwen-style patch merging wants 28 px; VL2 and
# OCR resize anything), small enough to cost a vision model a handful of tokens.
SIDE = 32


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def tiny_png(side: int = SIDE) -> bytes:
    """A ``side`` x ``side`` white RGB PNG."""
    row = b"\x00" + b"\xff\xff\xff" * side  # filter byte "none", then the pixels
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(row * side)) + _chunk(b"IEND", b""))


def tiny_png_data_url(side: int = SIDE) -> str:
    """The PNG as an OpenAI ``image_url`` data URL."""
    return "data:image/png;base64," + base64.b64encode(tiny_png(side)).decode("ascii")


# -- the check ---------------------------------------------------------------------------------------

IMAGE_TOKENS = 8  # the answer does not matter: whether the server takes the image does


def check_images(p: Probe) -> Check:
    """A tiny PNG as a data URL ``image_url`` part, as the plugin sends Dify's images: accepted by a
    vision model served with multimodal support, refused (400) by any other."""
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What colour is this image? One word."},
        {"type": "image_url", "image_url": {"url": tiny_png_data_url()}}]}]
    raw = raw_chat(p, plugin_body(p, messages, {"max_tokens": IMAGE_TOKENS, "temperature": 0.6}),
                   lambda r: bool(r.content or r.reasoning or r.finish_reason))
    family = p.family
    if raw.error is None:
        if family.vision:
            return Check("images", OK, f"images accepted: {p.model} is a vision model ({family.name})",
                         {"accepted": True, "vision": True})
        return Check("images", OK, f"images accepted, though {p.model} is text-only by its name: if "
                     "it is a vision model, add it as a customizable model with vision on",
                     {"accepted": True, "vision": False})
    if failed_outright(raw):
        return Check("images", FAIL, f"the request with an image failed: {raw.error.message}",
                     {"status": raw.status})
    msg = raw.error.message[:200]
    data = {"accepted": False, "status": raw.status, "vision": family.vision}
    if raw.status != 400:
        return Check("images", WARN, f"the request with an image was refused: {msg}", data)
    if not family.vision:
        return Check("images", OK, f"text-only: images are refused ({msg}). The plugin refuses "
                     "images for this model itself (a customizable model: keep vision off)", data)
    if "At most 0 image" in msg:
        why = "the server takes no images (--limit-mm-per-prompt '{\"image\": 0}'?)"
    else:
        why = "not a vision model, or not served with multimodal support"
    fix = hint(family.name, p.flavor, "images")
    return Check("images", WARN, f"{p.model} is a vision model ({family.name}) but the server refused "
                 f"the image ({msg}): {why}" + (f"; {fix}" if fix else ""), data)
