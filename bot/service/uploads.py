"""An image a caller sends, as input like a prompt: checked, fitted to a bucket, stored, used for img2img.

A minimal entry point for the OpenAI/A1111 compatible routes (edits, variations, img2img); the
toolbox (issue 23) grows it. The order holds what DESIGN.md asks: decode and check (format, size,
animation, decompression bombs) → the image safety check → store → img2img request; all before
anything is charged, so a refused upload costs nothing.

The upload is re-encoded as a PNG without metadata and stored content-addressed in the image
store, its path in the job's request (``init_image``). No image row points to it: the store keeps
it while its job is queued or running, the retention sweep removes it once the job is over (as
any unreferenced file), and ``/forget`` removes it with the user's images (``storage.images``).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from generation.core.errors import InvalidRequest
from generation.core.request import GenerationRequest, ModelCaps, has_visible_text
from storage.files import METADATA_KEY, read_metadata

if TYPE_CHECKING:
    from bot.service.context import ServiceContext
    from bot.service.tickets import Who

__all__ = ["MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "NEUTRAL_PROMPT", "Upload", "img2img_from", "nearest_aspect",
           "read_upload"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 16_000_000
FORMATS = ("PNG", "JPEG", "MPO", "WEBP")  # MPO: a phone camera's JPEG (its first picture is used)
NEUTRAL_PROMPT = "high quality, detailed"  # a variation of an image that carries no prompt
_ASPECT_FLAG = re.compile(r"(?:^|\s)(?:--|\u2014|\u2013)(?:ar|aspect)(?:\s|=|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Upload:
    """A checked upload: RGB pixels, the same as a metadata-free PNG, and the prompt it carries."""

    image: Any  # PIL.Image.Image, RGB
    png: bytes
    prompt: str | None  # from our metadata or A1111's "parameters" text, when present

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def read_upload(data: bytes) -> Upload:
    """Decode and check an uploaded image (blocking: run it in a thread); InvalidRequest says why not."""
    if not data:
        raise InvalidRequest("image", "The image is empty: send a PNG, JPEG or WebP file.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidRequest("image", f"The image is {len(data) / 2**20:.1f} MB; the limit is "
                                      f"{MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                width, height = opened.size
                if opened.format not in FORMATS:
                    raise InvalidRequest("image", f"A {opened.format or 'file of unknown type'} is not accepted; "
                                                  "send a PNG, JPEG or WebP image.")
                if getattr(opened, "n_frames", 1) > 1 and opened.format != "MPO":
                    raise InvalidRequest("image", "Animated images are not accepted; send a still image.")
                if width * height > MAX_UPLOAD_PIXELS:
                    raise InvalidRequest("image", f"The image is {width}x{height} ({width * height / 1e6:.1f} "
                                                  f"megapixels); the limit is {MAX_UPLOAD_PIXELS / 1e6:g}.")
                opened.load()
                rgb = ImageOps.exif_transpose(opened).convert("RGB")
                texts = dict(getattr(opened, "text", {}) or {})
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidRequest("image", "The image is too large to open safely (a decompression bomb?).") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidRequest("image", "The file is not a readable image (or it is truncated); "
                                      "send a PNG, JPEG or WebP file.") from None
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return Upload(rgb, buffer.getvalue(), _prompt_of(data, texts))


def _prompt_of(data: bytes, texts: dict[str, Any]) -> str | None:
    try:
        own = read_metadata(data)
    except (OSError, ValueError, json.JSONDecodeError):
        own = {}
    prompt = own.get("prompt")
    if not prompt and isinstance(texts.get(METADATA_KEY), str):
        prompt = texts[METADATA_KEY].split("\nNegative prompt:")[0].split("\nSteps:")[0]
    return prompt.strip() if isinstance(prompt, str) and has_visible_text(prompt) else None


def nearest_aspect(caps: ModelCaps, width: float, height: float) -> str:
    """The model's named aspect ratio closest to width:height (the larger area on a tie)."""
    wanted = math.log(width / height)
    return min(caps.sizes().items(),
               key=lambda item: (round(abs(math.log(item[1][0] / item[1][1]) - wanted), 9),
                                 -item[1][0] * item[1][1]))[0]


def prompt_for(text: str, upload: Upload) -> tuple[str, tuple[str, ...]]:
    """The text to parse for an upload: the caller's, else the image's own prompt, else a neutral one."""
    if has_visible_text(text):
        return text, ()
    if upload.prompt:
        return upload.prompt, ("No prompt was given: the prompt stored in the image was used.",)
    return NEUTRAL_PROMPT, (f"No prompt was given and the image carries none: {NEUTRAL_PROMPT!r} was used.",)


async def img2img_from(ctx: ServiceContext, who: Who, request: GenerationRequest, upload: Upload,
                       strength: float | None, target: dict[str, Any] | None) -> GenerationRequest:
    """``request`` made from ``upload``: image safety check, stored, img2img at ``strength``."""
    verdicts = await ctx.moderation.check_images(who.key, target, [upload.image])
    if "blocked" in verdicts:
        raise InvalidRequest("image", "The image was refused by the image safety check; nothing was charged.")
    path, _ = await asyncio.to_thread(ctx.store.put, upload.png, "png")
    strength = ctx.config.variation_strength if strength is None else strength
    steps = request.steps
    if isinstance(strength, (int, float)) and not isinstance(strength, bool) and 0 < strength <= 1:
        # img2img runs int(steps * strength) steps: take more steps when that would be none
        steps = next((s for s in sorted(ctx.caps.steps) if s >= request.steps and int(s * strength) >= 1), steps)
    made = replace(request, kind="img2img", init_image=str(ctx.store.path_for(path).resolve()),
                   strength=strength, steps=steps)
    return ctx.caps.check(made)


async def prepare(data: bytes, caps: ModelCaps, text: str,
                  options: dict[str, Any]) -> tuple[Upload, str, dict[str, Any], tuple[str, ...]]:
    """Read ``data``; the text to parse, the options (the image's aspect unless one is given), notes."""
    upload = await asyncio.to_thread(read_upload, data)
    text, notes = prompt_for(text, upload)
    if options.get("aspect") is None and not _ASPECT_FLAG.search(text):
        options = {**options, "aspect": nearest_aspect(caps, *upload.size)}
    return upload, text, options, notes
