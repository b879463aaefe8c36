"""Upscale 2x: an upscaler network (or Lanczos) enlarges, then a tiled img2img pass restores detail.

    enlarge     :class:`NetworkUpscaler` (weights loaded with spandrel when it is installed, or the
                compact Real-ESRGAN network, SRVGGNetCompact, read here from its state dict) or
                :class:`LanczosUpscaler` when ``upscale.model`` is not set; both give exactly 2x
    refine      :func:`refine_tiled` cuts the enlarged image into overlapping tiles of the model's
                own size, runs each through img2img at a low (subtle) or higher (creative)
                strength, and blends them back with linear ramps across the overlaps, so no tile
                border shows; each tile is one bounded pipeline call, decoded on its own

Memory stays bounded at 2048² and beyond: the network runs on tiles too (:func:`tile_boxes`), and
the diffusion pass never sees more than one tile.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import nn

from generation.core.errors import ModelUnavailable

__all__ = [
    "LanczosUpscaler",
    "NetworkUpscaler",
    "SRVGGNetCompact",
    "Upscaler",
    "blend_weights",
    "enlarge_each",
    "load_upscaler",
    "refine_tiled",
    "tile_boxes",
    "tile_count",
    "with_upscaler",
]

logger = logging.getLogger(__name__)

FACTOR = 2  # every upscale doubles width and height


class Upscaler(Protocol):
    name: str

    def enlarge(self, image: Image.Image) -> Image.Image:
        """``image`` at exactly twice its width and height."""
        ...


class LanczosUpscaler:
    """The fallback when no upscaler model is configured: Lanczos resampling."""

    name = "lanczos"

    def enlarge(self, image: Image.Image) -> Image.Image:
        return image.resize((image.width * FACTOR, image.height * FACTOR), Image.Resampling.LANCZOS)


class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's compact network (realesr-general-x4v3, realesr-animevideov3): convolutions with
    PReLU, a pixel shuffle, and the nearest-neighbour upsampled input added back."""

    def __init__(self, num_feat: int = 64, num_conv: int = 16, upscale: int = 4) -> None:
        super().__init__()
        self.upscale = upscale
        body: list[nn.Module] = [nn.Conv2d(3, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            body += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        body.append(nn.Conv2d(num_feat, 3 * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(body)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + nn.functional.interpolate(x, scale_factor=self.upscale, mode="nearest")

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> SRVGGNetCompact:
        """The network whose weights ``state`` holds (its sizes read from the tensors)."""
        convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("body.") and k.endswith(".bias"))
        if not convs or "body.0.weight" not in state:
            raise KeyError("not an SRVGGNetCompact state dict")
        num_feat = state["body.0.weight"].shape[0]
        out_channels = state[f"body.{convs[-1]}.weight"].shape[0]
        upscale = math.isqrt(out_channels // 3)
        network = cls(num_feat=num_feat, num_conv=len(convs) - 2, upscale=upscale)
        network.load_state_dict(state)
        return network


class NetworkUpscaler:
    """An upscaler network run on overlapping tiles; its output resized to exactly 2x if its own
    scale differs (a 4x model is run, then brought down with Lanczos)."""

    def __init__(self, network: nn.Module, scale: int, *, name: str = "network", device: str | torch.device = "cpu",
                 tile: int = 256, overlap: int = 16) -> None:
        self.network = network.eval().to(device)
        self.scale = scale
        self.name = name
        self.device = torch.device(device)
        self.tile, self.overlap = tile, overlap

    @torch.inference_mode()
    def enlarge(self, image: Image.Image) -> Image.Image:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        height, width = pixels.shape[1:]
        s = self.scale
        out = torch.zeros(3, height * s, width * s)
        weight = torch.zeros(1, height * s, width * s)
        for box in tile_boxes(width, height, self.tile, self.overlap):
            x0, y0, x1, y1 = box
            part = pixels[:, y0:y1, x0:x1].unsqueeze(0).to(self.device, next(self.network.parameters()).dtype)
            result = self.network(part)[0].float().cpu()
            ramp = torch.from_numpy(blend_weights(box, width, height, self.overlap, scale=s))[None]
            out[:, y0 * s:y1 * s, x0 * s:x1 * s] += result * ramp
            weight[:, y0 * s:y1 * s, x0 * s:x1 * s] += ramp
        array = (out / weight).clamp(0, 1).permute(1, 2, 0).numpy()
        enlarged = Image.fromarray((array * 255 + 0.5).astype(np.uint8))
        size = (width * FACTOR, height * FACTOR)
        return enlarged if enlarged.size == size else enlarged.resize(size, Image.Resampling.LANCZOS)


def load_upscaler(path: str | Path | None, device: str | torch.device = "cpu") -> Upscaler:
    """The upscaler in ``path`` (a .pth or .safetensors file); Lanczos when ``path`` is None.

    spandrel loads any architecture it knows (ESRGAN, Real-ESRGAN, SwinIR, …) when installed;
    without it, the compact Real-ESRGAN network is read here. Raises ModelUnavailable saying what
    to do when the file is missing or holds a network neither knows.
    """
    if path is None:
        return LanczosUpscaler()
    file = Path(path)
    if not file.is_file():
        raise ModelUnavailable(f"upscale.model: there is no file {file}; run `imagine-bot download` or fix the path.")
    try:
        from spandrel import ImageModelDescriptor, ModelLoader
    except ImportError:  # spandrel (and its torchvision) not installed: the compact network only
        pass
    else:
        descriptor = ModelLoader(device=torch.device(device)).load_from_file(str(file))
        if not isinstance(descriptor, ImageModelDescriptor):
            raise ModelUnavailable(f"upscale.model: {file.name} is not an image upscaler.")
        logger.info("upscaler %s (%s, %dx) loaded with spandrel", file.name, descriptor.architecture.name,
                    descriptor.scale)
        return NetworkUpscaler(descriptor.model, descriptor.scale, name=file.stem, device=device)
    state = _read_state_dict(file)
    try:
        network = SRVGGNetCompact.from_state_dict(state)
    except (KeyError, RuntimeError) as err:
        raise ModelUnavailable(
            f"upscale.model: {file.name} is not a compact Real-ESRGAN network ({err}); install spandrel "
            "(pip install spandrel) to load other upscalers.") from None
    logger.info("upscaler %s (SRVGGNetCompact, %dx) loaded", file.name, network.upscale)
    return NetworkUpscaler(network, network.upscale, name=file.stem, device=device)


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    state = torch.load(file, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params", "state_dict"):  # how Real-ESRGAN releases wrap the weights
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def enlarge_each(upscaler: Upscaler, sources: list[Image.Image],
                 on_step: Callable[[int, int], None] | None = None) -> list[Image.Image]:
    """Each picture enlarged 2x by ``upscaler`` alone (an ``enlarge`` batch: no diffusion pass);
    ``on_step(n, total)`` after each."""
    results = []
    for number, source in enumerate(sources, start=1):
        results.append(upscaler.enlarge(source))
        if on_step is not None:
            on_step(number, len(sources))
    return results


def with_upscaler(model: Any, *, loader: Callable[[Any], Any], path: str | None) -> Any:
    """``loader(model)`` with the upscaler of ``path`` on its ``upscaler`` (module-level: picklable for Ray)."""
    pipeline = loader(model)
    pipeline.upscaler = load_upscaler(path, device=getattr(pipeline, "device", "cpu"))
    return pipeline


# -- tiles ---------------------------------------------------------------------------------------


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - overlap) / stride)
    # spread the tiles evenly so every overlap is at least ``overlap`` and the last ends at the edge
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_boxes(width: int, height: int, tile: int, overlap: int, *, multiple: int = 1) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of overlapping tiles of at most ``tile`` px covering width x height.

    ``multiple``: starts are rounded down to it (8 keeps latents aligned).
    """
    if overlap * 2 > tile:
        raise ValueError(f"`overlap` must be at most half the tile, not {overlap} of {tile}")
    xs = [x - x % multiple for x in _starts(width, tile, overlap)]
    ys = [y - y % multiple for y in _starts(height, tile, overlap)]
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def blend_weights(box: tuple[int, int, int, int], width: int, height: int, overlap: int, *,
                  scale: int = 1) -> np.ndarray:
    """A tile's blending weights (h x w, > 0): linear ramps over ``overlap`` px on each side that
    borders another tile, 1 elsewhere and at the image's own edges (``scale``: for output
    ``scale`` times the box)."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) * scale, (y1 - y0) * scale
    ramp = max(1, overlap * scale)

    def axis(n: int, at_start: bool, at_end: bool) -> np.ndarray:
        values = np.ones(n, dtype=np.float32)
        rise = (np.arange(min(ramp, n), dtype=np.float32) + 1) / (ramp + 1)
        if not at_start:
            values[:len(rise)] = np.minimum(values[:len(rise)], rise)
        if not at_end:
            values[n - len(rise):] = np.minimum(values[n - len(rise):], rise[::-1])
        return values

    across = axis(w, x0 == 0, x1 == width)
    down = axis(h, y0 == 0, y1 == height)
    return np.outer(down, across)


def refine_tiled(run: Callable[[Image.Image, int], Image.Image], image: Image.Image, tile: int,
                 overlap: int) -> Image.Image:
    """``image`` with each overlapping tile replaced by ``run(tile_image, tile_index)``, blended."""
    width, height = image.size
    total = np.zeros((height, width, 3), dtype=np.float64)
    weight = np.zeros((height, width, 1), dtype=np.float64)
    for index, box in enumerate(tile_boxes(width, height, tile, overlap, multiple=8)):
        x0, y0, x1, y1 = box
        out = run(image.crop(box), index)
        if out.size != (x1 - x0, y1 - y0):
            out = out.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS)
        ramp = blend_weights(box, width, height, overlap)[..., None]
        total[y0:y1, x0:x1] += np.asarray(out.convert("RGB"), dtype=np.float64) * ramp
        weight[y0:y1, x0:x1] += ramp
    return Image.fromarray(np.clip(total / weight + 0.5, 0, 255).astype(np.uint8))


def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`refine_tiled` runs for an image of width x height."""
    return len(tile_boxes(width, height, tile, overlap, multiple=8))
