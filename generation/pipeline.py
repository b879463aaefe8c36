"""Load SDXL-Lightning (Hub or a local directory) or a tiny random-weight SDXL, and run batches.

    load_pipeline(ModelConfig)  ->  LightningPipeline     (implements generation.batch.ImagePipeline)
        name="tiny"                  build_tiny_pipeline(): real SDXL classes, small random weights
        name="sdxl-lightning", path  a local diffusers directory (+ optional Lightning UNet files)
        name="sdxl-lightning"        the Hugging Face Hub (base repo + Lightning UNet checkpoints)

Each SDXL-Lightning step count has its own UNet checkpoint; :class:`LightningPipeline` keeps a
map ``steps -> UNet`` and swaps ``pipe.unet`` (and the scheduler: 1 step predicts the sample)
per batch. img2img batches (variations of an earlier image) run through a
``StableDiffusionXLImg2ImgPipeline`` built from the same components: no second copy of the
weights, the same UNet swap and scheduler. Every loading failure becomes
:class:`~generation.errors.ModelUnavailable` with a message that says what to do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from generation.batch import Batch, BatchInterrupted, ItemsRejected, StepCallback
from generation.errors import GenerationFailed, InvalidRequest, ModelUnavailable
from generation.prompting import encode_prompts  # [prompt-power hook]
from generation.request import KINDS, STEP_CHOICES, ModelCaps

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
    "lightning_unet_filename",
    "load_init_images",
    "load_pipeline",
    "resolve_device",
    "resolve_dtype",
]

logger = logging.getLogger(__name__)

MODEL_NAMES = ("sdxl-lightning", "tiny")
DEVICES = ("auto", "cuda", "cpu", "mps")
DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
TINY_MODEL_ID = "tiny-random-sdxl"
TINY_BASE_RESOLUTION = 256
SDXL_BASE_RESOLUTION = 1024
_HOW_TO_GET = (
    "Download them on a machine with network (see README 'Getting the model'), or set model.path "
    "in config to a local copy; `make demo` runs offline with the tiny model."
)


def lightning_unet_filename(steps: int) -> str:
    """File name of the SDXL-Lightning UNet checkpoint for ``steps`` steps."""
    return f"sdxl_lightning_{steps}step_unet.safetensors"


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and where it runs (the ``[model]`` table of the config file)."""

    name: str = "sdxl-lightning"
    path: str | None = None
    base_repo: str = "stabilityai/stable-diffusion-xl-base-1.0"
    lightning_repo: str = "ByteDance/SDXL-Lightning"
    steps: tuple[int, ...] = (4,)
    device: str = "auto"
    dtype: str = "auto"
    vae_repo: str | None = "madebyollin/sdxl-vae-fp16-fix"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ValueError(f"model.name must be one of {', '.join(MODEL_NAMES)}, not {self.name!r}")
        steps = tuple(self.steps) if isinstance(self.steps, (list, tuple)) else (self.steps,)
        if not steps or any(isinstance(n, bool) or n not in STEP_CHOICES for n in steps):
            raise ValueError(
                f"model.steps must be a non-empty list of {', '.join(map(str, STEP_CHOICES))}, "
                f"not {self.steps!r}"
            )
        object.__setattr__(self, "steps", tuple(sorted(set(steps))))
        if self.device not in DEVICES:
            raise ValueError(f"model.device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for a config value: auto picks CUDA, then Apple MPS, then CPU."""
    if device not in DEVICES:
        raise ValueError(f"model.device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable(
            "model.device is 'cuda' but torch sees no CUDA GPU; install a CUDA build of torch "
            "(see README) or set model.device = \"auto\"."
        )
    if device == "mps" and not _mps_available():
        raise ModelUnavailable(
            "model.device is 'mps' but Apple MPS is not available; set model.device = \"auto\"."
        )
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """The torch dtype for a config value: auto is bfloat16 on CUDA, float16 on MPS, else float32."""
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    explicit = DTYPES[dtype]
    if explicit is not None:
        return explicit
    # bf16 on CUDA: same speed as fp16 and diffusers need not upcast the SDXL VAE to fp32.
    kind = torch.device(device).type
    return {"cuda": torch.bfloat16, "mps": torch.float16}.get(kind, torch.float32)


def describe_device(device: str = "auto") -> str:
    """A human name for the device ``device`` resolves to, e.g. "NVIDIA H100 80GB HBM3" or "cpu"."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return torch.cuda.get_device_name(resolved)
    if resolved.type == "mps":
        return "Apple MPS"
    return "cpu"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


# -- the tiny random-weight pipeline ---------------------------------------------------------


def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable character per byte value."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tiny_tokenizer() -> Any:
    """A CLIP tokenizer over the 256 byte-level characters: any unicode text tokenizes."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in _byte_chars():
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """An SDXL pipeline of the real classes with small random weights (seeded, no download)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from diffusers import UNet2DConditionModel as UNet
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_tiny_tokenizer()
    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=3,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=32,
    )
    torch.manual_seed(seed)
    unet = _tiny_unet(UNet)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=256,
        scaling_factor=0.13025,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="trailing",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_unet(unet_class: type[UNet2DConditionModel]) -> UNet2DConditionModel:
    """Two down blocks (one downsampling): latent sides that are multiples of 2 work."""
    return unet_class(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled text (32)
        cross_attention_dim=64,  # hidden sizes of both text encoders, concatenated
        norm_num_groups=8,
    )


# -- img2img sources -------------------------------------------------------------------------


def load_init_images(batch: Batch) -> list[Image]:
    """Each item's init image as RGB at the batch's size; raises ItemsRejected for unusable ones.

    An image of another aspect ratio is centre-cropped to the batch's before resizing.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    images: list[Image] = []
    errors: dict[int, GenerationFailed] = {}
    for index, item in enumerate(batch.items):
        path = item.init_image
        try:
            if path is None:
                raise FileNotFoundError("no init_image")
            with PILImage.open(path) as opened:
                rgb = opened.convert("RGB")
        except FileNotFoundError:
            logger.info("init image %s of item %d is missing", path, index)
            errors[index] = GenerationFailed(
                "The image to make a variation of is no longer available (it may have been "
                "deleted); make a new image and try again."
            )
            continue
        except OSError as err:  # includes PIL.UnidentifiedImageError
            logger.warning("init image %s of item %d is unreadable: %s", path, index, err)
            errors[index] = GenerationFailed(
                "The image to make a variation of could not be read; make a new image and try again."
            )
            continue
        size = (batch.width, batch.height)
        images.append(rgb if rgb.size == size else ImageOps.fit(rgb, size, PILImage.Resampling.LANCZOS))
    if errors:
        raise ItemsRejected(errors)
    return images


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
    ) -> None:
        if not unets:
            raise ValueError("unets must map at least one step count to a UNet")
        from diffusers import EulerDiscreteScheduler

        self.pipe = pipe
        self.model_id = model_id
        self.caps = ModelCaps(name=name, base_resolution=base_resolution, steps=tuple(sorted(unets)))
        self._unets = dict(unets)
        trailing = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
        one_step = EulerDiscreteScheduler.from_config(
            trailing.config, timestep_spacing="trailing", prediction_type="sample"
        )
        self._schedulers = {n: one_step if n == 1 else trailing for n in unets}
        self._img2img: StableDiffusionXLImg2ImgPipeline | None = None
        # [prompt-power hook] LoRA adapters (generation.lora.attach_loras sets it); None: no LoRAs
        self.loras: Any = None
        pipe.scheduler = trailing
        pipe.set_progress_bar_config(disable=True)
        # Decode one image at a time: bounds VAE memory at 1024² and keeps each image independent
        # of its batch neighbours (batched conv kernels differ from batch-1 ones in the last bits).
        pipe.vae.enable_slicing()

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
        extra: dict[str, Any]
        if batch.kind == "img2img":
            pipe: Any = self.img2img
            extra = {"image": load_init_images(batch), "strength": batch.strength}
        else:
            pipe = self.pipe
            extra = {"width": batch.width, "height": batch.height}

        # 2. Put this step count's UNet and scheduler in place
        pipe.unet = unet
        pipe.scheduler = self._schedulers[batch.steps]
        # [prompt-power hook] this batch's LoRA set on the UNet in place (generation.lora)
        if batch.loras and self.loras is None:
            raise InvalidRequest("lora", "This bot has no LoRAs configured (lora.dir).")
        if self.loras is not None:
            self.loras.activate(batch.loras, pipe)

        # 3. One CPU generator per image: a seed gives the same image alone or in any batch
        #    (img2img: it draws the VAE sample of the init image, then the noise)
        generators = [torch.Generator("cpu").manual_seed(item.seed) for item in batch.items]

        # 4. Report progress after each step; stop at a step boundary when asked. Raising here
        #    (rather than setting pipe._interrupt) also skips the VAE decode of unfinished latents.

        def step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(i + 1, total)
            if should_stop is not None and i + 1 < total and should_stop():
                raise BatchInterrupted(f"stopped after step {i + 1} of {total}")
            return {}

        # 5. One pipeline call for the whole batch (guidance 0: one UNet pass per step)
        with torch.inference_mode():
            output = pipe(
                # [prompt-power hook] weighted, chunked embeddings (generation.prompting)
                **encode_prompts(self.pipe, [item.prompt for item in batch.items],
                                 [item.negative_prompt for item in batch.items]),
                num_inference_steps=batch.steps,
                guidance_scale=0.0,
                generator=generators,
                output_type="pil",
                callback_on_step_end=step_end,
                **extra,
            )
        return list(output.images)


