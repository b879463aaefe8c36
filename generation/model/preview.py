"""Live previews: what the image is becoming between denoising steps, decoded by the tiny SDXL autoencoder.

    PreviewSettings   the ``[preview]`` table: on/off, every how many steps, which autoencoder, size
    Previewer         TAESD-XL (diffusers' ``AutoencoderTiny``, ``madebyollin/taesdxl``, a few MB)
                      on the pipeline's device: latents -> small RGB images, timed
    with_previews     a pipeline loader that attaches a Previewer (module-level: picklable for Ray)
    preview_jpeg      one job's preview images as one small JPEG (a 2-column grid for several)
    step_callback     the pipeline's ``callback_on_step_end``: progress, previews, stopping between steps
    denoised          the scheduler's estimate of the finished latents after each step (what a preview shows)

The pipeline (:mod:`generation.model.pipeline`) calls :meth:`Previewer.decode` from its step
callback (``callback_on_step_end``) on the worker thread, between two steps, every
``every_steps`` steps but the last (the final image follows it at once). It decodes the
scheduler's estimate of the finished latents at that step (:func:`denoised`), not the noisy
latents themselves: early previews show the picture forming, blurry, rather than noise. The
decode reads tensors and touches no random generator, so the final image is the same with
previews on and off. What it costs is the decode itself: :attr:`Previewer.seconds` adds it up
(``bench/preview_bench.py`` measures it).
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generation.core.batch import BatchInterrupted, StepCallback

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

__all__ = ["PREVIEW_SUBDIR", "PreviewSettings", "Previewer", "build_tiny_preview_vae", "denoised", "load_previewer",
           "preview_jpeg", "step_callback", "with_previews"]

logger = logging.getLogger(__name__)

PREVIEW_SUBDIR = "preview_vae"  # where `imagine-bot download` puts the autoencoder, in the model folder


@dataclass(frozen=True)
class PreviewSettings:
    """The ``[preview]`` table: live previews while an image is made."""

    enabled: bool = True
    every_steps: int = 2  # a preview after every this many denoising steps (never after the last)
    vae: str = "madebyollin/taesdxl"  # the tiny autoencoder: a Hub repository or a local folder
    size: int = 256  # the longer side of one preview image, in pixels

    def __post_init__(self) -> None:
        if isinstance(self.every_steps, bool) or not isinstance(self.every_steps, int) or self.every_steps < 1:
            raise ValueError(f"preview.every_steps must be a whole number of at least 1, not {self.every_steps!r}")
        if not 32 <= self.size <= 1024:
            raise ValueError(f"preview.size must be from 32 to 1024 pixels, not {self.size}")
        if not self.vae.strip():
            raise ValueError('preview.vae must name the tiny autoencoder, e.g. "madebyollin/taesdxl"')


def build_tiny_preview_vae(seed: int = 0) -> Any:
    """An ``AutoencoderTiny`` of the real class with small random weights (latents 1/8 of the image,
    like TAESD-XL), for the tiny model: no download."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                           num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1)).eval()


class Previewer:
    """Decodes latents into small preview images with a tiny autoencoder; adds up what it costs."""

    def __init__(self, vae: Any, settings: PreviewSettings) -> None:
        self.vae = vae
        self.settings = settings
        self.every_steps = settings.every_steps
        self.seconds = 0.0  # decode time so far (worker thread), for the bench and the logs
        self.decodes = 0

    def due(self, step: int, total: int) -> bool:
        """Whether step ``step`` (1-based) of ``total`` gets a preview: every ``every_steps``,
        never the last (its final image follows at once)."""
        return step < total and step % self.every_steps == 0

    def decode(self, latents: torch.Tensor) -> list[Image]:
        """One small RGB image per latent, the longer side about ``settings.size``: the latents are
        scaled down (area) to 1/8 of that first, so the decode costs the preview's pixels only."""
        import torch
        from PIL import Image as PILImage

        started = time.perf_counter()
        param = next(self.vae.parameters())
        with torch.inference_mode():
            latents = latents.to(param.device, param.dtype)
            height, width = latents.shape[-2:]
            scale = self.settings.size / (8 * max(height, width))
            if scale < 1:  # decode at the preview's size, not the image's: far less work at 1024²
                size = (max(1, round(height * scale)), max(1, round(width * scale)))
                latents = torch.nn.functional.interpolate(latents, size=size, mode="area")
            pixels = self.vae.decode(latents).sample.float()
            rgb = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        images = [PILImage.fromarray(row) for row in rgb]
        self.seconds += time.perf_counter() - started
        self.decodes += 1
        return images


