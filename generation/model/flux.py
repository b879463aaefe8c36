"""FLUX.1-schnell (and the tiny random Flux) as an ImagePipeline: text to image, 1-4 steps, no guidance.

What differs from SDXL-Lightning, and is checked at request time by its :class:`ModelCaps`
(``family="flux"``): its own aspect buckets (multiples of 16), no negative prompt, no LoRAs, no
img2img/upscale/zoom/pan. The prompt goes through CLIP (pooled) and T5 (up to 256 tokens);
A1111 weights such as ``(word:1.3)`` are taken out, the words kept (Flux has no weighting).
One CPU generator per image, so a seed gives the same image alone or in any batch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import torch

from generation.core.batch import Batch, BatchInterrupted, StepCallback
from generation.core.errors import InvalidRequest
from generation.core.request import ModelCaps
from generation.core.weighting import parse_weighted
from generation.model.model_config import ModelConfig

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["FLUX_MAX_SEQUENCE", "FLUX_STEPS", "FluxRunner", "flux_caps", "load_flux"]

logger = logging.getLogger(__name__)

FLUX_STEPS = (1, 2, 4)  # schnell is distilled for 1-4 steps; 4 is its card's default
FLUX_MAX_SEQUENCE = 256


def flux_caps(config: ModelConfig, name: str | None = None) -> ModelCaps:
    """What a Flux model of ``config`` accepts (known before loading it)."""
    from generation.model.tiny import TINY_BASE_RESOLUTION

    steps = tuple(s for s in FLUX_STEPS if s in config.steps) if config.steps != (4,) else FLUX_STEPS
    base = TINY_BASE_RESOLUTION if config.name == "tiny-flux" else 1024
    return ModelCaps(name=name or config.name, base_resolution=base, steps=steps or FLUX_STEPS, family="flux",
                     kinds=("txt2img",), negative_prompt=False, default_step=4)


class FluxRunner:
    """A diffusers FluxPipeline that runs one Batch per call."""

    def __init__(self, pipe: Any, *, model_id: str, caps: ModelCaps, max_sequence_length: int = FLUX_MAX_SEQUENCE,
                 checkpoint_hash: str | None = None) -> None:
        self.pipe = pipe
        self.model_id = model_id
        self.caps = caps
        self.max_sequence_length = max_sequence_length
        self.checkpoint_hash = checkpoint_hash
        pipe.set_progress_bar_config(disable=True)

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    def generate(self, batch: Batch, on_step: StepCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[Image]:
        """One image per item, in order; raises BatchInterrupted when asked to stop."""
        # 1. Check the batch against what Flux can do
        if not batch.items:
            return []
        if batch.kind != "txt2img":
            raise InvalidRequest("model", f"The model {self.caps.name} makes images from text only, not {batch.kind}.")
        if batch.steps not in self.caps.steps:
            raise InvalidRequest("steps", f"The model {self.caps.name} runs {', '.join(map(str, self.caps.steps))} "
                                          f"steps, not {batch.steps}.")
        if batch.width % 16 or batch.height % 16:
            raise InvalidRequest("size", f"`height` and `width` have to be divisible by 16 but are "
                                         f"{batch.height} and {batch.width}.")
        # 2. Plain prompts (weights taken out), one CPU generator per image
        prompts = ["".join(f.text for f in parse_weighted(item.prompt)) for item in batch.items]
        generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch.items]
        total = batch.steps

        def step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(i + 1, total)
            if should_stop is not None and i + 1 < total and should_stop():
                raise BatchInterrupted(f"stopped after step {i + 1} of {total}")
            return {}

        # 3. One pipeline call for the batch (guidance 0: schnell is distilled without it)
        with torch.inference_mode():
            out = self.pipe(prompt=prompts, num_inference_steps=batch.steps, guidance_scale=0.0,
                            width=batch.width, height=batch.height, max_sequence_length=self.max_sequence_length,
                            generator=generators, callback_on_step_end=step_end, output_type="pil")
        return list(out.images)


def load_flux(config: ModelConfig, device: torch.device, dtype: torch.dtype, name: str | None = None) -> FluxRunner:
    """The Flux model ``config`` names: the tiny random one, or FLUX.1-schnell from model.path or the Hub."""
    caps = flux_caps(config, name)
    if config.name == "tiny-flux":
        from generation.model.tiny_flux import TINY_FLUX_ID, TINY_FLUX_MAX_SEQUENCE, build_tiny_flux_pipeline

        pipe = build_tiny_flux_pipeline()
        pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
        return FluxRunner(pipe, model_id=TINY_FLUX_ID, caps=caps, max_sequence_length=TINY_FLUX_MAX_SEQUENCE,
                          checkpoint_hash=weights_hash(pipe.transformer))
    from generation.model.loader import load_pretrained

    pipe, model_id, checkpoint = load_pretrained("FluxPipeline", config, dtype, "transformer")
    logger.info("loaded %s (Flux, %s steps) on %s as %s", model_id, ",".join(map(str, caps.steps)), device, dtype)
    return FluxRunner(pipe.to(device), model_id=model_id, caps=caps, checkpoint_hash=checkpoint)


def weights_hash(module: Any) -> str:
    """SHA-256 over a module's weights in name order: the version of a model built in-process."""
    import hashlib

    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
