"""Upscale for real (issue 23, item 2): exactly 2x, a tiny upscaler network or Lanczos, tiles without seams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generation.core.batch import Batch, BatchItem
from generation.core.errors import InvalidRequest, ModelUnavailable
from generation.core.request import GenerationRequest, ModelCaps
from generation.tools.upscale import (
    LanczosUpscaler,
    NetworkUpscaler,
    SRVGGNetCompact,
    blend_weights,
    load_upscaler,
    refine_tiled,
    tile_boxes,
)
from tests.upload_support import photo


def source_image(width: int = 128, height: int = 96) -> Image.Image:
    import io
    return Image.open(io.BytesIO(photo(width, height))).convert("RGB")


def tiny_srvgg(tmp_path: Path, upscale: int = 4, suffix: str = ".pth") -> Path:
    """A small random compact Real-ESRGAN network saved as a release file would be."""
    torch.manual_seed(0)
    network = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=upscale)
    path = tmp_path / f"tiny-x{upscale}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(network.state_dict(), str(path))
    else:
        torch.save({"params": network.state_dict()}, path)  # Real-ESRGAN wraps the weights so
    return path


@pytest.mark.parametrize(("upscale", "suffix"), [(4, ".pth"), (2, ".safetensors")])
def test_tiny_upscaler_network_gives_exactly_twice_the_pixels(tmp_path: Path, upscale: int, suffix: str) -> None:
    upscaler = load_upscaler(tiny_srvgg(tmp_path, upscale, suffix))
    assert isinstance(upscaler, NetworkUpscaler) and upscaler.scale == upscale
    small = source_image(300, 200)  # larger than one 256 px network tile: tiles are blended
    big = upscaler.enlarge(small)
    assert big.size == (600, 400)
    # the network's own output (not Lanczos of the input): it differs from the fallback
    lanczos = np.asarray(LanczosUpscaler().enlarge(small), dtype=float)
    assert np.abs(np.asarray(big, dtype=float) - lanczos).mean() > 1


def test_network_tiles_match_a_whole_run(tmp_path: Path) -> None:
    path = tiny_srvgg(tmp_path, 2, ".safetensors")
    small = source_image(300, 200)
    tiled = NetworkUpscaler(load_upscaler(path).network, 2, tile=128, overlap=16).enlarge(small)
    whole = NetworkUpscaler(load_upscaler(path).network, 2, tile=1024, overlap=16).enlarge(small)
    diff = np.abs(np.asarray(tiled, dtype=float) - np.asarray(whole, dtype=float))
    assert diff.mean() < 2  # only the overlaps' borders differ, and only a little


def test_lanczos_fallback_and_bad_files(tmp_path: Path) -> None:
    assert load_upscaler(None).enlarge(source_image(100, 60)).size == (200, 120)
    with pytest.raises(ModelUnavailable, match="no file"):
        load_upscaler(tmp_path / "missing.pth")
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ModelUnavailable, match="compact Real-ESRGAN"):
        load_upscaler(other)


def test_tiles_cover_the_image_with_overlaps() -> None:
    boxes = tile_boxes(512, 320, 256, 32, multiple=8)
    covered = np.zeros((320, 512), dtype=int)
    for x0, y0, x1, y1 in boxes:
        assert x1 - x0 == 256 and y1 - y0 == 256 and x0 % 8 == 0 and y0 % 8 == 0
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    assert tile_boxes(200, 100, 256, 32) == [(0, 0, 200, 100)]
    for box in boxes:
        assert blend_weights(box, 512, 320, 32).min() > 0


def test_blending_hides_the_tile_borders() -> None:
    image = Image.new("RGB", (512, 256), (100, 100, 100))

    def offset(part: Image.Image, index: int) -> Image.Image:  # each tile comes back a bit different
        return Image.new("RGB", part.size, (100 + 40 * index,) * 3)

    blended = np.asarray(refine_tiled(offset, image, 256, 32), dtype=float)[..., 0]
    jumps = np.abs(np.diff(blended, axis=1))
    assert jumps.max() <= 40 / 32 + 1  # a ramp, never the 40-level step a hard cut leaves
    hard = np.asarray(refine_tiled(offset, image, 256, 1), dtype=float)[..., 0]
    assert np.abs(np.diff(hard, axis=1)).max() >= 19  # the control: without overlap the seam shows


# -- through the tiny pipeline ---------------------------------------------------------------------


def upscale_request(init: Path, *, mode: str = "subtle", strength: float = 0.3, size: tuple[int, int] = (256, 256),
                    steps: int = 4) -> GenerationRequest:
    return GenerationRequest(prompt="a harbour", width=size[0] * 2, height=size[1] * 2, steps=steps, seed=5,
                             kind="upscale", init_image=str(init), strength=strength, source="abc#1", mode=mode)


def test_upscale_request_shape_and_checks(tmp_path: Path) -> None:
    r = upscale_request(tmp_path / "x.png", size=(336, 192))
    assert r.shape == ("upscale", 672, 384, 4, 0.3)
    caps = ModelCaps(base_resolution=256, steps=(4,))
    assert caps.check(r) is r  # twice a bucket is fine for an upscale
    with pytest.raises(InvalidRequest, match="not a supported size"):
        caps.check(GenerationRequest(prompt="x", width=672, height=384))
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(prompt="x", kind="upscale", init_image=str(tmp_path / "x.png"), source="a#1", mode="wild")
    assert info.value.field == "source"


@pytest.mark.slow
def test_tiny_pipeline_upscales_exactly_2x_without_seams(tmp_path: Path, tiny) -> None:
    init = tmp_path / "source.png"
    source_image(256, 256).save(init)
    batch = Batch("upscale", 512, 512, 4, (BatchItem("a harbour", "", 5, str(init)),), strength=0.5)
    steps: list[tuple[int, int]] = []
    (tiled,) = tiny.generate(batch, on_step=lambda s, t: steps.append((s, t)))
    assert tiled.size == (512, 512)
    tile = tiny.caps.base_resolution
    tiles = len(tile_boxes(512, 512, tile, tile // 8, multiple=8))
    assert tiles > 1 and steps[-1] == (tiles * 2, tiles * 2)  # every tile runs int(4 * 0.5) steps
    # one tile covering the whole canvas: the same pass without borders
    try:
        tiny.upscale_tile = 512
        (whole,) = tiny.generate(batch)
    finally:
        tiny.upscale_tile = None
    ours = np.asarray(tiled, dtype=float).mean(axis=2)
    one = np.asarray(whole, dtype=float).mean(axis=2)
    boxes = tile_boxes(512, 512, tile, tile // 8, multiple=8)
    borders = sorted({x for x0, _, x1, _ in boxes for x in (x0, x1) if 0 < x < 512})
    seam = np.mean([np.abs(ours[:, x] - ours[:, x - 1]).mean() for x in borders])
    typical = np.abs(np.diff(one, axis=1)).mean()
    assert seam <= 1.5 * typical + 2, (seam, typical)


def test_config_names_the_upscaler_the_workers_load(tmp_path: Path) -> None:
    import functools

    from bot.config import load_config
    from generation.model.pipeline import ModelConfig, load_pipeline
    from generation.tools.upscale import with_upscaler

    network = tiny_srvgg(tmp_path, 2, ".safetensors")
    (tmp_path / "c.toml").write_text(f'[upscale]\nmodel = "{network}"\nsubtle = 0.25\n[quota]\nupscale_cost = 3\n')
    config = load_config(tmp_path / "c.toml")
    assert config.upscale.model_path(tmp_path) == network and config.quota.upscale_cost == 3
    assert config.upscale.subtle == 0.25
    loader = functools.partial(with_upscaler, loader=load_pipeline, path=str(config.upscale.model_path(tmp_path)))
    pipeline = loader(ModelConfig(name="tiny", device="cpu"))
    assert isinstance(pipeline.upscaler, NetworkUpscaler) and pipeline.upscaler.scale == 2
    (tmp_path / "bad.toml").write_text("[upscale]\ncreative = 3\n")
    with pytest.raises(Exception, match="upscale.creative"):
        load_config(tmp_path / "bad.toml")


def test_an_enlarge_request_is_twice_any_picture_and_only_that() -> None:
    """kind "enlarge" (A1111's extra-single-image): any size within the limits, not a bucket;
    every other kind still needs one of the model's sizes."""
    caps = ModelCaps()
    enlarge = GenerationRequest("high quality, detailed", width=192, height=112, kind="enlarge",
                                init_image="/pending-upload", strength=1.0)
    assert caps.check(enlarge) == enlarge
    with pytest.raises(InvalidRequest, match="not a supported size"):
        caps.check(GenerationRequest("x", width=192, height=112, kind="img2img", init_image="/p", strength=0.5))
    with pytest.raises(InvalidRequest, match="Width"):
        GenerationRequest("x", width=4112, height=112, kind="enlarge", init_image="/p", strength=1.0)
    again = GenerationRequest.from_dict(enlarge.to_dict())  # as a restart reads it back
    assert again.kind == "enlarge" and (again.width, again.height) == (192, 112)
