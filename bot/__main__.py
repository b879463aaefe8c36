"""Command line: ``imagine-bot run``, ``imagine-bot generate "a red fox --ar 16:9" -o fox.png``,
``imagine-bot styles``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from bot.config import Config, load_config
from bot.options import parse_imagine, render, styles_text
from generation.errors import ImagineError, InvalidRequest
from generation.request import GenerationRequest, GenerationResult
from storage.files import png_with_metadata

__all__ = ["main"]

log = logging.getLogger("imagine-bot")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imagine-bot`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # transformers warns about optional extras (torchvision) we do not use
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.command == "styles":
        print(styles_text())
        return 0
    if args.command in ("loras", "stats"):  # prompt power (issue 14)
        config = load_config(args.config)
        if args.command == "loras":
            print(loras_command(config, args.model))
        else:
            print(asyncio.run(stats_command(config, args.by)))
        return 0
    try:
        config = load_config(args.config)
        if args.command == "run":
            from bot.app import run_bot

            if (config.discord or config.telegram) and not args.verbose:
                logging.getLogger().setLevel(logging.INFO)  # a server: say what it does

            asyncio.run(run_bot(config, model=args.model))
            return 0
        if args.command == "generate":
            paths = asyncio.run(generate(config, args.prompt, args.output, args.model, quiet=args.quiet))
            for path in paths:
                print(path)
            return 0
    except ImagineError as exc:
        print(f"imagine-bot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imagine-bot: interrupted", file=sys.stderr)
        return 130
    return 1


async def generate(
    config: Config, text: str, output: str | None, model: str | None, *, quiet: bool = False
) -> list[Path]:
    """Parse ``text``, run it through the queue with a progress bar, write PNGs; return paths."""
    from tqdm import tqdm

    from bot.app import engine
    from generation.queue import Cancelled, Done, Failed, Queued, Started, Step

    async with engine(config, model=model) as queue:
        caps = queue.caps
        request = parse_imagine(text, caps=caps).with_seed()
        if request.refine:  # prompt power: --refine
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
    return write_images(result, output, config.output_dir, render(request, caps))


def write_images(
    result: GenerationResult, output: str | None, default_dir: Path, canonical: str
) -> list[Path]:
    """Write one PNG per image, generation parameters in a text chunk; return the paths."""
    request = result.request
    if output is None:
        targets = [default_dir / f"imagine-{seed}.png" for seed in result.seeds]
    elif output.endswith(("/", "\\")) or Path(output).is_dir():
        targets = [Path(output) / f"imagine-{seed}.png" for seed in result.seeds]
    elif len(result.images) == 1:
        targets = [Path(output)]
    else:
        base = Path(output)
        targets = [base.with_name(f"{base.stem}-{i + 1}{base.suffix or '.png'}") for i in range(len(result.images))]
    paths = []
    for image, seed, target in zip(result.images, result.seeds, targets):
        params = {
            "command": canonical,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "style": request.style,
            "seed": seed,
            "steps": request.steps,
            "width": request.width,
            "height": request.height,
            "model": result.model,
            "loras": [[n, w] for n, w in request.loras],
            "lora_hashes": list(request.lora_hashes),
            "original_prompt": request.original_prompt,
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png_with_metadata(image, params))
        paths.append(target)
    return paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine-bot", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="make images from a prompt with /imagine flags")
    gen.add_argument("prompt", help='e.g. "a red fox in snow --ar 16:9 --seed 7 --no blur"')
    gen.add_argument("-o", "--output", help="PNG file, or a folder (default: output.dir)")
    gen.add_argument("--model", help="'tiny' (offline, random weights) or 'sdxl-lightning'")
    gen.add_argument("--config", help="config TOML (default: built-in defaults)")
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run = sub.add_parser("run", help="run the bot (the terminal chat when no chat token is set)")
    run.add_argument("--config", help="config TOML (default: built-in defaults)")
    run.add_argument("--model", help="override model.name, e.g. 'tiny' for an offline demo")
    sub.add_parser("styles", help="list the style presets for --style")
    loras = sub.add_parser("loras", help="list the LoRAs in lora.dir: names, trigger words, base model")
    loras.add_argument("--config", help="config TOML (default: built-in defaults)")
    loras.add_argument("--model", help="'tiny' checks the files against the tiny model")
    stats = sub.add_parser("stats", help="average rating and count by model, steps, style or LoRA")
    stats.add_argument("--config", help="config TOML (default: built-in defaults)")
    stats.add_argument("--by", choices=["model", "steps", "style", "lora"], help="one grouping only")
    return parser


# -- prompt power (issue 14): imagine-bot loras / stats, --refine for generate ---------------------


def loras_command(config: Config, model: str | None = None) -> str:
    """The LoRA listing (names, trigger words, base model, refused files with the reason)."""
    from generation.lora import scan_loras

    if config.lora.dir is None and not config.lora.hub:
        return "No LoRAs are configured: set lora.dir in the config."
    tiny = (model or config.model.name) == "tiny"
    return scan_loras(config.lora.dir, 64 if tiny else 2048, config.lora.hub).describe()


async def stats_command(config: Config, by: str | None) -> str:
    """Average rating and count by model version, steps, style and LoRA, from the database."""
    from storage import Database
    from storage.rating_stats import DIMENSIONS, ratings_by

    lines: list[str] = []
    async with Database.open(config.storage.database) as db:
        for name in (by,) if by else DIMENSIONS:
            groups = await ratings_by(db, name)
            lines.append(f"by {name}:")
            lines.extend(f"  {group}" for group in groups) if groups else lines.append("  (no ratings yet)")
    return "\n".join(lines)


async def refine_for_cli(config: Config, request: GenerationRequest) -> GenerationRequest:
    """``request`` with its prompt refined by [refine] model (the original when that fails)."""
    from dataclasses import replace

    from bot.safety import BlocklistChecker
    from generation.refine import PromptRefiner

    if config.refine.model is None:
        raise InvalidRequest("refine", "Prompt refinement is not set up (refine.model in the config).")
    refiner = PromptRefiner(config.refine)
    try:
        outcome = await refiner.refine(request.prompt)
    finally:
        refiner.close()
    if outcome.refined and BlocklistChecker.default().check(outcome.text, request.negative_prompt).allowed:
        print(f"refined prompt: {outcome.text}", file=sys.stderr)
        return replace(request, prompt=outcome.text, original_prompt=request.prompt)
    print(outcome.note or "the refined prompt was refused; using yours", file=sys.stderr)
    return request


if __name__ == "__main__":
    sys.exit(main())
