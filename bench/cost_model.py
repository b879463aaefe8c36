"""A cost model of one GPU running SDXL(-Lightning) batches, for the simulated executors.

One pipeline call of ``n`` images of ``width x height`` with ``steps`` denoising steps takes

    seconds = c + steps * (a + b * n * px) + v * n * px        px = width * height / 1024²

- ``a``: the fixed part of one UNet step (weights read, kernel launches), whatever the batch;
- ``b``: each image's share of a UNet step at 1024² (compute), scaled by its pixels;
- ``v``: one VAE decode at 1024² per image (scaled by pixels);
- ``c``: the rest of one call (both text encoders, latents set-up, scheduler, output).

Calibration, when no GPU run of ``bench/gpu_bench.py`` exists: a least-squares fit (relative
error) to four published figures of SDXL on an NVIDIA A100 with fp16/bf16 weights and PyTorch's
SDPA attention, eager (:data:`PUBLISHED`). Classifier-free guidance doubles the UNet batch in
the SDXL base figures; SDXL-Lightning runs without it, so there ``n`` is the image count. ``v``
is tied to ``b`` by FLOPs: the VAE decode of a 1024² image counts 10.47 TFLOP against 6.76 for
one UNet step (``gpu_bench.flops_per_image()``, FlopCounterMode on the meta device), so
``v = VAE_PER_UNET_STEP * b``. With a GPU run, :meth:`CostModel.from_gpu_bench` fits its
measured batches instead. ``docs/queue-bench.md`` lists the figures and the fit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["PUBLISHED", "VAE_PER_UNET_STEP", "CostModel", "Figure", "fit_published"]

VAE_PER_UNET_STEP = 10.470 / 6.761  # FLOPs of one 1024² VAE decode / one 1024² UNet step


@dataclass(frozen=True)
class Figure:
    """One published timing: ``seconds`` for ``images`` images of ``size``² with ``steps`` steps,
    the UNet running ``unet_batch`` samples per step (2 x images with guidance). ``unet_only``:
    the figure times one UNet step alone."""

    name: str
    source: str
    setup: str
    size: int
    steps: int
    images: int
    unet_batch: int
    seconds: float
    unet_only: bool = False


PUBLISHED: tuple[Figure, ...] = (
    Figure("sdxl-turbo-unet", "https://stability.ai/news/stability-ai-sdxl-turbo",
           "SDXL-Turbo, A100, fp16: one UNet forward at 512x512, batch 1", 512, 1, 1, 1, 0.067, unet_only=True),
    Figure("sdxl-turbo-image", "https://stability.ai/news/stability-ai-sdxl-turbo",
           "SDXL-Turbo, A100, fp16: one 512x512 image, 1 step (prompt encoding + step + decode)",
           512, 1, 1, 1, 0.207),
    Figure("sdxl-bf16-sdpa", "https://huggingface.co/docs/diffusers/tutorials/fast_diffusion",
           "SDXL base, A100 80GB, bf16 + SDPA, eager: one 1024² image, 30 steps, guidance on", 1024, 30, 1, 2, 3.31),
    Figure("sdxl-fp16-sdpa-4", "https://huggingface.co/blog/simple_sdxl_optimizations",
           "SDXL base, A100 40GB, fp16 + SDPA: 4 images at 1024², 50 steps, guidance on", 1024, 50, 4, 8, 11.4),
)


@dataclass(frozen=True)
class CostModel:
    """Seconds per pipeline call (see the module docstring); ``source`` says where it comes from."""

    a: float
    b: float
    c: float
    v: float
    source: str = "published"

    def batch_seconds(self, width: int, height: int, steps: int, images: int) -> float:
        """One pipeline call of ``images`` images of ``width x height`` with ``steps`` steps."""
        if images < 1 or steps < 1:
            raise ValueError(f"a batch needs at least one image and one step, not {images} and {steps}")
        px = width * height / 1024**2
        return self.c + steps * (self.a + self.b * images * px) + self.v * images * px

    def images_per_second(self, width: int, height: int, steps: int, images: int) -> float:
        return images / self.batch_seconds(width, height, steps, images)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def published(cls) -> CostModel:
        """The fit to :data:`PUBLISHED` (A100, eager fp16/bf16 + SDPA)."""
        return fit_published()[0]

    @classmethod
    def from_gpu_bench(cls, path: str | Path) -> CostModel:
        """Fit ``bench/gpu_bench.py``'s measured batches ("ours" mode) on one GPU.

        Its rows share one size and step count, so they give a line ``seconds = I + S * n``:
        ``S = b * steps * px + v * px`` with ``v`` tied to ``b`` by FLOPs, and ``I = c + steps * a``
        split between ``c`` and ``a`` as in the published fit.
        """
        data = json.loads(Path(path).read_text())
        rows = data["modes"]["ours"]
        if len(rows) < 2:
            raise ValueError(f"{path}: the fit needs at least two batch sizes, found {len(rows)}")
        width, height = data["resolution"]
        steps = int(data["steps"])
        flops = data.get("flops_per_1024_image") or {}
        ratio = flops["vae_decode"] / flops["unet_step"] if flops else VAE_PER_UNET_STEP
        intercept, slope = _line([(float(r["batch"]), float(r["seconds_per_batch"])) for r in rows])
        px = width * height / 1024**2
        b = slope / (px * (steps + ratio))
        ref = cls.published()
        share_c = ref.c / (ref.c + steps * ref.a)
        c = max(intercept, 0.0) * share_c
        a = max(intercept, 0.0) * (1 - share_c) / steps
        return cls(a=a, b=b, c=c, v=ratio * b, source=f"gpu_bench: {data.get('device', path)}")


def fit_published(figures: Iterable[Figure] = PUBLISHED) -> tuple[CostModel, list[dict[str, Any]]]:
    """Least squares on relative error over ``figures``; the model and each figure's residual."""
    import numpy as np

    figures = list(figures)
    rows, targets = [], []
    for f in figures:
        px = f.size**2 / 1024**2
        # unknowns (a, b, c); the VAE term is VAE_PER_UNET_STEP * b * images * px
        if f.unet_only:
            rows.append([f.steps, f.steps * f.unet_batch * px, 0.0])
        else:
            rows.append([f.steps, f.steps * f.unet_batch * px + VAE_PER_UNET_STEP * f.images * px, 1.0])
        targets.append(f.seconds)
    matrix, y = np.array(rows), np.array(targets)
    weights = 1 / y
    (a, b, c), *_ = np.linalg.lstsq(matrix * weights[:, None], y * weights, rcond=None)
    model = CostModel(a=float(a), b=float(b), c=float(c), v=float(VAE_PER_UNET_STEP * b))
    predicted = matrix @ np.array([a, b, c])
    residuals = [
        {"figure": f.name, "published_s": f.seconds, "model_s": round(float(p), 4),
         "error": round(float((p - f.seconds) / f.seconds), 4)}
        for f, p in zip(figures, predicted)
    ]
    return model, residuals


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - slope * mx, slope
