"""Images in a chat request: which model takes them, where they may stand, and the limits each
one is checked against before anything is sent. Pure: OpenAI messages in, OpenAI messages out.

vLLM takes OpenAI ``{"type": "image_url", "image_url": {"url": ...}}`` parts in user messages:
``data:image/...;base64,...`` inline, or an http(s) URL the server fetches itself (Dify sends one
or the other, by its ``MULTIMODAL_SEND_FORMAT``). DeepSeek's chat templates place images in user
turns only; an assistant turn is rendered as text.

Limits, each refusal saying what to do:
- formats: JPEG, PNG, GIF, WebP, read from the bytes (their magic), never from a name or the
  declared type; a mislabelled image goes out as what its bytes are. A URL's image is the fetching
  server's to read: only its scheme is checked here.
- size: ``MAX_IMAGE_BYTES`` (20 MiB decoded) per image. Twice Dify's own default upload limit for
  images (``UPLOAD_IMAGE_FILE_SIZE_LIMIT`` = 10 MB), so only an installation that raised it meets
  this one; OpenAI-style APIs use the same per-image figure. The daemon's 5 MiB line limit is on
  what the plugin *writes*; requests reach it whole. ``MAX_REQUEST_IMAGE_BYTES`` (50 MiB) bounds a
  request's images together: one process serves every workspace, and holds each request's images
  (as base64, and again in the JSON body) while it runs.
- count: none here. The server's ``--limit-mm-per-prompt`` is the bound that matters (VL2 is
  served with 2, V4.1 with 4); its 400 names the flag and reaches the user with the endpoint.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BadRequestError
from .settings import Settings

__all__ = ["IMAGE_PLACEHOLDER", "MAX_IMAGE_BYTES", "MAX_REQUEST_IMAGE_BYTES", "TOKENS_PER_IMAGE",
           "ImagePolicy", "image_count", "sniff"]

MiB = 1024 * 1024
MAX_IMAGE_BYTES = 20 * MiB
MAX_REQUEST_IMAGE_BYTES = 50 * MiB
# An image's share of an offline token count. What a model spends on one depends on the model and
# the image (VL2: 211 for its global view, up to ~2,000 tiled; OCR: 273 plus 640-px tiles; V4.1:
# capped by its processor), and servers report the real figure in usage. Counting nothing would
# let a history with images look small to whoever packs it into a 4K-token VL2 context.
TOKENS_PER_IMAGE = 1024
# What an image in an assistant turn becomes (Dify's history of an image a tool produced):
# the templates render assistant turns as text, and the turn keeps a trace of it.
IMAGE_PLACEHOLDER = "[image]"

FORMATS = "JPEG, PNG, GIF or WebP"
_DATA_URL = re.compile(r"data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)


def sniff(head: bytes) -> str | None:
    """The MIME type of an image whose bytes start with ``head``, if it is one of FORMATS."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _parts(content: object) -> list[dict]:
    return [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []


def image_count(content: object) -> int:
    """How many image parts a message's ``content`` holds."""
    return sum(1 for p in _parts(content) if p.get("type") == "image_url")


def _size(url: str, start: int) -> int:
    """Decoded bytes of the base64 text in ``url[start:]``, without decoding (nor copying) it."""
    padding = 2 if url.endswith("==") else 1 if url.endswith("=") else 0
    return (len(url) - start) * 3 // 4 - padding


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    """Whether and how ``model`` takes images. ``accepts``: its catalogue entry declares vision,
    or (a customizable model) the operator's Vision switch is on. ``catalogue``: a catalogue
    entry (not one the operator typed), whose refusal names ``vision_models``, the catalogue
    entries that do take images."""

    model: str
    accepts: bool
    catalogue: bool
    vision_models: tuple[str, ...] = ()
    max_image: int = MAX_IMAGE_BYTES
    max_total: int = MAX_REQUEST_IMAGE_BYTES

    @classmethod
    def of(cls, model: str, settings: Settings, *, catalogue: bool,
           vision_models: Sequence[str] = ()) -> ImagePolicy:
        """A catalogue model by its entry (``vision_models``), a customizable one by the switch."""
        accepts = model in vision_models if catalogue else settings.vision
        return cls(model, accepts, catalogue, tuple(vision_models))

    def checked(self, messages: list[dict]) -> list[dict]:
        """``messages`` as they may be sent: images checked, in user turns only (an assistant turn's
        become ``IMAGE_PLACEHOLDER`` in its text); BadRequestError for the first that may not go."""
        count = sum(image_count(m.get("content")) for m in messages if m.get("role") != "assistant")
        if count and not self.accepts:
            raise self._refusal(count)
        total = 0
        out = []
        for n, m in enumerate(messages, 1):
            content = m.get("content")
            if not image_count(content):
                out.append(m)
                continue
            role = m.get("role")
            if role == "assistant":
                text = "".join(IMAGE_PLACEHOLDER if p.get("type") == "image_url" else p.get("text", "")
                               for p in _parts(content))
                out.append({**m, "content": text})
                continue
            if role != "user":
                raise BadRequestError(f"message {n} ({role}) carries an image",
                                      hint="DeepSeek models take images in user messages only: move "
                                           "the image (or the file variable) into the user message")
            parts = []
            for p in _parts(content):
                if p.get("type") == "image_url":
                    p, size = self._image(p, n)
                    total += size
                    if total > self.max_total:
                        raise BadRequestError(
                            f"the images in this conversation come to more than {self.max_total // MiB} MiB",
                            hint="send fewer or smaller images, or start a new conversation")
                parts.append(p)
            out.append({**m, "content": parts})
        return out

    def _refusal(self, count: int) -> BadRequestError:
        images = f"{count} image{'s' if count > 1 else ''}"
        if self.catalogue:
            takers = ", ".join(self.vision_models) or "none in this version of the plugin"
            hint = (f"choose a model that accepts images ({takers}), or remove the images; a vision "
                    "model served under another name can be added as a custom model with Vision on")
        else:
            hint = ("if the served model is a vision model (DeepSeek-VL2, DeepSeek-OCR, V4.1), turn on "
                    "Vision in this model's settings; otherwise remove the images")
        return BadRequestError(f"{self.model} takes no images, and the conversation carries {images}",
                               hint=hint)

    def _image(self, part: dict, n: int) -> tuple[dict, int]:
        """``part`` as it is sent, and its decoded size (0 for a URL the server fetches)."""
        where = f"the image in message {n}"
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else None
        if not isinstance(url, str) or not url:
            raise BadRequestError(f"{where} has no URL or data")
        scheme = url.partition(":")[0].lower()
        if scheme in ("http", "https"):
            return part, 0
        if scheme != "data":
            raise BadRequestError(f"{where} is a {scheme!r} URL",
                                  hint="send the image inline (base64) or as an http(s) URL the server can fetch")
        head = _DATA_URL.match(url)
        if not head or ";base64" not in head.group(2).lower():
            raise BadRequestError(f"{where} is a data URL without base64 data")
        data = head.end()
        size = _size(url, data)
        if size > self.max_image:
            raise BadRequestError(
                f"{where} is {size / MiB:.1f} MiB, more than the {self.max_image // MiB} MiB an image may be",
                hint="send a smaller image (scaled down or compressed): the models see at most a few "
                     "megapixels anyway")
        try:
            start = base64.b64decode(url[data:data + 32], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError(f"{where} is not valid base64") from None
        mime = sniff(start)
        if mime is None:
            declared = head.group(1) or "no type"
            raise BadRequestError(f"{where} is not a {FORMATS} image (declared {declared})",
                                  hint=f"convert it to one of {FORMATS}")
        if mime != head.group(1).lower():  # what the bytes are, whatever the label said
            part = {**part, "image_url": {**spec, "url": f"data:{mime};base64,{url[data:]}"}}
        return part, size
