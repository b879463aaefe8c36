"""Images users send as input: checked, safety-checked, fitted and stored before anything is charged.

The path of an upload (``imagine(..., image=bytes)``)::

    check_upload (a thread)   not an image, truncated, animated, > 20 MB or 16 MP, a bomb → InvalidRequest
    parse_imagine             img2img at the bucket nearest the image's ratio (or the --ar given)
    fit + image check         the fitted pixels go through the image safety check as results do
    store                     a PNG in the image store (content-addressed, no metadata)
    the job's transaction     a ``job_inputs`` row beside the job row, so history shows it,
                              /forget deletes it and a restart runs the job with it again

Every refusal is an :class:`~generation.core.errors.ImagineError` raised before the quota is
touched. A file stored for a request refused later (quota, prompt) has no row and is collected
by ``ImageStore.delete_unreferenced`` like any unreferenced file.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from generation.core.errors import InvalidRequest
from generation.core.request import GenerationRequest
from generation.tools.inputs import MAX_UPLOAD_BYTES, Upload, check_upload, fit_image, png_bytes

__all__ = ["BLOCKED_UPLOAD", "MAX_UPLOAD_BYTES", "StoredUpload", "checked_upload", "store_upload"]

logger = logging.getLogger(__name__)

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
                       target: dict[str, Any] | None) -> tuple[GenerationRequest, StoredUpload]:
    """Fit ``upload`` to ``request``'s size, check it, store it; the request now starts from it.

    The prompt is checked first: a refused prompt never has its image classified or stored.
    """
    await ctx.moderation.check_prompt(who, request.prompt, request.negative_prompt, target)
    size = (request.width, request.height)
    fitted = await asyncio.to_thread(fit_image, upload.image, size)
    verdicts = await ctx.moderation.check_images(f"{who.platform}:{who.user_id}", target, [fitted])
    if "blocked" in verdicts:
        logger.warning("upload from %s refused by the image check", who.key)
        raise InvalidRequest("image", BLOCKED_UPLOAD)
    data = await asyncio.to_thread(png_bytes, fitted)
    path, sha = await asyncio.to_thread(ctx.store.put, data, "png")
    stored = StoredUpload(path, sha, fitted.width, fitted.height, len(data))
    return replace(request, init_image=str(ctx.store.path_for(path).resolve())), stored
