"""Tools on an image a caller sends that need no GPU: for now, a Lanczos enlargement.

A stopgap for A1111's ``extra-single-image`` until the toolbox (issue 23) makes upscaling a
queued job with a real upscaler model. The upload gets the same checks as any (format, size,
decompression bombs, the image safety check); the result is returned, not stored, and not
charged (the per-key request limit of the API bounds it).
"""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from bot.service import uploads
from bot.service.context import ServiceContext
from bot.service.tickets import Who
from generation.core.errors import InvalidRequest

__all__ = ["MAX_UPSCALED_PIXELS", "ToolsPart"]

MAX_UPSCALED_PIXELS = 16_000_000


class ToolsPart(ServiceContext):
    """Image tools that run here, not on the GPU queue."""

    async def upscale_upload(self, who: Who, data: bytes, factor: float = 2.0) -> bytes:
        """``data`` enlarged ``factor`` times with Lanczos, as PNG (checked like any upload)."""
        await self._active_user(who)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 4:
            raise InvalidRequest("factor", f"The upscale factor must be from 1 to 4, not {factor!r}.")
        upload = await asyncio.to_thread(uploads.read_upload, data)
        width, height = (max(1, round(side * factor)) for side in upload.size)
        if width * height > MAX_UPSCALED_PIXELS:
            raise InvalidRequest("factor", f"{width}x{height} would be over {MAX_UPSCALED_PIXELS / 1e6:g} "
                                           "megapixels; use a smaller factor or image.")
        verdicts = await self.moderation.check_images(who.key, None, [upload.image])
        if "blocked" in verdicts:
            raise InvalidRequest("image", "The image was refused by the image safety check.")
        return await asyncio.to_thread(_lanczos, upload.image, (width, height))


def _lanczos(image: Image.Image, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, format="PNG")
    return buffer.getvalue()
