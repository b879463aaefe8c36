"""Zoom out and pan (issue 23, item 3): the canvas grows or shifts, the original pixels stay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generation.core.batch import Batch, BatchItem
from generation.core.request import nearest_bucket
from generation.tools.outpaint import canvas_ratio, outpaint_canvas
from tests.test_upscale import source_image


@pytest.mark.parametrize(("kind", "mode", "kept_box"), [
    ("zoom", "2", (64, 64, 192, 192)),
    ("zoom", "1.5", (43, 43, 213, 213)),
])
def test_canvas_mask_and_kept_region(kind: str, mode: str, kept_box: tuple[int, int, int, int]) -> None:
    image = source_image(256, 256)
    canvas, mask, keep = outpaint_canvas(image, kind, mode, (256, 256))
    assert canvas.size == mask.size == (256, 256)
    m = np.asarray(mask)
    x0, y0, x1, y1 = kept_box
    assert m[0, 0] == 255 and m[(y0 + y1) // 2, (x0 + x1) // 2] == 0  # the border is made, the centre kept
    assert np.asarray(keep)[(y0 + y1) // 2, (x0 + x1) // 2] == 255


def test_pan_extends_the_side_panned_to() -> None:
    image = source_image(256, 256)
    assert canvas_ratio("pan", "left", 256, 256) == (384.0, 256.0)
    size = nearest_bucket(384, 256, 256)
    canvas, mask, _ = outpaint_canvas(image, "pan", "left", size)
    m = np.asarray(mask)
    assert m[:, 0].min() == 255 and m[:, -1].max() == 0  # new pixels on the left, the original on the right
    _, mask, _ = outpaint_canvas(image, "pan", "down", nearest_bucket(256, 384, 256))
    assert np.asarray(mask)[-1].min() == 255 and np.asarray(mask)[0].max() == 0


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "mode"), [("zoom", "2"), ("pan", "right")])
def test_tiny_pipeline_keeps_the_original_pixels(tmp_path: Path, tiny, kind: str, mode: str) -> None:
    image = source_image(256, 256)
    init = tmp_path / "source.png"
    image.save(init)
    size = nearest_bucket(*canvas_ratio(kind, mode, 256, 256), 256)
    batch = Batch(kind, size[0], size[1], 4, (BatchItem("a harbour", "", 3, str(init), mode=mode),), strength=1.0)
    (out,) = tiny.generate(batch)
    assert out.size == size
    canvas, mask, keep = outpaint_canvas(image, kind, mode, size)
    kept = np.asarray(keep) == 255
    got = np.asarray(out, dtype=float)[kept]
    want = np.asarray(canvas, dtype=float)[kept]
    assert kept.sum() > 0.1 * size[0] * size[1]
    assert np.abs(got - want).max() <= 3  # the original (resized to the canvas), within rounding
    made = np.asarray(mask) == 255
    assert np.abs(np.asarray(out, dtype=float)[made] - np.asarray(canvas, dtype=float)[made]).mean() > 5
