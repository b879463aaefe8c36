"""Zoom out and pan: a larger or shifted canvas whose new border is inpainted, the original kept.

:func:`outpaint_canvas` builds, at the output size, the canvas (the original pasted where it
stays, the new border filled with its mean colour), the inpainting mask (255 where new pixels
are made, feathered a few pixels into the original so the seam blends) and what to keep.
:func:`composite` lays the kept original back over the inpainted result, so outside the feather
the original pixels come back exactly (up to the resize to the output size).

    zoom 1.5 / 2      the canvas is 1.5x / 2x the image, the image in its centre
    pan left … down   the canvas is 1.5x as wide (left, right) or tall (up, down), the image at
                      the far side, so the new half-image appears on the side panned to
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["PAN_MODES", "ZOOM_MODES", "canvas_ratio", "composite", "outpaint_canvas"]

ZOOM_MODES = ("1.5", "2")
PAN_MODES = ("left", "right", "up", "down")
PAN_EXTEND = 1.5
FEATHER = 1 / 32  # of the output's short side: how far the mask reaches into the original


def canvas_ratio(kind: str, mode: str, width: int, height: int) -> tuple[float, float]:
    """(width, height) of the new canvas in the image's pixels."""
    if kind == "zoom":
        factor = float(mode)
        return width * factor, height * factor
    if mode in ("left", "right"):
        return width * PAN_EXTEND, float(height)
    return float(width), height * PAN_EXTEND


def outpaint_canvas(image: Image.Image, kind: str, mode: str, size: tuple[int, int]) -> tuple[Any, Any, Any]:
    """(canvas RGB, mask L: 255 = make, keep L: 255 = the original's pixels) at ``size``."""
    if (kind, mode) not in {("zoom", m) for m in ZOOM_MODES} | {("pan", m) for m in PAN_MODES}:
        raise ValueError(f"unknown outpaint {kind} {mode!r}")
    image = image.convert("RGB")
    width, height = image.size
    cw, ch = (round(v) for v in canvas_ratio(kind, mode, width, height))
    if kind == "zoom" or mode in ("up", "down"):
        x = (cw - width) // 2
    else:
        x = cw - width if mode == "left" else 0
    if kind == "zoom" or mode in ("left", "right"):
        y = (ch - height) // 2
    else:
        y = ch - height if mode == "up" else 0
    mean = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(axis=0))
    canvas = Image.new("RGB", (cw, ch), mean)
    canvas.paste(image, (x, y))
    keep = Image.new("L", (cw, ch), 0)
    keep.paste(255, (x, y, x + width, y + height))
    canvas = canvas.resize(size, Image.Resampling.LANCZOS)
    keep = keep.resize(size, Image.Resampling.NEAREST)
    feather = max(2, round(min(size) * FEATHER))
    # the mask reaches `feather` px into the original (MinFilter shrinks what is kept), softly
    inner = keep.filter(ImageFilter.MinFilter(2 * (feather // 2) + 1))
    mask = Image.eval(inner, lambda v: 255 - v).filter(ImageFilter.GaussianBlur(feather / 2))
    return canvas, mask, Image.eval(mask, lambda v: 255 if v == 0 else 0)  # kept exactly: mask 0


def composite(generated: Image.Image, canvas: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated pixels where ``mask`` says make, the canvas (the original) elsewhere, blended."""
    return Image.composite(generated.convert("RGB"), canvas, mask)