# -- loading --------------------------------------------------------------------------------


def load_pipeline(config: ModelConfig) -> LightningPipeline:
    """Load the model ``config`` names; raises ModelUnavailable saying what to do when it cannot."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if config.name == "tiny":
        pipe = build_tiny_pipeline()
        pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device, dtype)
        return LightningPipeline(
            pipe,
            dict.fromkeys(STEP_CHOICES, pipe.unet),
            model_id=TINY_MODEL_ID,
            name="tiny",
            base_resolution=TINY_BASE_RESOLUTION,
        )
    if config.path is not None:
        pipe, unets = _load_local(config, dtype)
        model_id = f"local:{Path(config.path).name}"
    else:
        pipe, unets = _load_hub(config, dtype)
        model_id = config.lightning_repo
    pipe = pipe.to(device)
    unets = {n: unet.to(device) for n, unet in unets.items()}
    logger.info(
        "loaded %s (%s steps) on %s as %s", model_id, ",".join(map(str, sorted(unets))), device, dtype
    )
    return LightningPipeline(pipe, unets, model_id=model_id, name=config.name)


def _load_local(
    config: ModelConfig, dtype: torch.dtype
) -> tuple[StableDiffusionXLPipeline, dict[int, UNet2DConditionModel]]:
    """Load from ``config.path``, a directory laid out like this::

        <path>/model_index.json, unet/, vae/, text_encoder/, ...   StableDiffusionXLPipeline.save_pretrained
        <path>/sdxl_lightning_{n}step_unet.safetensors             optional, one per step count
        <path>/lightning/sdxl_lightning_{n}step_unet.safetensors   (or in a lightning/ subfolder)

    A step count with its own file gets a UNet loaded from that file. At most one configured step
    count may lack a file: the directory's own ``unet/`` (already a Lightning UNet) serves it.
    """
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    root = Path(config.path).expanduser()  # type: ignore[arg-type]
    if not root.is_dir():
        raise ModelUnavailable(
            f"model.path {str(root)!r} does not exist or is not a directory; point it at a local "
            f"copy of the model (see README 'Getting the model')."
        )
    if not (root / "model_index.json").is_file():
        raise ModelUnavailable(
            f"model.path {str(root)!r} is not a diffusers pipeline directory: "
            f"{root / 'model_index.json'} is missing (see README 'Getting the model')."
        )
    files = {n: _find_unet_file(root, n) for n in config.steps}
    missing = [n for n, file in files.items() if file is None]
    if len(missing) > 1:
        names = ", ".join(lightning_unet_filename(n) for n in missing)
        raise ModelUnavailable(
            f"model.path {str(root)!r} has no {names} (looked in {root} and {root / 'lightning'}); "
            f"its own unet/ can serve only one step count. Add the files or set model.steps to the "
            f"step counts you have."
        )
    try:
        unet_config = UNet2DConditionModel.load_config(str(root), subfolder="unet")
        unets = {n: _load_unet_file(unet_config, file, dtype) for n, file in files.items() if file}
        extra: dict[str, Any] = {}
        if not missing:
            extra["unet"] = next(iter(unets.values()))  # skip loading the directory's own UNet
        pipe = StableDiffusionXLPipeline.from_pretrained(
            str(root), **_dtype_kwarg(dtype), add_watermarker=False, **extra
        )
    except ModelUnavailable:
        raise
    except Exception as err:
        raise ModelUnavailable(
            f"Could not load the model from model.path {str(root)!r} ({_reason(err)}); check that it "
            f"was written by StableDiffusionXLPipeline.save_pretrained (see README 'Getting the model')."
        ) from err
    for n in missing:
        logger.info("%s: no %s, its own unet serves %d steps", root, lightning_unet_filename(n), n)
        unets[n] = pipe.unet
    return pipe, unets


def _load_hub(
    config: ModelConfig, dtype: torch.dtype
) -> tuple[StableDiffusionXLPipeline, dict[int, UNet2DConditionModel]]:
    """Base pipeline from ``base_repo``, one Lightning UNet per step from ``lightning_repo``."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from huggingface_hub import hf_hub_download

    # fp16 files also serve bf16: half the download, and the values fit bf16's range.
    variant = "fp16" if dtype in (torch.float16, torch.bfloat16) else None
    try:
        unet_config = UNet2DConditionModel.load_config(
            config.base_repo, subfolder="unet", cache_dir=config.cache_dir
        )
        unets = {}
        for n in config.steps:
            file = hf_hub_download(
                config.lightning_repo, lightning_unet_filename(n), cache_dir=config.cache_dir
            )
            unets[n] = _load_unet_file(unet_config, Path(file), dtype)
        extra: dict[str, Any] = {"unet": unets[config.steps[0]]}  # the base UNet is never used
        if config.vae_repo:
            extra["vae"] = AutoencoderKL.from_pretrained(
                config.vae_repo, **_dtype_kwarg(dtype), cache_dir=config.cache_dir
            )
        pipe = StableDiffusionXLPipeline.from_pretrained(
            config.base_repo,
            **_dtype_kwarg(dtype),
            variant=variant,
            cache_dir=config.cache_dir,
            add_watermarker=False,
            **extra,
        )
    except Exception as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = "HF_HUB_OFFLINE is set and they are not in the cache: " if offline else ""
        raise ModelUnavailable(
            f"Could not load SDXL-Lightning weights from the Hugging Face Hub "
            f"({hint}{_reason(err)}). {_HOW_TO_GET}"
        ) from err
    return pipe, unets


