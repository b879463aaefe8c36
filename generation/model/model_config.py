"""The ``[model]`` table: which model, on which device, and the speed options (validated here).

Speed options (see docs/operator/scale-out.md, "Speed options"); every one can be switched off:

    compile            torch.compile of the UNet and the VAE decoder, per shape (dynamic=False)
    compile_mode       "default" or "max-autotune-no-cudagraphs" (CUDA graphs: ``cuda_graphs``)
    cuda_graphs        CUDA graphs over the compiled, static shapes            (CUDA only)
    channels_last      NHWC memory layout for the UNet and the VAE
    fuse_qkv           one fused Q/K/V projection per attention layer
    attention          "sdpa" (PyTorch picks), "flash" (CUDA only), "math" (reference kernel)
    vae_decode         "batch" (whole batch, sliced on OOM), "sliced" (one image at a time), "tiled"
    dedupe_prompts     run the text encoders once per distinct prompt of a batch
    quantize           "none", "int8" or "fp8" weights via torchao                (CUDA only)
    warmup_sizes       aspect ratios whose shapes are compiled at start, e.g. ["1:1", "16:9"]
    warmup_batch_sizes batch sizes compiled at start for each of them
    compile_cache_dir  inductor cache (default: <storage.data_dir>/torch-compile, set by bot.config)

A CUDA-only option on a machine without CUDA is refused at load (:func:`check_speed_options`)
with a message; it is never ignored silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from generation.core.errors import ModelUnavailable
from generation.core.request import ASPECT_RATIOS, STEP_CHOICES

__all__ = [
    "ATTENTION",
    "COMPILE_MODES",
    "DEVICES",
    "DTYPES",
    "DEFAULT_REPOS",
    "FLUX_KINDS",
    "MODEL_NAMES",
    "TINY_KINDS",
    "QUANTIZE",
    "VAE_DECODE",
    "ModelConfig",
    "check_speed_options",
    "describe_device",
    "resolve_device",
    "resolve_dtype",
]

# kinds of model (issue 25): the real ones, and random-weight ones built in-process for tests
MODEL_NAMES = ("sdxl-lightning", "sdxl-turbo", "flux-schnell", "sdxl", "tiny", "tiny-turbo", "tiny-flux")
TINY_KINDS = ("tiny", "tiny-turbo", "tiny-flux")
FLUX_KINDS = ("flux-schnell", "tiny-flux")
# the Hub repository of a kind when neither model.path nor model.repo is set
DEFAULT_REPOS = {"sdxl-turbo": "stabilityai/sdxl-turbo", "flux-schnell": "black-forest-labs/FLUX.1-schnell"}
DEVICES = ("auto", "cuda", "cpu", "mps")
DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
ATTENTION = ("sdpa", "flash", "math")
VAE_DECODE = ("batch", "sliced", "tiled")
QUANTIZE = ("none", "int8", "fp8")
MAX_WARMUP_BATCH = 64


def _one_of(key: str, value: object, choices: tuple[str, ...] | dict[str, object]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"model.{key} must be one of {', '.join(choices)}, not {value!r}")


def _flag(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"model.{key} must be true or false, not {value!r}")


def _as_tuple(value: object) -> tuple[object, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and where it runs (the ``[model]`` table of the config file)."""

    name: str = "sdxl-lightning"
    path: str | None = None
    base_repo: str = "stabilityai/stable-diffusion-xl-base-1.0"
    lightning_repo: str = "ByteDance/SDXL-Lightning"
    steps: tuple[int, ...] = (4,)
    repo: str | None = None  # sdxl-turbo, flux-schnell, sdxl: a Hub repo (default: DEFAULT_REPOS)
    guidance: float = 0.0  # classifier-free guidance scale (0: none, one pass per step)
    device: str = "auto"
    dtype: str = "auto"
    vae_repo: str | None = "madebyollin/sdxl-vae-fp16-fix"
    cache_dir: str | None = None
    # speed options (module docstring; docs/operator/scale-out.md)
    compile: bool = False
    compile_mode: str = "default"
    cuda_graphs: bool = False
    channels_last: bool = True
    fuse_qkv: bool = True
    attention: str = "sdpa"
    vae_decode: str = "batch"
    dedupe_prompts: bool = True
    quantize: str = "none"
    warmup_sizes: tuple[str, ...] = ("1:1",)
    warmup_batch_sizes: tuple[int, ...] = (1, 8)
    compile_cache_dir: str | None = None

    @property
    def hub_repo(self) -> str:
        """Where a non-Lightning kind comes from on the Hub."""
        return self.repo or DEFAULT_REPOS.get(self.name, self.base_repo)

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ValueError(f"model.name must be one of {', '.join(MODEL_NAMES)}, not {self.name!r}")
        if self.name == "sdxl" and not (self.path or self.repo):
            raise ValueError('a model of kind "sdxl" needs path (a local diffusers folder) or repo (on the Hub)')
        guidance = self.guidance
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance <= 30:
            raise ValueError(f"model.guidance must be a number from 0 to 30, not {self.guidance!r}")
        if self.guidance and self.name != "sdxl":
            raise ValueError(f'model.guidance is for kind "sdxl" only; {self.name} runs without guidance: set it to 0')
        steps = _as_tuple(self.steps)
        if not steps or any(isinstance(n, bool) or n not in STEP_CHOICES for n in steps):
            raise ValueError(
                f"model.steps must be a non-empty list of {', '.join(map(str, STEP_CHOICES))}, "
                f"not {self.steps!r}"
            )
        object.__setattr__(self, "steps", tuple(sorted(set(steps))))  # type: ignore[type-var]
        if self.device not in DEVICES:
            raise ValueError(f"model.device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        for key in ("compile", "cuda_graphs", "channels_last", "fuse_qkv", "dedupe_prompts"):
            _flag(key, getattr(self, key))
        _one_of("compile_mode", self.compile_mode, COMPILE_MODES)
        _one_of("attention", self.attention, ATTENTION)
        _one_of("vae_decode", self.vae_decode, VAE_DECODE)
        _one_of("quantize", self.quantize, QUANTIZE)
        if self.cuda_graphs and not self.compile:
            raise ValueError("model.cuda_graphs needs model.compile = true (graphs are captured per compiled shape)")
        sizes = _as_tuple(self.warmup_sizes)
        bad = [s for s in sizes if not isinstance(s, str) or s not in ASPECT_RATIOS]
        if bad:
            raise ValueError(
                f"model.warmup_sizes must be a list of aspect ratios ({', '.join(ASPECT_RATIOS)}), "
                f"not {bad[0]!r}"
            )
        object.__setattr__(self, "warmup_sizes", tuple(dict.fromkeys(sizes)))
        batches = _as_tuple(self.warmup_batch_sizes)
        if not batches or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_WARMUP_BATCH for n in batches
        ):
            raise ValueError(
                f"model.warmup_batch_sizes must be a non-empty list of batch sizes from 1 to "
                f"{MAX_WARMUP_BATCH}, not {self.warmup_batch_sizes!r}"
            )
        object.__setattr__(self, "warmup_batch_sizes", tuple(sorted(set(batches))))  # type: ignore[type-var]
        if self.compile_cache_dir is not None and not isinstance(self.compile_cache_dir, str):
            object.__setattr__(self, "compile_cache_dir", str(self.compile_cache_dir))


