"""Edit masks: from a segmentation map or a drawn mask to the soft mask an inpainting pass repaints.

    prepare_mask(probabilities, size, settings)  the model's map (0..1) at the image's size,
                                                 thresholded, grown and feathered: L, 255 = repaint
    mask_from_image(mask, size, convention)      a drawn mask: OpenAI's (transparent = edit),
                                                 A1111's (white = edit, or inverted)
    coverage(mask)                               the share of the picture the mask touches
    pack / unpack                                the image with the mask in its alpha channel
                                                 (transparent = repainted, OpenAI's convention):
                                                 one stored input file per edit
    composite_edit(original, generated, mask)    the generated pixels where the mask says, the
                                                 original exactly wherever the mask is 0
    overlay(image, mask)                         a small picture of the mask over the image, so a
                                                 wrong mask is obvious

Pure PIL and numpy: the service and the front ends use it without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["EditSettings", "EDIT_MODES", "composite_edit", "coverage", "coverage_problem", "mask_from_image",
           "overlay", "pack", "prepare_mask", "unpack"]

EDIT_MODES = ("words", "mask")  # how the region was named: by words (the mask model) or drawn


@dataclass(frozen=True)
class EditSettings:
    """The ``[edit]`` table. ``mask_model`` unset: editing by words is off (a drawn mask still works)."""

    mask_model: str | None = None  # a CLIPSeg model (Hub id or folder, e.g. CIDAS/clipseg-rd64-refined) or "tiny"
    device: str = "cpu"
    timeout_s: float = 20.0  # the mask model's time limit per call
    threshold: float = 0.4  # a pixel belongs to the named thing when the model's probability is above this
    grow: float = 0.03  # how far the mask is grown, as a share of the image's short side
    feather: float = 0.02  # how soft its edge is, as a share of the short side
    min_coverage: float = 0.005  # a mask touching less of the picture is refused (it found nothing)
    max_coverage: float = 0.95  # a mask touching more is refused (that is a new picture, not an edit)
    strength: float = 1.0  # how much of the region is re-noised (1: drawn anew)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"edit.device must be cpu or cuda, not {self.device!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"edit.timeout_s must be above 0, not {self.timeout_s!r}")
        for name in ("threshold", "grow", "feather", "min_coverage", "max_coverage"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"edit.{name} must be from 0 to 1, not {value!r}")
        if self.min_coverage >= self.max_coverage:
            raise ValueError("edit.min_coverage must be below edit.max_coverage")
        if not 0 < self.strength <= 1:
            raise ValueError(f"edit.strength must be above 0 and at most 1, not {self.strength!r}")


def prepare_mask(probabilities: Any, size: tuple[int, int], settings: EditSettings) -> Image.Image:
    """The mask to repaint (L, 255 = repaint) at ``size`` from a probability map (2-D, 0..1)."""
    values = np.asarray(probabilities, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"a probability map is 2-D, not {values.shape}")
    binary = Image.fromarray(((values > settings.threshold) * 255).astype(np.uint8), "L")
    return soften(binary.resize(size, Image.Resampling.NEAREST), settings)


def soften(binary: Image.Image, settings: EditSettings) -> Image.Image:
    """``binary`` (L) grown by ``grow`` and feathered by ``feather`` (shares of the short side)."""
    short = min(binary.size)
    grow = round(short * settings.grow)
    feather = round(short * settings.feather)
    mask = binary.point(lambda v: 255 if v >= 128 else 0)
    reach = grow + feather // 2  # the blur's mid-point lands here: full strength up to about `grow`
    if reach > 0:
        mask = Image.fromarray(_dilate(np.asarray(mask) > 0, reach), "L")
    if feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(feather / 2))
    # below 1/32 it changes nothing visible: those pixels are kept exactly
    return mask.point(lambda v: 0 if v < 8 else v)


def _dilate(region: Any, radius: int) -> Any:
    """``region`` (bool, 2-D) grown by ``radius`` pixels (a square), as uint8 0/255; O(pixels)
    whatever the radius (a summed-area table), where PIL's MaxFilter is O(radius²) per pixel."""
    size = 2 * radius + 1
    padded = np.pad(region.astype(np.int32), radius)
    table = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int32)
    np.cumsum(np.cumsum(padded, axis=0), axis=1, out=table[1:, 1:])
    sums = table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    return ((sums > 0) * 255).astype(np.uint8)


