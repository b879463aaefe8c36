"""Image formats for the API (png, jpeg, webp, svg by vectorizing) and gallery thumbnails."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from storage.files import exif_metadata

__all__ = ["FORMATS", "MEDIA_TYPES", "convert", "thumbnail"]

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "svg": "image/svg+xml"}
FORMATS = tuple(MEDIA_TYPES)
_SVG_MAX_SIDE = 512  # vectorizing a full 1024² image takes seconds; the shapes survive a downscale


def convert(path: Path, fmt: str) -> bytes:
    """The stored image at ``path`` in ``fmt`` (blocking: run it in a thread)."""
    if fmt == "png" and path.suffix.lower() == ".png":
        return path.read_bytes()
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        exif = exif_metadata(image)  # the generation parameters travel with a JPEG/WebP too
    if fmt == "svg":
        return _svg(rgb)
    buffer = io.BytesIO()
    options: dict[str, object] = {"quality": 90} if fmt in ("jpeg", "webp") else {}
    if exif and fmt in ("jpeg", "webp"):
        options["exif"] = exif
    rgb.save(buffer, format=fmt.upper(), **options)
    return buffer.getvalue()


def _svg(image: Image.Image) -> bytes:
    import vtracer

    width, height = image.size
    image.thumbnail((_SVG_MAX_SIDE, _SVG_MAX_SIDE))
    png = io.BytesIO()
    image.save(png, format="PNG")
    svg = vtracer.convert_raw_image_to_svg(png.getvalue(), img_format="png", colormode="color", mode="spline",
                                           filter_speckle=8, color_precision=5)
    if image.size != (width, height):  # draw at the original size
        svg = svg.replace(f'width="{image.size[0]}" height="{image.size[1]}"',
                          f'width="{width}" height="{height}" viewBox="0 0 {image.size[0]} {image.size[1]}"', 1)
    return svg.encode("utf-8")


def thumbnail(path: Path, side: int = 384) -> bytes:
    """A JPEG at most ``side`` pixels wide and high (blocking)."""
    with Image.open(path) as image:
        thumb = image.convert("RGB")
    thumb.thumbnail((side, side))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=82, optimize=True)
    return buffer.getvalue()