def _find_unet_file(root: Path, steps: int) -> Path | None:
    for folder in (root, root / "lightning"):
        candidate = folder / lightning_unet_filename(steps)
        if candidate.is_file():
            return candidate
    return None


def _load_unet_file(unet_config: dict[str, Any], file: Path, dtype: torch.dtype) -> UNet2DConditionModel:
    """A UNet of ``unet_config``'s architecture holding the weights in ``file``."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    with torch.device("meta"):  # no random init of 2.6B parameters that are overwritten anyway
        unet = UNet2DConditionModel.from_config(unet_config)
    state = {key: value.to(dtype) for key, value in load_file(str(file)).items()}
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise ModelUnavailable(
            f"{file} does not fit the base model's UNet ({_reason(err)}); is it an SDXL-Lightning "
            f"UNet checkpoint?"
        ) from err
    if any(t.is_meta for t in unet.state_dict().values()):
        raise ModelUnavailable(f"{file} left some UNet weights unset; is it a full UNet checkpoint?")
    return unet.eval()


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``dtype=`` where diffusers has it (it deprecates ``torch_dtype=``), else ``torch_dtype=``."""
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:
        return {"torch_dtype": dtype}
    renamed = hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE")
    return {"dtype": dtype} if renamed else {"torch_dtype": dtype}


def _reason(err: BaseException) -> str:
    """The first line of an exception, short enough for a message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