def mask_from_image(mask: Image.Image, size: tuple[int, int], convention: str, *, invert: bool = False,
                    blur: int = 0) -> Image.Image:
    """A drawn mask as L (255 = repaint) at ``size``.

    ``convention``: "alpha" (OpenAI: the fully transparent pixels are the area to edit; a mask
    without transparency is refused by the caller's coverage check) or "white" (A1111 and the
    studio: white is the area to edit). ``invert`` swaps the areas; ``blur`` (pixels) softens the edge.
    """
    if convention == "alpha":
        alpha = mask.convert("RGBA").getchannel("A")
        drawn = alpha.point(lambda v: 255 if v == 0 else 0)
    elif convention == "white":
        drawn = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    else:
        raise ValueError(f"unknown mask convention {convention!r}")
    if invert:
        drawn = drawn.point(lambda v: 255 - v)
    drawn = drawn.resize(size, Image.Resampling.NEAREST)
    if blur > 0:
        drawn = drawn.filter(ImageFilter.GaussianBlur(blur / 2)).point(lambda v: 0 if v < 8 else v)
    return drawn


def coverage(mask: Image.Image) -> float:
    """The share of pixels the mask repaints at all (0..1)."""
    values = np.asarray(mask.convert("L"))
    return float((values > 0).mean()) if values.size else 0.0


def coverage_problem(share: float, settings: EditSettings, what: str | None = None) -> str | None:
    """What to tell the user about a mask covering ``share`` of the picture, or None when it is usable."""
    named = f"“{what}”" if what else "The mask"
    if share < settings.min_coverage:
        found = f"Nothing matching {named} was found in the image" if what else "The mask covers nothing"
        return (f"{found} (the mask covers {share:.1%} of it), so nothing was changed and nothing was "
                "charged. Name something you can see in the picture, in a few words (e.g. “the cat”).")
    if share > settings.max_coverage:
        return (f"{named} covers {share:.0%} of the image: nearly everything, so nothing was changed and "
                "nothing was charged. Name a smaller part, or make a new image with /imagine.")
    return None


def pack(image: Image.Image, mask: Image.Image) -> Image.Image:
    """``image`` (RGB) with ``mask`` (L, 255 = repaint) as its alpha: 0 (transparent) where repainted."""
    rgba = image.convert("RGB").convert("RGBA")
    rgba.putalpha(mask.convert("L").resize(image.size, Image.Resampling.NEAREST).point(lambda v: 255 - v))
    return rgba


def unpack(stored: Image.Image) -> tuple[Image.Image, Image.Image]:
    """(image RGB, mask L with 255 = repaint) of a :func:`pack` ed input."""
    rgba = stored.convert("RGBA")
    return rgba.convert("RGB"), rgba.getchannel("A").point(lambda v: 255 - v)


def composite_edit(original: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """``generated`` (resized to the original's size) inside the mask, ``original`` outside it, blended
    by the mask's softness; where the mask is 0 the original pixels come back exactly."""
    size = original.size
    made = generated.convert("RGB")
    if made.size != size:
        made = made.resize(size, Image.Resampling.LANCZOS)
    return Image.composite(made, original.convert("RGB"), mask.convert("L").resize(size, Image.Resampling.BILINEAR))


def overlay(image: Image.Image, mask: Image.Image, max_side: int = 320) -> Image.Image:
    """A small copy of ``image`` with the masked region tinted red and outlined (RGB)."""
    small = image.convert("RGB")
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    region = mask.convert("L").resize(small.size, Image.Resampling.BILINEAR)
    red = Image.new("RGB", small.size, (230, 40, 40))
    tinted = Image.composite(red, small, region.point(lambda v: v * 55 // 100))
    edge = region.point(lambda v: 255 if v >= 128 else 0)
    outline = Image.fromarray(
        (np.asarray(edge.filter(ImageFilter.MaxFilter(3))) - np.asarray(edge.filter(ImageFilter.MinFilter(3))))
        .astype(np.uint8), "L")
    return Image.composite(Image.new("RGB", small.size, (255, 255, 255)), tinted, outline)
