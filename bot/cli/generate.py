"""``imagine-bot generate``: one request through the queue, PNGs that never overwrite a file."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bot.config import Config
from bot.options import parse_imagine, render
from generation.core.errors import InvalidRequest
from generation.core.request import GenerationRequest, GenerationResult, ModelCaps
from generation.tools.inputs import MAX_UPLOAD_BYTES, Upload, check_upload, fit_image
from storage.files import png_with_metadata

if TYPE_CHECKING:
    from generation.model.lora import LoraCatalog

__all__ = ["Planned", "generate", "plan", "refine_for_cli", "targets_for", "write_images"]


class Planned(NamedTuple):
    """A prompt parsed and checked against the model it names, before that model loads."""

    text: str
    model: str | None
    request: GenerationRequest
    caps: ModelCaps
    loras: LoraCatalog | None
    upload: Upload | None = None
    strength: float | None = None


def plan(config: Config, text: str, model: str | None, *, image: str | None = None,
         strength: float | None = None) -> Planned:
    """Parse ``text`` and check it against what the model will accept (InvalidRequest if not):
    a typo must not cost a (minutes-long) model load. ``image`` (a local picture to start from)
    is read and checked here too; ``strength`` is how much of it changes."""
    from generation.model.entries import entry_configs, narrow
    from generation.model.lora import catalog_for
    from generation.model.pipeline import expected_caps

    try:  # --model: a [models.NAME] (its default when not given) or a kind such as "tiny-flux"
        configs = narrow(entry_configs(config.model, config.models), config.model, model)
    except ValueError as exc:
        raise InvalidRequest("model", str(exc)) from None
    entry, model_config = next(((e, c) for e, c in configs.values() if e.default), next(iter(configs.values())))
    loras = catalog_for(config.lora, model_config.name)
    caps = replace(expected_caps(model_config, loras.caps_entries if loras is not None else ()), name=entry.name)
    model = model or (entry.name if config.models else None)
    upload = _read_upload(image) if image is not None else None
    request = parse_imagine(text, caps=caps, strength=strength, image_size=upload.size if upload else None)
    return Planned(text, model, request.with_seed(), caps, loras, upload, strength)


async def generate(
    config: Config, planned: Planned, output: str | None, *, quiet: bool = False
) -> list[Path]:
    """Run a planned request through the queue with a progress bar, write PNGs; return paths.

    A planned picture to start from (``--image``, checked and fitted as an upload to the bot is:
    :mod:`generation.tools.inputs`) is fitted to the request's size while it runs.
    """
    from tqdm import tqdm

    from bot.app import engine
    from generation.scheduling.events import Cancelled, Done, Failed, Queued, Started, Step

    request, caps, upload = planned.request, planned.caps, planned.upload
    async with engine(config, model=planned.model, loras=planned.loras) as queue:
        with tempfile.TemporaryDirectory() as scratch:  # the fitted picture, while it runs
            if queue.caps != caps:  # a model.path folder may serve other step counts than configured
                caps = queue.caps
                request = parse_imagine(planned.text, caps=caps, strength=planned.strength,
                                        image_size=upload.size if upload else None).with_seed(request.seed)
            if upload is not None:  # the fitted picture, where the pipeline reads it
                fitted = Path(scratch, "image.png").resolve()
                fit_image(upload.image, (request.width, request.height)).save(fitted)
                request = replace(request, init_image=str(fitted))
            if request.refine:
                request = await refine_for_cli(config, request)
            job = queue.submit(request)
            bar = tqdm(total=request.steps, unit="step", disable=quiet, file=sys.stderr, leave=False)
            try:
                async for event in job.events():
                    if isinstance(event, Queued):
                        bar.set_description(f"queued #{event.position}")
                    elif isinstance(event, Started):
                        bar.set_description(f"{request.count} image(s)")
                    elif isinstance(event, Step):
                        bar.n = event.step
                        bar.refresh()
                    elif isinstance(event, (Done, Failed, Cancelled)):
                        break
            finally:
                bar.close()
            result = await job.result()
            model_hash = getattr(getattr(queue, "executor", None), "checkpoint_hash", None)
    return write_images(result, output, config.output_dir, render(request, caps), model_hash=model_hash)


def _read_upload(path: str) -> Upload:
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidRequest("image", f"There is no file {path!r}; give the path of a PNG, JPEG or WebP picture.")
    if file.stat().st_size > MAX_UPLOAD_BYTES:
        raise InvalidRequest("image", f"{path} is over the {MAX_UPLOAD_BYTES / 1e6:g} MB limit for a picture to "
                                      "start from; use a smaller one.")
    return check_upload(file.read_bytes())


async def refine_for_cli(config: Config, request: GenerationRequest) -> GenerationRequest:
    """``request`` with its prompt refined by ``[refine] model``; the original (and a line on
    stderr saying why) when refinement fails, times out, or the configured prompt check refuses it."""
    from bot.app import prompt_checker
    from bot.service.refining import refine_checked
    from generation.prompts.refine import PromptRefiner

    if config.refine.model is None:
        raise InvalidRequest("refine", "Prompt refinement is not set up (refine.model in the config).")
    refiner = PromptRefiner(config.refine)
    try:
        refined, note = await refine_checked(refiner, prompt_checker(config), request)
    finally:
        refiner.close()
    print(note if refined is not request else f"imagine-bot: {note}", file=sys.stderr)
    return refined


def targets_for(result: GenerationResult, output: str | None, default_dir: Path) -> list[Path]:
    """Where each image would go before avoiding existing files."""
    if output is None:
        return [default_dir / f"imagine-{seed}.png" for seed in result.seeds]
    if output.endswith(("/", "\\")) or Path(output).is_dir():
        return [Path(output) / f"imagine-{seed}.png" for seed in result.seeds]
    if len(result.images) == 1:
        return [Path(output)]
    base = Path(output)
    return [base.with_name(f"{base.stem}-{i + 1}{base.suffix or '.png'}") for i in range(len(result.images))]


def _create_new(target: Path, data: bytes) -> Path:
    """Write ``data`` to ``target``, or to ``<stem>-1``, ``-2``, … when taken; never overwrite."""
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = target, 0
    while True:
        try:
            with candidate.open("xb") as file:  # exclusive: a file made meanwhile is not replaced
                file.write(data)
            return candidate
        except FileExistsError:
            n += 1
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")


def write_images(
    result: GenerationResult,
    output: str | None,
    default_dir: Path,
    canonical: str,
    *,
    model_hash: str | None = None,
) -> list[Path]:
    """Write one PNG per image with its parameters (A1111 text + our JSON); return the paths."""
    request = result.request
    styled, styled_negative = request.styled_prompts
    paths = []
    for image, seed, target in zip(result.images, result.seeds, targets_for(result, output, default_dir)):
        params = {
            **request.to_dict(),
            "command": canonical,
            "seed": seed,
            "model": result.model,
            "model_hash": model_hash,
            "styled_prompt": styled,
            "styled_negative_prompt": styled_negative,
        }
        paths.append(_create_new(target, png_with_metadata(image, params)))
    return paths
