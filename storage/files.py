"""Image encodings: PNG with the generation parameters inside, and re-encoding under a size limit."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from PIL import Image, PngImagePlugin

__all__ = ["METADATA_KEY", "fit_under", "png_with_metadata", "read_png_metadata"]

log = logging.getLogger(__name__)

METADATA_KEY = "parameters"
_QUALITIES = (90, 82, 74, 66, 58, 50, 42)


def png_with_metadata(image: Image.Image, params: dict[str, Any]) -> bytes:
    """``image`` as PNG bytes with ``params`` as JSON in a ``parameters`` tEXt chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, json.dumps(params, ensure_ascii=False, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_metadata(data: bytes) -> dict[str, Any]:
    """The ``parameters`` dict written by :func:`png_with_metadata` ({} when absent)."""
    with Image.open(io.BytesIO(data)) as image:
        text = getattr(image, "text", {}).get(METADATA_KEY)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        log.debug("PNG parameters chunk is not JSON")
        return {}
    return value if isinstance(value, dict) else {}


def fit_under(
    data: bytes, max_bytes: int, formats: tuple[str, ...] = ("webp", "jpeg")
) -> tuple[bytes, str]:
    """``(bytes, ext)`` no larger than ``max_bytes``: the PNG as is, else WebP/JPEG, else smaller.

    Quality goes down first; only if the lowest quality of every format is still too large is
    the image downscaled (keeping its aspect ratio) until it fits.
    """
    if max_bytes <= 0:
        raise ValueError(f"`max_bytes` must be positive, not {max_bytes}")
    if len(data) <= max_bytes:
        return data, "png"
    with Image.open(io.BytesIO(data)) as opened:
        image = _flatten(opened)
    width, height = image.size
    scale = 1.0
    while True:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        candidate = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
        smallest = None
        for fmt in formats:
            lowest = _encode(candidate, fmt, _QUALITIES[-1])
            smallest = len(lowest) if smallest is None else min(smallest, len(lowest))
            if len(lowest) > max_bytes:
                continue
            encoded, quality = _best_quality(candidate, fmt, max_bytes, lowest)
            log.debug(
                "fit %d bytes into %d: %s q=%d at %dx%d",
                len(data), max_bytes, fmt, quality, *size,
            )
            return encoded, "jpg" if fmt == "jpeg" else fmt
        if min(size) <= 1 or smallest is None:
            raise ValueError(f"cannot encode the image in {max_bytes} bytes")
        # Bytes grow about with the pixel count: aim a little below the limit.
        step = min(0.9, max(0.25, (max_bytes / smallest) ** 0.5 * 0.95))
        scale *= step


def _best_quality(
    image: Image.Image, fmt: str, max_bytes: int, lowest: bytes
) -> tuple[bytes, int]:
    """The highest quality in _QUALITIES that fits (binary search; the lowest is known to fit)."""
    best, best_quality = lowest, _QUALITIES[-1]
    low, high = 0, len(_QUALITIES) - 2  # indexes into _QUALITIES, high quality first
    while low <= high:
        middle = (low + high) // 2
        encoded = _encode(image, fmt, _QUALITIES[middle])
        if len(encoded) <= max_bytes:
            best, best_quality = encoded, _QUALITIES[middle]
            high = middle - 1
        else:
            low = middle + 1
    return best, best_quality


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for JPEG/WebP; transparency goes onto white."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": quality}
    if fmt == "webp":
        options["method"] = 4
    elif fmt == "jpeg":
        options["optimize"] = True
    image.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()