def preview_jpeg(images: Sequence[Image], quality: int = 70) -> bytes:
    """One job's preview images as one JPEG: the image, or a 2-column grid of them."""
    from PIL import Image as PILImage

    if len(images) == 1:
        picture = images[0]
    else:
        width = max(i.width for i in images)
        height = max(i.height for i in images)
        columns = 2
        picture = PILImage.new("RGB", (columns * width, math.ceil(len(images) / columns) * height))
        for n, image in enumerate(images):
            picture.paste(image, ((n % columns) * width, (n // columns) * height))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@contextmanager
def denoised(scheduler: Any, wanted: bool = True) -> Iterator[Callable[[], Any]]:
    """While the block runs, the scheduler's estimate of the finished latents after each step
    (``pred_original_sample`` of its ``step``: the Euler schedulers SDXL uses give it): what the
    image is becoming, which a preview shows instead of the noise still in the latents. Read only:
    ``step``'s result is passed on as it is. Yields a function returning the latest (None before
    the first step, or for a scheduler that gives none)."""
    latest: list[Any] = [None]
    if not wanted:
        yield lambda: None
        return
    own = vars(scheduler).get("step")  # an instance attribute already there (none normally)
    original = scheduler.step

    def step(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        latest[0] = out[1] if isinstance(out, tuple) and len(out) > 1 else getattr(out, "pred_original_sample", None)
        return out

    scheduler.step = step
    try:
        yield lambda: latest[0]
    finally:
        if own is None:
            del scheduler.step  # the class's method again
        else:
            scheduler.step = own


def step_callback(
    on_step: StepCallback | None, should_stop: Callable[[], bool] | None, done: int, whole: int,
    previewer: Any = None, indices: list[int] | None = None, estimate: Callable[[], Any] | None = None,
) -> Callable[..., dict[str, Any]]:
    """A diffusers step-end callback for a call that starts ``done`` steps into ``whole``; with a
    ``previewer``, on the steps it is due, the call's rows (the batch's items ``indices``) are
    decoded into live previews: the scheduler's ``estimate`` of the finished latents
    (:func:`denoised`) when there is one, else the latents as they are (read only: the step's
    latents go on unchanged)."""

    def step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        step = done + i + 1
        if on_step is not None:
            previews = None
            if previewer is not None and indices and previewer.due(step, whole):
                latents = tensors["latents"]
                guess = estimate() if estimate is not None else None
                if guess is not None and getattr(guess, "shape", None) == latents.shape:
                    latents = guess
                try:
                    previews = dict(zip(indices, previewer.decode(latents)))
                except Exception:  # noqa: BLE001 - a preview is best effort; the image goes on
                    logger.warning("preview decode failed at step %d of %d", step, whole, exc_info=True)
            if previews:
                on_step(step, whole, previews)
            else:
                on_step(step, whole)
        if should_stop is not None and step < whole and should_stop():
            raise BatchInterrupted(f"stopped after step {step} of {whole}")
        return {}

    return step_end


def load_previewer(settings: PreviewSettings, *, tiny: bool, model_path: str | None, device: Any,
                   dtype: Any = None, cache_dir: str | None = None) -> Previewer | None:
    """The previewer for a model: the tiny random autoencoder for the tiny model; else the one in
    the model folder (``<model.path>/preview_vae``, where `imagine-bot download` puts it), a
    local folder named by ``preview.vae``, or the Hub repository (its cache). None (previews off,
    logged) when it cannot be loaded: a preview is never worth failing the bot for."""
    if not settings.enabled:
        return None
    try:
        if tiny:
            vae = build_tiny_preview_vae()
        else:
            from diffusers import AutoencoderTiny

            local = Path(model_path) / PREVIEW_SUBDIR if model_path else None
            source = str(local) if local is not None and (local / "config.json").is_file() else settings.vae
            vae = AutoencoderTiny.from_pretrained(source, torch_dtype=dtype, cache_dir=cache_dir)
        vae = vae.to(device)
    except Exception as err:  # noqa: BLE001 - any loading failure means "no previews", said once
        logger.warning("live previews are off: the preview autoencoder %s could not be loaded (%s); "
                       "run `imagine-bot download` or set [preview] enabled = false", settings.vae, err)
        return None
    logger.info("live previews every %d step(s) with %s", settings.every_steps, "a tiny random autoencoder"
                if tiny else settings.vae)
    return Previewer(vae.eval(), settings)


def with_previews(model: Any, *, loader: Callable[[Any], Any], settings: PreviewSettings) -> Any:
    """``loader(model)`` with a :class:`Previewer` on its ``previewer`` (module-level: picklable for Ray)."""
    pipeline = loader(model)
    if not hasattr(pipeline, "previewer"):  # not an SDXL pipeline (Flux packs its latents its own way)
        return pipeline
    vae = getattr(getattr(pipeline, "pipe", None), "vae", None)
    dtype = getattr(vae, "dtype", None)
    pipeline.previewer = load_previewer(settings, tiny=model.name.startswith("tiny"), model_path=model.path,
                                        device=getattr(pipeline, "device", "cpu"), dtype=dtype,
                                        cache_dir=getattr(model, "cache_dir", None))
    return pipeline
