"""Command line: ``imagine-bot run``, ``imagine-bot generate "a red fox --ar 16:9" -o fox.png``,
``imagine-bot styles``, ``imagine-bot keys create|list|revoke USER``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from bot.config import Config, load_config
from bot.options import parse_imagine, render, styles_text
from generation.errors import ImagineError
from generation.request import GenerationResult
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
    try:
        config = load_config(args.config)
        if args.command == "keys":
            return asyncio.run(keys_command(config, args))
        if args.command == "run":
            from bot.app import run_bot

            if (config.discord or config.telegram or config.web) and not args.verbose:
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
    keys = sub.add_parser("keys", help="API keys for the HTTP API: create, list or revoke a user's keys")
    keys.add_argument("action", choices=("create", "list", "revoke"))
    keys.add_argument("user", help='the account, as "platform:user_id", e.g. "telegram:1234" or "web:ada"')
    keys.add_argument("key_id", nargs="?", type=int, help="the key to revoke (its id from 'list')")
    keys.add_argument("--label", default="", help="a note shown in 'list'")
    keys.add_argument("--config", help="config TOML (default: built-in defaults)")
    return parser


async def keys_command(config: Config, args: argparse.Namespace) -> int:
    """``imagine-bot keys create|list|revoke USER``: straight on the database (the bot may run)."""
    from bot.service.keys import operator_create, operator_list, operator_revoke
    from storage import Database

    async with Database.open(config.storage.database) as db:
        try:
            if args.action == "create":
                key, row = await operator_create(db, args.user, args.label)
                print(f"key {row.id} for {args.user} (shown only now; store it safely):\n{key}")
            elif args.action == "list":
                for row in await operator_list(db, args.user):
                    state = f"revoked {row.revoked_at[:16]}" if row.revoked_at else "live"
                    print(f"{row.id}\t{row.prefix}…\t{state}\tcreated {row.created_at[:16]}\t{row.label}")
            elif args.key_id is None:
                print("imagine-bot: keys revoke USER KEY_ID (the id from 'keys list')", file=sys.stderr)
                return 2
            elif not await operator_revoke(db, args.user, args.key_id):
                print(f"imagine-bot: {args.user} has no live key {args.key_id}", file=sys.stderr)
                return 1
            else:
                print(f"revoked key {args.key_id} of {args.user}")
        except ValueError as exc:
            print(f"imagine-bot: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
