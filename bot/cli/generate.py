"""``imagine-bot generate``: one request through the queue, PNGs that never overwrite a file."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.config import Config
from bot.options import parse_imagine, render
from generation.core.errors import InvalidRequest
from generation.core.request import GenerationRequest, GenerationResult
from storage.files import png_with_metadata

__all__ = ["generate", "refine_for_cli", "targets_for", "write_images"]


async def generate(
    config: Config, text: str, output: str | None, model: str | None, *, quiet: bool = False
) -> list[Path]:
    """Parse ``text``, run it through the queue with a progress bar, write PNGs; return paths."""
    from tqdm import tqdm

    from bot.app import engine
    from generation.scheduling.events import Cancelled, Done, Failed, Queued, Started, Step

    async with engine(config, model=model) as queue:
        caps = queue.caps
        request = parse_imagine(text, caps=caps).with_seed()
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
