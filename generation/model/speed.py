"""Speed options applied to a loaded SDXL pipeline, and the pieces of a batch they change.

    apply_speed_options(pipe, unets, config, device)   once, after loading (module order matters:
        quantize -> fuse QKV -> channels_last -> compile, so the compiled graph sees the final
        weights and layout)
    encode_prompts(pipe, prompts)     text encoders once per distinct prompt of a batch
    decode_latents(pipe, latents, mode)  VAE decode of the whole batch, sliced/tiled on OOM
    attention_backend(name)           the SDPA kernel choice around a pipeline call

How close each option keeps the images to plain eager float32 is stated in
docs/operator/scale-out.md ("Speed options") and checked on CPU by tests/test_speed_options.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

    from generation.model.model_config import ModelConfig

__all__ = [
    "apply_speed_options",
    "attention_backend",
    "configure_compile_cache",
    "decode_latents",
    "encode_prompts",
]

logger = logging.getLogger(__name__)

RECOMPILE_LIMIT = 256  # one graph per (shape, batch size, UNet); dynamo's default of 8 is too few


def configure_compile_cache(path: str | os.PathLike[str]) -> Path:
    """Keep inductor's (and Triton's) compiled kernels in ``path`` so a restart reuses them."""
    import torch._inductor.config as inductor_config

    folder = Path(path).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # read by inductor on each use
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
    inductor_config.fx_graph_cache = True
    return folder


def apply_speed_options(
    pipe: Any, unets: dict[int, UNet2DConditionModel], config: ModelConfig, device: torch.device
) -> None:
    """Quantize, fuse, re-lay-out and compile the UNets and the VAE in place, as ``config`` says."""
    models = list({id(unet): unet for unet in [*unets.values(), pipe.unet]}.values())
    vae = pipe.vae
    if config.quantize != "none":
        _quantize(models, config.quantize)
    if config.fuse_qkv:
        for model in [*models, vae]:
            model.fuse_qkv_projections()
    if config.channels_last:
        for model in [*models, vae]:
            model.to(memory_format=torch.channels_last)
    if config.compile:
        _compile(models, vae, config, device)


def _quantize(models: Sequence[torch.nn.Module], kind: str) -> None:
    """torchao weight quantization of the UNets' linear layers (CUDA, checked at load)."""
    from torchao.quantization import quantize_

    if kind == "fp8":
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

        recipe: Any = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    else:
        from torchao.quantization import Int8WeightOnlyConfig

        recipe = Int8WeightOnlyConfig()
    for model in models:
        quantize_(model, recipe)
    logger.info("UNet weights quantized to %s (torchao)", kind)


def _compile(
    models: Sequence[torch.nn.Module], vae: Any, config: ModelConfig, device: torch.device
) -> None:
    """torch.compile each UNet and the VAE decoder in place: static shapes, one graph per shape."""
    import torch._dynamo.config as dynamo_config

    if config.compile_cache_dir is not None:
        folder = configure_compile_cache(config.compile_cache_dir)
        logger.info("torch.compile cache in %s", folder)
    limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), RECOMPILE_LIMIT))
    mode = config.compile_mode
    if config.cuda_graphs:
        mode = "max-autotune" if mode == "max-autotune-no-cudagraphs" else "reduce-overhead"
    options: dict[str, Any] = {"dynamic": False}
    if mode != "default":
        options["mode"] = mode
    for model in models:
        model.compile(**options)
    vae.decoder.compile(**options)
    logger.info("torch.compile on %s: UNet and VAE decoder (%s, dynamic=False)", device.type, mode)


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Pin scaled_dot_product_attention to one kernel ("flash", "math") or let torch pick ("sdpa")."""
    if name == "sdpa":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = SDPBackend.FLASH_ATTENTION if name == "flash" else SDPBackend.MATH
    with sdpa_kernel(backend):
        yield


def encode_prompts(pipe: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, pooled_prompt_embeds) for ``prompts``, running the encoders once per
    distinct prompt (guidance 0: the negative prompt is never encoded)."""
    distinct = list(dict.fromkeys(prompts))
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=distinct, device=pipe.device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    if len(distinct) == len(prompts):
        return embeds, pooled
    where = {prompt: i for i, prompt in enumerate(distinct)}
    index = torch.tensor([where[p] for p in prompts], device=embeds.device)
    return embeds.index_select(0, index), pooled.index_select(0, index)


def decode_latents(pipe: Any, latents: torch.Tensor, mode: str = "batch") -> list[Any]:
    """PIL images from the final latents, as diffusers' SDXL pipelines decode them, but with the
    whole batch in one VAE call (``mode="batch"``), falling back to one image at a time and then
    to tiles only when the GPU runs out of memory."""
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        pipe.upcast_vae()
        latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    try:
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std_t / vae.config.scaling_factor + mean_t
        else:
            latents = latents / vae.config.scaling_factor
        image = _decode_with_fallback(vae, latents, mode)
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    return pipe.image_processor.postprocess(image, output_type="pil")


_FALLBACK = {"batch": "sliced", "sliced": "tiled", "tiled": None}


def _decode_with_fallback(vae: Any, latents: torch.Tensor, mode: str) -> torch.Tensor:
    current: str | None = mode
    while True:
        assert current is not None
        try:
            return _decode(vae, latents, current)
        except torch.OutOfMemoryError:
            following = _FALLBACK[current]
            if following is None or len(latents) == 0:
                raise
        # out of the except block: the failed attempt's tensors can be freed now
        logger.warning("VAE decode of %d latents ran out of memory (%s); retrying %s",
                       len(latents), current, following)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        current = following


def _decode(vae: Any, latents: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "batch":
        return vae.decode(latents, return_dict=False)[0]
    tiled = mode == "tiled"
    if tiled:
        vae.enable_tiling()
    try:
        return torch.cat([vae.decode(latents[i : i + 1], return_dict=False)[0] for i in range(len(latents))])
    finally:
        if tiled:
            vae.disable_tiling()
