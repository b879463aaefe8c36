"""Load SDXL-Lightning weights from a local diffusers directory or the Hugging Face Hub.

Each step count has its own UNet checkpoint (``sdxl_lightning_{n}step_unet.safetensors``); both
loaders return the base pipeline and a map ``steps -> UNet``. Every failure becomes
:class:`~generation.core.errors.ModelUnavailable` with a message that says what to do.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from generation.core.errors import ModelUnavailable

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    from generation.model.model_config import ModelConfig

__all__ = ["HOW_TO_GET", "WAYS_ON", "file_hash", "go_offline", "lightning_checkpoint", "lightning_unet_filename",
           "load_hub", "load_local", "load_pretrained", "reason"]

logger = logging.getLogger(__name__)

HOW_TO_GET = (
    "Download them on a machine with network (see README 'Getting the model'), or set model.path "
    "in config to a local copy; `make demo` runs offline with the tiny model."
)
WAYS_ON = (
    "Two ways on: `imagine-bot download` fetches them once (about 7 GB, needs the network; or "
    "`make download`), or `make demo` runs the bot offline on the tiny demo model (random weights, "
    "nothing to download)."
)
_TRUE = ("1", "true", "yes", "on")
_offline_because: str | None = None  # why go_offline() was called: the Hub could not be reached


def go_offline(because: str) -> None:
    """Load from the Hugging Face cache only, because the Hub is unreachable (``because`` says why).

    The loader's error then names that reason, never ``HF_HUB_OFFLINE``, which the user did not set.
    """
    global _offline_because
    _offline_because = because
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at import, which has happened


def _offline_when_unreachable() -> None:
    """Probe the Hub once (DNS, then TCP): unreachable, load from the cache only, at once,
    instead of minutes of retries that end in the same error."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return
    from generation.model.hub import unreachable

    why = unreachable()
    if why:
        logger.info("the Hugging Face Hub is unreachable (%s): cached weights only", why)
        go_offline(why)


def _user_set_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) came from the environment, not from go_offline()."""
    if _offline_because is not None:
        return False
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _missing_weights(config: ModelConfig, err: BaseException) -> str:
    """The message for weights that are neither at model.path nor in the cache, and why."""
    import huggingface_hub.constants

    cache = config.cache_dir or huggingface_hub.constants.HF_HUB_CACHE
    if _user_set_offline():
        why = " (HF_HUB_OFFLINE is set in your environment, so nothing is fetched: unset it to let the bot fetch them.)"
    elif _offline_because is not None:
        why = f" (The Hub is unreachable: {_offline_because}.)"
    else:
        why = f" (The Hub could not be reached: {reason(err).rstrip('.')}.)"
    return (
        f"The SDXL-Lightning weights are not on this machine: model.path is not set and the "
        f"Hugging Face cache ({cache}) does not have them. {WAYS_ON}{why}"
    )


def _is_missing(err: BaseException) -> bool:
    """``err`` means the files are not in the cache and could not be fetched."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    if constants.is_offline_mode():
        return True
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, LocalEntryNotFoundError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def lightning_unet_filename(steps: int) -> str:
    """File name of the SDXL-Lightning UNet checkpoint for ``steps`` steps."""
    return f"sdxl_lightning_{steps}step_unet.safetensors"


