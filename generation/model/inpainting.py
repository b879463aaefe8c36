"""The inpainting pass of zoom out, pan and edit: a region repainted, everything else kept.

    zoom / pan   generation.tools.outpaint: a larger or shifted canvas, its new border repainted
    edit         generation.tools.masks: the item's stored input is the image with the region to
                 repaint in its alpha channel; the pass runs at the batch's size (a bucket) and the
                 result is laid over the original at the original's size, so an upscaled image
                 stays upscaled and every pixel outside the mask comes back exactly

One pipeline call for the batch (one per prompt length), one CPU generator per item, then the
composite. :class:`~generation.model.pipeline.LightningPipeline` puts the UNet, scheduler and
LoRA set in place first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import torch

from generation.core.batch import Batch, ItemsRejected
from generation.core.errors import GenerationFailed
from generation.model.prompting import encode_prompts
from generation.model.speed import decode_latents
from generation.tools.masks import composite_edit, unpack
from generation.tools.outpaint import composite, outpaint_canvas

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["run_inpainting"]

logger = logging.getLogger(__name__)

_GONE = {
    "edit": "The image to edit is no longer available; make a new image and try again.",
    "zoom": "The image to zoom or pan is no longer available; make a new image and try again.",
}


def _sources(batch: Batch) -> list[Image]:
    from PIL import Image as PILImage

    sources, errors = [], {}
    for index, item in enumerate(batch.items):
        try:
            with PILImage.open(item.init_image or "") as opened:
                opened.load()
                sources.append(opened.convert("RGBA") if batch.kind == "edit" else opened.convert("RGB"))
        except OSError:
            logger.info("init image %s of item %d is missing or unreadable", item.init_image, index)
            errors[index] = GenerationFailed(_GONE.get(batch.kind, _GONE["zoom"]))
    if errors:
        raise ItemsRejected(errors)
    return sources


def run_inpainting(pipe: Any, batch: Batch, config: Any,
                   progress: Callable[[int, int, list[int]], Callable[..., dict[str, Any]]], *,
                   guidance: float = 0.0) -> list[Image]:
    """Each item's result at its final size; ``progress(done, whole, indices)`` makes a step-end
    callback for a call over the batch's items ``indices`` (their live previews);
    ``guidance`` is the model's guidance scale (0 for Lightning and Turbo: one UNet pass per step)."""
    from PIL import Image as PILImage

    size = (batch.width, batch.height)
    sources = _sources(batch)
    if batch.kind == "edit":
        originals = [unpack(source) for source in sources]  # (image, mask) at the source's size
        canvases = [image.resize(size, PILImage.Resampling.LANCZOS) if image.size != size else image
                    for image, _ in originals]
        masks = [mask.resize(size, PILImage.Resampling.BILINEAR) if mask.size != size else mask
                 for _, mask in originals]
    else:
        made = [outpaint_canvas(source, batch.kind, item.mode or "", size)
                for source, item in zip(sources, batch.items)]
        canvases, masks = [m[0] for m in made], [m[1] for m in made]
    generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch.items]
    embedded = encode_prompts(pipe, [item.prompt for item in batch.items], dedupe=config.dedupe_prompts)
    if len({e.shape[1] for e, _ in embedded}) > 1:  # prompts of different lengths: one call each
        groups = [[i] for i in range(len(batch.items))]
    else:
        groups = [list(range(len(batch.items)))]
    steps = batch.denoising_steps
    latents: list[Any] = [None] * len(batch.items)
    for number, indices in enumerate(groups):
        out = pipe(
            prompt_embeds=torch.cat([embedded[i][0] for i in indices]),
            pooled_prompt_embeds=torch.cat([embedded[i][1] for i in indices]),
            image=[canvases[i] for i in indices], mask_image=[masks[i] for i in indices],
            width=batch.width, height=batch.height, strength=batch.strength,
            num_inference_steps=batch.steps, guidance_scale=guidance,
            generator=[generators[i] for i in indices], output_type="latent",
            callback_on_step_end=progress(number * steps, steps * len(groups), indices),
        ).images
        for row, index in enumerate(indices):
            latents[index] = out[row:row + 1]
    images = decode_latents(pipe, torch.cat(latents), config.vae_decode)
    if batch.kind == "edit":
        return [composite_edit(image, generated, mask) for generated, (image, mask) in zip(images, originals)]
    return [composite(image, canvas, mask) for image, canvas, mask in zip(images, canvases, masks)]
