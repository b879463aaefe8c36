"""Images users send as input: checked, safety-checked, fitted and stored before anything is charged.

The path of an upload (``imagine(..., image=bytes)``)::

    check_upload (a thread)   not an image, truncated, animated, > 20 MB or 16 MP, a bomb → InvalidRequest
    parse_imagine             img2img at the bucket nearest the image's ratio (or the --ar given)
    fit + image check         the fitted pixels go through the image safety check as results do
    store                     a PNG in the image store (content-addressed, no metadata)
    the job's transaction     a ``job_inputs`` row beside the job row, so history shows it,
                              /forget deletes it and a restart runs the job with it again

One path for every front end: the chats, ``--image``, ``POST /v1/images`` and the compatible
APIs (OpenAI edits/variations, A1111 img2img and extra-single-image) all hand their bytes here.
An upload sent without a prompt (an OpenAI variation) takes the prompt stored in the image (ours,
or A1111's ``parameters`` text), else a neutral one (:func:`prompt_for`).

Every refusal is an :class:`~generation.core.errors.ImagineError` raised before the quota is
touched. A file stored for a request refused later (quota, prompt) has no row and is collected
by ``ImageStore.delete_unreferenced`` like any unreferenced file.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image

from generation.core.errors import InvalidRequest
from generation.core.request import GenerationRequest, ModelCaps, has_visible_text
from generation.tools.inputs import MAX_UPLOAD_BYTES, Upload, check_upload, fit_image, png_bytes
from storage.files import METADATA_KEY, read_metadata

__all__ = ["BLOCKED_UPLOAD", "MAX_UPLOAD_BYTES", "NEUTRAL_PROMPT", "StoredUpload", "checked_upload", "nearest_aspect",
           "prompt_for", "store_upload"]

logger = logging.getLogger(__name__)

NEUTRAL_PROMPT = "high quality, detailed"  # a variation of an image that carries no prompt
BLOCKED_UPLOAD = ("Your image did not pass the image safety check, so nothing was made and nothing "
                  "was charged; send a different image.")


@dataclass(frozen=True)
class StoredUpload:
    """A checked, fitted upload in the image store (what ``job_inputs`` records)."""

    path: str
    sha256: str
    width: int
    height: int
    bytes: int


async def checked_upload(data: Any) -> Upload:
    """The upload's pixels, or InvalidRequest("image", what to fix); off the event loop."""
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidRequest("image", "The image must be sent as a file (PNG, JPEG or WebP).")
    return await asyncio.to_thread(check_upload, bytes(data))


async def store_upload(ctx: Any, who: Any, upload: Upload, request: GenerationRequest,
                       target: dict[str, Any] | None, *,
                       size: tuple[int, int] | None = None) -> tuple[GenerationRequest, StoredUpload]:
    """Fit ``upload`` to ``request``'s size (or ``size``), check it, store it; the request now starts from it.

    The prompt is checked first: a refused prompt never has its image classified or stored.
    """
    await ctx.moderation.check_prompt(who, request.prompt, request.negative_prompt, target)
    size = size or (request.width, request.height)
    fitted = await asyncio.to_thread(fit_image, upload.image, size)
    verdicts = await ctx.moderation.check_images(f"{who.platform}:{who.user_id}", target, [fitted])
    if "blocked" in verdicts:
        logger.warning("upload from %s refused by the image check", who.key)
        raise InvalidRequest("image", BLOCKED_UPLOAD)
    data = await asyncio.to_thread(png_bytes, fitted)
    path, sha = await asyncio.to_thread(ctx.store.put, data, "png")
    stored = StoredUpload(path, sha, fitted.width, fitted.height, len(data))
    return replace(request, init_image=str(ctx.store.path_for(path).resolve())), stored


def nearest_aspect(caps: ModelCaps, width: float, height: float) -> str:
    """The model's named aspect ratio closest to width:height (the larger area on a tie); the
    compatible APIs map a client's pixel size to it."""
    wanted = math.log(width / height)
    return min(caps.sizes().items(),
               key=lambda item: (round(abs(math.log(item[1][0] / item[1][1]) - wanted), 9),
                                 -item[1][0] * item[1][1]))[0]


def prompt_for(text: str, data: bytes) -> tuple[str, tuple[str, ...]]:
    """The text to parse for an upload: the caller's, else the prompt stored in the image, else a
    neutral one (with a note saying which was used)."""
    if has_visible_text(text):
        return text, ()
    stored = _prompt_in(data)
    if stored:
        return stored, ("No prompt was given: the prompt stored in the image was used.",)
    return NEUTRAL_PROMPT, (f"No prompt was given and the image carries none: {NEUTRAL_PROMPT!r} was used.",)


def _prompt_in(data: bytes) -> str | None:
    """The prompt in our PNG metadata or in A1111's ``parameters`` text, if any."""
    try:
        prompt = read_metadata(data).get("prompt")
    except (OSError, ValueError, json.JSONDecodeError):
        prompt = None
    if not prompt:
        try:
            with Image.open(io.BytesIO(data)) as opened:
                text = dict(getattr(opened, "text", {}) or {}).get(METADATA_KEY)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            text = None
        if isinstance(text, str):
            prompt = text.split("\nNegative prompt:")[0].split("\nSteps:")[0]
    return prompt.strip() if isinstance(prompt, str) and has_visible_text(prompt) else None
