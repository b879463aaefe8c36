"""Images users might send, good and bad, built in memory (for the upload tests of every front end)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

__all__ = ["BAD_UPLOADS", "animated_gif", "bomb_png", "photo", "png", "truncated_jpeg"]


def photo(width: int = 300, height: int = 200, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A noisy RGB picture (a stand-in for a photo) as ``fmt`` bytes."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels = np.clip(gradient + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def truncated_jpeg() -> bytes:
    whole = photo(320, 240, fmt="JPEG")
    return whole[: len(whole) // 2]


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), color) for color in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 30000) -> bytes:
    """A PNG whose header claims side x side pixels in a few hundred bytes (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\x00" * (1 + (side + 7) // 8) * 64, 9)  # only the first rows; enough to open
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def huge_jpeg() -> bytes:
    """A 4200x4000 (16.8 MP) JPEG: over the megapixel limit, and not a bomb."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (400, 420, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((4200, 4000), Image.Resampling.NEAREST).save(out, "JPEG", quality=30)
    return out.getvalue()


def tiff() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(out, "TIFF")
    return out.getvalue()


# (name, bytes factory, words the refusal must contain)
BAD_UPLOADS = [
    ("text", lambda: b"this is not a picture", ["not an image"]),
    ("truncated", truncated_jpeg, ["truncated"]),
    ("animated", animated_gif, ["Animated"]),
    ("too_large", lambda: b"\xff\xd8\xff" + b"\0" * 20_000_001, ["20 MB"]),
    ("megapixels", huge_jpeg, ["16 megapixels", "4200x4000"]),
    ("bomb", bomb_png, ["decompression bomb"]),
    ("tiff", tiff, ["TIFF", "PNG, JPEG or WebP"]),
]