def check_speed_options(config: ModelConfig, device: torch.device) -> None:
    """Refuse options this device cannot honour; raises ModelUnavailable naming the key."""
    cuda_only = []
    if config.cuda_graphs:
        cuda_only.append("model.cuda_graphs = true")
    if config.attention == "flash":
        cuda_only.append('model.attention = "flash"')
    if config.quantize != "none":
        cuda_only.append(f'model.quantize = "{config.quantize}"')
    if cuda_only and device.type != "cuda":
        raise ModelUnavailable(
            f"{', '.join(cuda_only)} needs a CUDA GPU, but the model runs on {device.type}; "
            f"remove {'it' if len(cuda_only) == 1 else 'them'} from [model] (see docs/operator/scale-out.md, 'Speed options')."
        )
    if config.quantize == "fp8" and torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise ModelUnavailable(
            f'model.quantize = "fp8" needs a GPU with FP8 support (compute capability 8.9+, e.g. '
            f'L4, L40, H100, H200); {name} has none. Use "int8" or "none".'
        )
    if config.quantize != "none":
        try:
            import torchao  # noqa: F401
        except ImportError:
            raise ModelUnavailable(
                f'model.quantize = "{config.quantize}" needs torchao: pip install "imagine-bot[quantize]" '
                f'(or pip install torchao), or set model.quantize = "none".'
            ) from None


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
            "(see docs/operator/install.md) or set model.device = \"auto\"."
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