def load_local(
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
        # `imagine-bot download` fetches the base's fp16 files (model.fp16.safetensors)
        variant = "fp16" if any(root.glob("text_encoder*/*fp16*.safetensors")) else None
        pipe = StableDiffusionXLPipeline.from_pretrained(
            str(root), **_dtype_kwarg(dtype), variant=variant, add_watermarker=False, **extra
        )
    except ModelUnavailable:
        raise
    except Exception as err:
        raise ModelUnavailable(
            f"Could not load the model from model.path {str(root)!r} ({reason(err)}); check that it "
            f"was written by StableDiffusionXLPipeline.save_pretrained (see README 'Getting the model')."
        ) from err
    for n in missing:
        logger.info("%s: no %s, its own unet serves %d steps", root, lightning_unet_filename(n), n)
        unets[n] = pipe.unet
    return pipe, unets


def load_hub(
    config: ModelConfig, dtype: torch.dtype
) -> tuple[StableDiffusionXLPipeline, dict[int, UNet2DConditionModel]]:
    """Base pipeline from ``base_repo``, one Lightning UNet per step from ``lightning_repo``."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from huggingface_hub import hf_hub_download

    _offline_when_unreachable()
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
        if _is_missing(err):
            raise ModelUnavailable(_missing_weights(config, err)) from err
        raise ModelUnavailable(
            f"Could not load SDXL-Lightning weights from the Hugging Face Hub ({reason(err)}). {HOW_TO_GET}"
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
            f"{file} does not fit the base model's UNet ({reason(err)}); is it an SDXL-Lightning "
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


def reason(err: BaseException) -> str:
    """The first line of an exception, short enough for a message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- other kinds (issue 25): SDXL-Turbo, any SDXL checkpoint, FLUX.1-schnell -----------------------


def load_pretrained(pipeline_class: str, config: ModelConfig, dtype: torch.dtype,
                    main: str) -> tuple[Any, str, str | None]:
    """``pipeline_class.from_pretrained`` of model.path, else model.repo (or the kind's default
    repo): (pipeline, model id, SHA-256 of the ``main`` component's weights file)."""
    import diffusers

    cls = getattr(diffusers, pipeline_class)
    source = str(Path(config.path).expanduser()) if config.path else config.hub_repo
    if config.path and not (Path(source) / "model_index.json").is_file():
        raise ModelUnavailable(f"model path {source!r} is not a diffusers pipeline folder (no model_index.json); "
                               f"`imagine-bot download --model NAME` makes one.")
    if not config.path:
        _offline_when_unreachable()
    extra: dict[str, Any] = {"add_watermarker": False} if "XL" in pipeline_class else {}
    try:
        pipe = cls.from_pretrained(source, **_dtype_kwarg(dtype), cache_dir=config.cache_dir, **extra)
    except Exception as err:
        if not config.path and _is_missing(err):
            raise ModelUnavailable(f"The weights of {source} are not on this machine and cannot be fetched now "
                                   f"({reason(err)}); run `imagine-bot download --model NAME` where there is "
                                   f"network, or set path.") from err
        raise ModelUnavailable(f"Could not load {config.name} from {source} ({reason(err)}).") from err
    model_id = f"local:{Path(source).name}" if config.path else source
    return pipe, model_id, file_hash(_weights_file(getattr(pipe, main, None)))


def lightning_checkpoint(config: ModelConfig) -> str | None:
    """SHA-256 of the SDXL-Lightning UNet file of the first configured step count (its version),
    from model.path or the Hugging Face cache; None when it cannot be found without the network."""
    steps = config.steps[0]
    if config.path is not None:
        return file_hash(_find_unet_file(Path(config.path).expanduser(), steps))
    try:
        from huggingface_hub import hf_hub_download

        found = hf_hub_download(config.lightning_repo, lightning_unet_filename(steps), cache_dir=config.cache_dir,
                                local_files_only=True)
    except Exception:  # not cached: the version stays unknown
        return None
    return file_hash(Path(found))


_HASHES: dict[tuple[str, int, float], str] = {}


def file_hash(path: Path | None) -> str | None:
    """SHA-256 of a file (A1111's "Model hash" is its first 10 hex digits); None for no file."""
    if path is None or not path.is_file():
        return None
    import hashlib

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _weights_file(component: Any) -> Path | None:
    folder = getattr(component, "config", {}).get("_name_or_path") if component is not None else None
    if not folder or not Path(folder).is_dir():
        return None
    files = sorted(Path(folder).glob("*.safetensors"))
    return files[0] if files else None
