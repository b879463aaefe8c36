"""The image pipeline the worker runs: SDXL-Lightning (Hub or local files) or the tiny model.

    load_pipeline(ModelConfig)  ->  LightningPipeline     (implements generation.core.batch.ImagePipeline)
        name="tiny"                  generation.model.tiny: real SDXL classes, small random weights
        name="sdxl-lightning", path  generation.model.loader: a local diffusers directory (+ Lightning UNets)
        name="sdxl-lightning"        generation.model.loader: the Hugging Face Hub

Each SDXL-Lightning step count has its own UNet checkpoint; :class:`LightningPipeline` keeps a
map ``steps -> UNet`` and swaps ``pipe.unet`` (and the scheduler: 1 step predicts the sample)
per batch. img2img batches (variations of an earlier image) run through a
``StableDiffusionXLImg2ImgPipeline`` built from the same components: no second copy of the
weights, the same UNet swap and scheduler. The speed options of ``[model]`` (compile, fused QKV,
channels_last, batched VAE decode, ...) live in :mod:`generation.model.speed`; the config and its
checks in :mod:`generation.model.model_config`.

The names of those modules stay importable from here (``from generation.model.pipeline import
ModelConfig, build_tiny_pipeline, ...``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from generation.core.batch import Batch, BatchItem, ItemsRejected, StepCallback
from generation.core.errors import GenerationFailed, InvalidRequest
from generation.model.loader import lightning_checkpoint, lightning_unet_filename, load_hub, load_local, load_pretrained
from generation.model.model_config import (
    DEVICES,
    DTYPES,
    FLUX_KINDS,
    ModelConfig,
    check_speed_options,
    describe_device,
    resolve_device,
    resolve_dtype,
)
from generation.core.request import ASPECT_RATIOS, KINDS, STEP_CHOICES, ModelCaps
from generation.model.preview import denoised
from generation.model.preview import step_callback as _progress
from generation.model.prompting import encode_prompts
from generation.model.speed import apply_speed_options, attention_backend, decode_latents
from generation.model.tiny import TINY_BASE_RESOLUTION, TINY_MODEL_ID, build_tiny_pipeline, build_tiny_tokenizer
from generation.model.inpainting import run_inpainting
from generation.tools.init_images import load_init_images
from generation.tools.upscale import LanczosUpscaler, enlarge_each, refine_tiled, tile_count

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from PIL.Image import Image

__all__ = [
    "DEVICES",
    "DTYPES",
    "LightningPipeline",
    "ModelConfig",
    "build_tiny_pipeline",
    "build_tiny_tokenizer",
    "describe_device",
    "expected_caps",
    "lightning_unet_filename",
    "load_init_images",
    "load_pipeline",
    "resolve_device",
    "resolve_dtype",
]

logger = logging.getLogger(__name__)

SDXL_BASE_RESOLUTION = 1024
TURBO_STEPS = (1, 2, 4)  # SDXL-Turbo: 1 step on its card, a few more sharpen it


# -- the ImagePipeline ----------------------------------------------------------------------


class LightningPipeline:
    """An SDXL pipeline with one UNet (and scheduler) per step count; runs one Batch per call."""

    def __init__(
        self,
        pipe: StableDiffusionXLPipeline,
        unets: dict[int, UNet2DConditionModel],
        *,
        model_id: str,
        name: str = "sdxl-lightning",
        base_resolution: int = SDXL_BASE_RESOLUTION,
        config: ModelConfig | None = None,
    ) -> None:
        if not unets:
            raise ValueError("unets must map at least one step count to a UNet")
        from diffusers import EulerDiscreteScheduler

        self.pipe = pipe
        self.model_id = model_id
        self.caps = ModelCaps(name=name, base_resolution=base_resolution, steps=tuple(sorted(unets)))
        # No config: plain eager diffusers with every speed option off (tests, the naive baseline).
        self.config = config if config is not None else _EAGER
        self._unets = dict(unets)
        trailing = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
        one_step = EulerDiscreteScheduler.from_config(
            trailing.config, timestep_spacing="trailing", prediction_type="sample"
        )
        self._schedulers = {n: one_step if n == 1 else trailing for n in unets}
        self._img2img: StableDiffusionXLImg2ImgPipeline | None = None
        self._inpaint: Any = None
        # [prompt-power hook] LoRA adapters (generation.model.lora.attach_loras sets it); None: no LoRAs
        self.loras: Any = None
        # the first half of an upscale ([upscale] model, set by bot.app); Lanczos when none is configured
        self.upscaler: Any = LanczosUpscaler()
        self.upscale_tile: int | None = None  # the refining pass's tile (default: the model's base size)
        # live previews between steps (generation.model.preview.with_previews sets it); None: off
        self.previewer: Any = None
        self.guidance = float(self.config.guidance)  # 0 for Lightning and Turbo: one UNet pass per step
        self.checkpoint_hash: str | None = None  # SHA-256 of the weights (set by load_pipeline)
        pipe.scheduler = trailing
        pipe.set_progress_bar_config(disable=True)
        pipe.vae.disable_slicing()  # decode_latents slices itself when model.vae_decode asks
        apply_speed_options(pipe, self._unets, self.config, pipe.device)

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @property
    def img2img(self) -> StableDiffusionXLImg2ImgPipeline:
        """The img2img pipeline over the same components (built on first use, no weight copy)."""
        if self._img2img is None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            img2img = StableDiffusionXLImg2ImgPipeline(
                **self.pipe.components,
                force_zeros_for_empty_prompt=self.pipe.config.force_zeros_for_empty_prompt,
                add_watermarker=False,
            )
            img2img.set_progress_bar_config(disable=True)
            vae = self.pipe.vae
            if vae.dtype != torch.float16 and vae.config.force_upcast:
                # The upcast guards fp16 overflow only; elsewhere img2img would cast the shared VAE
                # to fp32 and back on every call (txt2img already upcasts for fp16 only).
                vae.register_to_config(force_upcast=False)
            self._img2img = img2img
        return self._img2img

    def unet_for(self, steps: int) -> UNet2DConditionModel:
        """The UNet that serves ``steps`` steps."""
        if steps not in self._unets:
            raise InvalidRequest(
                "steps",
                f"This model has {', '.join(map(str, self.caps.steps))}-step checkpoints loaded; "
                f"{steps} steps is not available.",
            )
        return self._unets[steps]

    def _ready(self, pipe: Any, unet: Any, batch: Batch) -> None:
        """``pipe`` with this step count's UNet and scheduler, and the batch's LoRA set on the UNet
        (generation.model.lora); every pipeline call (text, img2img, upscale, outpaint) goes
        through here."""
        pipe.unet = unet
        pipe.scheduler = self._schedulers[batch.steps]
        if batch.loras and self.loras is None:
            raise InvalidRequest("lora", "This bot has no LoRAs configured (lora.dir).")
        if self.loras is not None:
            self.loras.activate(batch.loras, pipe)

    def generate(
        self,
        batch: Batch,
        on_step: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Image]:
        """One image per item, in order. Raises BatchInterrupted, ItemsRejected (unusable init
        images), or torch's OutOfMemoryError."""
        # 1. Check the batch against what is loaded
        if not batch.items:
            return []
        if batch.kind not in KINDS:
            raise InvalidRequest("kind", f"Unknown kind {batch.kind!r}; this pipeline runs {', '.join(KINDS)}.")
        if batch.width % 8 or batch.height % 8:
            raise InvalidRequest(
                "size", f"`height` and `width` have to be divisible by 8 but are {batch.height} and {batch.width}."
            )
        unet = self.unet_for(batch.steps)
        total = batch.denoising_steps  # img2img runs only int(steps * strength) of them
        if total < 1:
            raise InvalidRequest(
                "strength", f"Strength {batch.strength:g} is too low for {batch.steps} steps: no step would run."
            )
        if batch.kind == "enlarge":  # the upscaler alone, no diffusion pass
            return enlarge_each(self.upscaler, load_init_images(batch, (batch.width // 2, batch.height // 2)), on_step)
        if batch.kind == "upscale":
            return self._upscale(batch, unet, on_step, should_stop)
        if batch.kind in ("zoom", "pan", "edit"):
            return self._inpainted(batch, unet, on_step, should_stop)
        extra: dict[str, Any]
        if batch.kind == "img2img":
            pipe: Any = self.img2img
            extra = {"image": load_init_images(batch), "strength": batch.strength}
        else:
            pipe = self.pipe
            extra = {"width": batch.width, "height": batch.height}

        # 2. Put this step count's UNet and scheduler in place, and the batch's LoRA set
        self._ready(pipe, unet, batch)

        # 3. One CPU generator per image: a seed gives the same image alone or in any batch
        #    (img2img: it draws the VAE sample of the init image, then the noise)
        generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch.items]

        # 4. Weighted, chunked embeddings (generation.model.prompting). Items whose prompts differ in
        #    length (77 tokens per chunk) run in separate pipeline calls, never padded together.
        with torch.inference_mode(), attention_backend(self.config.attention):
            embedded = encode_prompts(pipe, [item.prompt for item in batch.items],
                                      dedupe=self.config.dedupe_prompts)
            groups: dict[int, list[int]] = {}
            for index, (embeds, _) in enumerate(embedded):
                groups.setdefault(embeds.shape[1], []).append(index)

            # 5. One pipeline call per length (guidance 0: one UNet pass per step), reporting
            #    progress after each step and stopping at a step boundary when asked (raising
            #    there also skips the VAE decode of unfinished latents); then one VAE decode for
            #    the whole batch (sliced or tiled only when memory runs out)
            latents: list[Any] = [None] * len(batch.items)
            whole = total * len(groups)
            for number, indices in enumerate(groups.values()):
                part = {k: [v[i] for i in indices] if k == "image" else v for k, v in extra.items()}
                with denoised(pipe.scheduler, self.previewer is not None) as estimate:
                    out = pipe(
                        prompt_embeds=torch.cat([embedded[i][0] for i in indices]),
                        pooled_prompt_embeds=torch.cat([embedded[i][1] for i in indices]),
                        num_inference_steps=batch.steps,
                        guidance_scale=self.guidance,
                        generator=[generators[i] for i in indices],
                        output_type="latent",
                        callback_on_step_end=_progress(on_step, should_stop, number * total, whole,
                                                       self.previewer, indices, estimate),
                        **part,
                    ).images
                for row, index in enumerate(indices):
                    latents[index] = out[row:row + 1]
            return decode_latents(pipe, torch.cat(latents), self.config.vae_decode)

    def _upscale(self, batch: Batch, unet: UNet2DConditionModel, on_step: StepCallback | None,
                 should_stop: Callable[[], bool] | None) -> list[Image]:
        """Each item's image enlarged 2x (``self.upscaler``), then refined by img2img tile by tile
        (tiles of the model's own size, blended; :mod:`generation.tools.upscale`)."""
        sources = load_init_images(batch, (batch.width // 2, batch.height // 2))
        pipe: Any = self.img2img
        self._ready(pipe, unet, batch)
        tile = self.upscale_tile or self.caps.base_resolution
        overlap = tile // 8
        steps = batch.denoising_steps
        per_item = tile_count(batch.width, batch.height, tile, overlap)
        whole = steps * per_item * len(batch.items)
        results = []
        with torch.inference_mode(), attention_backend(self.config.attention):
            embedded = encode_prompts(pipe, [item.prompt for item in batch.items], dedupe=self.config.dedupe_prompts)
            for number, (item, source) in enumerate(zip(batch.items, sources)):
                embeds, pooled = embedded[number]

                def run(part: Image, index: int, number: int = number, item: BatchItem = item,
                        embeds: Any = embeds, pooled: Any = pooled) -> Image:
                    done = (number * per_item + index) * steps
                    latents = pipe(
                        prompt_embeds=embeds, pooled_prompt_embeds=pooled, image=[part], strength=batch.strength,
                        num_inference_steps=batch.steps, guidance_scale=self.guidance,
                        generator=[torch.Generator("cpu").manual_seed((item.seed + index) % 2**32)],
                        output_type="latent", callback_on_step_end=_progress(on_step, should_stop, done, whole),
                    ).images
                    return decode_latents(pipe, latents, "tiled")[0]  # bounded memory at any size

                results.append(refine_tiled(run, self.upscaler.enlarge(source), tile, overlap))
        return results

    @property
    def inpaint(self) -> Any:
        """The SDXL inpainting pipeline over the same components (built on first use, no weight copy)."""
        if self._inpaint is None:
            from diffusers import StableDiffusionXLInpaintPipeline

            self.img2img  # noqa: B018 - the same VAE upcast rule
            self._inpaint = StableDiffusionXLInpaintPipeline(
                **self.pipe.components, force_zeros_for_empty_prompt=self.pipe.config.force_zeros_for_empty_prompt,
                add_watermarker=False)
            self._inpaint.set_progress_bar_config(disable=True)
        return self._inpaint

    def _inpainted(self, batch: Batch, unet: UNet2DConditionModel, on_step: StepCallback | None,
                   should_stop: Callable[[], bool] | None) -> list[Image]:
        """Zoom out, pan and edit: a masked region repainted, the rest kept (:mod:`.inpainting`)."""
        pipe: Any = self.inpaint
        self._ready(pipe, unet, batch)
        with torch.inference_mode(), attention_backend(self.config.attention), \
                denoised(pipe.scheduler, self.previewer is not None) as estimate:
            return run_inpainting(pipe, batch, self.config,
                                  lambda done, whole, indices: _progress(on_step, should_stop, done, whole,
                                                                         self.previewer, indices, estimate),
                                  guidance=self.guidance)

    def warm_up(self) -> None:
        """Run each configured shape once so torch.compile builds its graphs before users wait.

        Nothing to do in eager mode. Runs on the worker thread (CUDA graphs belong to a thread).
        """
        config = self.config
        if not config.compile:
            return
        sizes = self.caps.sizes()
        shapes = [
            (steps, sizes[ratio], n)
            for steps in self.caps.steps
            for ratio in config.warmup_sizes
            for n in config.warmup_batch_sizes
            if ratio in ASPECT_RATIOS
        ]
        started = time.perf_counter()
        for done, (steps, (width, height), n) in enumerate(shapes, 1):
            t0 = time.perf_counter()
            items = tuple(BatchItem(f"warm-up {i}", "", i) for i in range(n))
            self.generate(Batch("txt2img", width, height, steps, items))
            logger.info("compiled %d/%d: %dx%d, batch %d, %d steps (%.1f s)",
                        done, len(shapes), width, height, n, steps, time.perf_counter() - t0)
        logger.info("warm-up done: %d shapes in %.1f s", len(shapes), time.perf_counter() - started)


_EAGER = ModelConfig(
    name="tiny", channels_last=False, fuse_qkv=False, vae_decode="sliced", dedupe_prompts=False
)


# -- loading --------------------------------------------------------------------------------


def expected_caps(config: ModelConfig, loras: tuple[tuple[str, str], ...] = ()) -> ModelCaps:
    """What the model ``config`` names will accept once loaded, known without loading it (so a
    request can be checked first: a typo must not cost a model load)."""
    if config.name in FLUX_KINDS:
        from generation.model.flux import flux_caps

        return flux_caps(config)
    if config.name in ("tiny", "tiny-turbo"):
        steps = STEP_CHOICES if config.name == "tiny" else TURBO_STEPS
        return ModelCaps(name=config.name, base_resolution=TINY_BASE_RESOLUTION, steps=steps, loras=loras,
                         default_step=0 if config.name == "tiny" else 1)
    if config.name == "sdxl-turbo":  # 512² and 1 step on its card
        steps = tuple(sorted(set(config.steps))) if config.steps != (4,) else TURBO_STEPS
        return ModelCaps(name=config.name, base_resolution=512, steps=steps, loras=loras, default_step=1)
    return ModelCaps(name=config.name, steps=tuple(sorted(set(config.steps))), loras=loras)


def load_pipeline(config: ModelConfig) -> Any:
    """Load the model ``config`` names (a LightningPipeline for the SDXL kinds, a FluxRunner for
    Flux); raises ModelUnavailable saying what to do when it cannot."""
    device = resolve_device(config.device)
    check_speed_options(config, device)
    dtype = resolve_dtype(config.dtype, device)
    if config.name in FLUX_KINDS:
        from generation.model.flux import load_flux

        return load_flux(config, device, dtype)
    caps = expected_caps(config)
    checkpoint: str | None
    if config.name in ("tiny", "tiny-turbo"):
        from generation.model.flux import weights_hash

        pipe = build_tiny_pipeline(seed=0 if config.name == "tiny" else 1)
        pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
        unets = dict.fromkeys(caps.steps, pipe.unet)
        model_id = TINY_MODEL_ID if config.name == "tiny" else "tiny-random-sdxl-turbo"
        checkpoint = weights_hash(pipe.unet)
    elif config.name in ("sdxl-turbo", "sdxl"):  # one UNet serves every step count
        pipe, model_id, checkpoint = load_pretrained("StableDiffusionXLPipeline", config, dtype, "unet")
        pipe = pipe.to(device)
        unets = dict.fromkeys(caps.steps, pipe.unet)
    else:
        if config.path is not None:
            pipe, unets = load_local(config, dtype)
            model_id = f"local:{Path(config.path).name}"
        else:
            pipe, unets = load_hub(config, dtype)
            model_id = config.lightning_repo
        checkpoint = lightning_checkpoint(config)
        pipe = pipe.to(device)
        unets = {n: unet.to(device) for n, unet in unets.items()}
    logger.info(
        "loaded %s (%s steps) on %s as %s", model_id, ",".join(map(str, sorted(unets))), device, dtype
    )
    pipeline = LightningPipeline(pipe, unets, model_id=model_id, name=config.name,
                                 base_resolution=caps.base_resolution, config=config)
    if config.name != "sdxl-lightning":
        pipeline.caps = caps
    pipeline.checkpoint_hash = checkpoint
    return pipeline
