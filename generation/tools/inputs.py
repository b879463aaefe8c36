"""An image a user sends as input: checked before anything is charged, then fitted to a bucket.

:func:`check_upload` turns untrusted bytes into an RGB image or raises
:class:`~generation.core.errors.InvalidRequest` (field ``image``) with one message saying what to
fix: not an image, an unsupported format, truncated, animated, over :data:`MAX_UPLOAD_BYTES` or
:data:`MAX_UPLOAD_PIXELS`, or a decompression bomb (a small file claiming a huge canvas). The
size is read from the header before any pixel is decoded, so a bomb never reaches memory.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from generation.core.errors import InvalidRequest

__all__ = ["FORMATS", "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "Upload", "check_upload", "fit_image", "png_bytes"]

MAX_UPLOAD_BYTES = 20 * 1000 * 1000  # 20 MB
MAX_UPLOAD_PIXELS = 16_000_000  # 16 megapixels
FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP")  # MPO: a phone camera's JPEG (its first picture is used)
_BOMB_RATIO = 100  # decoded bytes per file byte beyond which an oversized file is a bomb, not a photo
_ASK = "send a PNG, JPEG or WebP picture"


@dataclass(frozen=True)
class Upload:
    """A checked upload: RGB pixels (EXIF orientation applied, metadata dropped) and its format."""

    image: Any  # PIL.Image.Image, mode RGB
    format: str
    bytes: int

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _refuse(message: str) -> InvalidRequest:
    return InvalidRequest("image", message)


def check_upload(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES,
                 max_pixels: int = MAX_UPLOAD_PIXELS) -> Upload:
    """The RGB image in ``data``, or InvalidRequest("image", what to fix)."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise _refuse(f"The file you sent is empty; {_ASK}.")
    if len(data) > max_bytes:
        raise _refuse(f"Your image is {len(data):,} bytes, over the {max_bytes / 1e6:g} MB limit; "
                      "send a smaller or more compressed one.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(bytes(data)))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _refuse(_bomb_message(None, len(data))) from None
        except UnidentifiedImageError:
            raise _refuse(f"That file is not an image I can read; {_ASK}.") from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise _refuse(f"Your image could not be read (the file is damaged); {_ASK}.") from None
    with opened:
        width, height = opened.size
        pixels = width * height
        if opened.format not in FORMATS:
            raise _refuse(f"{opened.format or 'That'} images are not accepted; {_ASK}.")
        if pixels > max_pixels and pixels * 3 > _BOMB_RATIO * len(data):
            raise _refuse(_bomb_message((width, height), len(data)))
        if pixels > max_pixels:
            raise _refuse(f"Your image is {width}x{height} ({pixels / 1e6:.1f} megapixels); the limit is "
                          f"{max_pixels / 1e6:g} megapixels. Send a smaller one.")
        if opened.format != "MPO" and (getattr(opened, "is_animated", False) or getattr(opened, "n_frames", 1) > 1):
            raise _refuse(f"Animated images cannot be a starting point; {_ASK} (one still frame).")
        try:
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
        except (OSError, SyntaxError, ValueError, EOFError):
            raise _refuse(f"Your image is truncated or damaged (the file ends early); send it again, "
                          f"or {_ASK}.") from None
        rgb = _rgb(oriented)
        return Upload(rgb, opened.format, len(data))


def _bomb_message(size: tuple[int, int] | None, length: int) -> str:
    claim = f" claims {size[0]}x{size[1]} pixels in {length / 1000:.0f} KB" if size else ""
    return (f"Your file{claim}: a decompression bomb, so it was refused. Send a PNG, JPEG or WebP "
            f"picture of at most {MAX_UPLOAD_PIXELS / 1e6:g} megapixels.")


def _rgb(image: Any) -> Any:
    """RGB pixels; transparency is laid on white (a sketch on a clear background stays a sketch)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def fit_image(image: Any, size: tuple[int, int]) -> Any:
    """``image`` centre-cropped to the ratio of ``size`` and resized to it (Lanczos)."""
    if image.size == tuple(size):
        return image.copy()
    return ImageOps.fit(image, tuple(size), Image.Resampling.LANCZOS)


def png_bytes(image: Any) -> bytes:
    """``image`` as a PNG without metadata."""
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
