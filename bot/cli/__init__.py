"""Command line: ``imagine-bot run | generate | download | health | keys | styles | loras | stats |
models | eval``.

Every mistake an operator can make (a bad flag or config value, a missing folder, an unwritable
data dir, no network) ends in one ``imagine-bot: …`` line on stderr and exit status 2; ``-v``
adds the traceback to the log. ``run`` and ``generate`` read ``./config.toml`` when it exists.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, NoReturn

from generation.core.errors import ImagineError

__all__ = ["main"]

log = logging.getLogger("imagine-bot")

DEFAULT_CONFIG = Path("config.toml")
TINY_KINDS = ("tiny", "tiny-turbo", "tiny-flux")  # built in-process: never the Hub
# Third-party deprecation noise that an operator can do nothing about (tests still see it).
_QUIET_MODULES = r"(discord|diffusers|transformers|huggingface_hub|torch|apscheduler|nudenet|onnxruntime)(\..*)?$"


class UsageError(ImagineError):
    """A command-line mistake."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + error
        self.exit(2, f"imagine-bot: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imagine-bot`` console script."""
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return _dispatch(args)
    except ImagineError as exc:
        log.debug("details", exc_info=True)
        print(f"imagine-bot: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder or file the operator named: say which, no traceback
        log.debug("details", exc_info=True)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"imagine-bot: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imagine-bot: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "styles":
        from bot.options import styles_text

        print(styles_text())
        return 0
    if args.command == "health":
        return _health(args)
    from bot.config import load_config

    config = load_config(_config_path(args.config))
    if getattr(args, "model", None) is not None and args.command != "download":
        from generation.model.entries import entry_configs, narrow

        try:  # a [models.NAME] of the config, or a kind ("tiny", "tiny-flux", "sdxl-lightning", ...)
            narrow(entry_configs(config.model, config.models), config.model, args.model)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.command == "download":
        return _download(args, config)
    if args.command == "keys":
        from bot.cli.keys import keys_command

        return asyncio.run(keys_command(config, args))
    if args.command == "web-link":
        from bot.cli.weblink import web_link_command

        return asyncio.run(web_link_command(config, args))
    if args.command in ("loras", "stats"):
        from bot.cli.reports import loras_command, stats_command

        if args.command == "loras":
            print(loras_command(config, args.model))
        else:
            print(asyncio.run(stats_command(config, args.by, max(0, args.comments))))
        return 0
    if args.command == "models":
        from bot.cli.reports import models_command

        print(asyncio.run(models_command(config, args.action, args.names)))
        return 0
    planned = None
    if args.command == "generate":  # the prompt first: a typo must not wait for the network or the model
        from bot.cli.generate import plan

        planned = plan(config, args.prompt, args.model, image=args.image, strength=args.strength)
    _check_hub(config, args.model)
    if args.command == "eval":  # torchmetrics and the extractors load inside, never at start-up
        from bot.cli.evaluate import eval_command

        return eval_command(config, args)
    if args.command == "run":
        from bot.app import run_bot

        writable(config.storage.data_dir, "storage.data_dir")
        if (config.discord or config.telegram or config.web) and not args.verbose:
            logging.getLogger().setLevel(logging.INFO)  # a server: say what it does
        asyncio.run(run_bot(config, model=args.model))
        return 0
    from bot.cli.generate import generate

    writable(_output_folder(args.output, config.output_dir), "the output folder")
    if planned is None:  # pragma: no cover - only "generate" gets here, and it planned above
        raise RuntimeError(f"nothing planned for the command {args.command!r}")
    for path in asyncio.run(generate(config, planned, args.output, quiet=args.quiet)):
        print(path)
    return 0


def _config_path(given: str | None) -> Path | None:
    """``--config``, else ./config.toml when it exists, else None (built-in defaults)."""
    if given is not None:
        return Path(given)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _output_folder(output: str | None, default: Path) -> Path:
    if output is None:
        return default
    if output.endswith(("/", "\\")) or Path(output).is_dir():
        return Path(output)
    return Path(output).parent if str(Path(output).parent) else Path(".")


def writable(folder: Path, what: str) -> None:
    """Create ``folder`` and prove a file can be written there; UsageError naming ``what`` if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(
            f"{what} {str(folder)!r} is not writable ({exc.strerror or exc}); create it with the "
            f"right owner or point {what} elsewhere."
        ) from None


def _check_hub(config: object, model: str | None) -> None:
    """With the Hub model and no network, fail over to offline mode and remember why."""
    model_config = getattr(config, "model")
    if (model or model_config.name) in TINY_KINDS or model_config.path is not None:
        return
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    from generation.model.download import unreachable

    reason = unreachable()
    if reason:  # cached weights still load; otherwise the loader says at once what is missing
        from generation.model.loader import go_offline

        log.debug("the Hugging Face Hub is unreachable (%s): cached weights only", reason)
        go_offline(reason)


def _download(args: argparse.Namespace, config: object) -> int:
    if args.eval:  # the evaluation's extractors, not the model weights
        from generation.model.download import hub_endpoint, unreachable
        from generation.quality.clip_score import EVAL_CLIP_MODEL
        from generation.quality.download import download_eval

        reason = unreachable(hub_endpoint())
        if reason:
            raise UsageError(f"Cannot reach {hub_endpoint()}: {reason}. Check the network, or set HF_ENDPOINT.")
        clip = getattr(config, "eval").clip_model
        for line in download_eval(clip if clip and clip != "tiny" else EVAL_CLIP_MODEL):
            print(line)
        return 0
    from generation.model.download import config_lines, download

    if args.model:  # one model of the catalogue (or a kind): its own repository
        from bot.cli.models import download_model

        return download_model(config, args)
    model = getattr(config, "model")
    steps = tuple(args.steps) if args.steps else tuple(model.steps)
    to = Path(args.to) if args.to else Path(model.path or "models/sdxl-lightning")
    preview = getattr(config, "preview")  # live previews' tiny autoencoder, unless off or a local folder
    preview_repo = preview.vae if preview.enabled and not Path(preview.vae).expanduser().is_dir() else None
    folder = download(to, base_repo=model.base_repo, lightning_repo=model.lightning_repo,
                      vae_repo=model.vae_repo or None, steps=steps, preview_repo=preview_repo)
    print(f"Downloaded to {folder}. Put these lines in config.toml:\n\n{config_lines(folder, steps)}")
    _download_upscaler(getattr(config, "upscale"))
    return 0


def _download_upscaler(upscale: Any) -> None:
    """upscale.model as a Hub file: fetched to where the bot looks for it (models/upscalers/)."""
    target = upscale.model_path(Path("models"))
    if target is None:
        return
    if target.is_file():
        print(f"\nThe upscaler is here: {target}")
        return
    from generation.model.download import download_upscaler

    print(f"\nThe upscaler (upscale.model) is in {download_upscaler(upscale.model, target)}")


def _health(args: argparse.Namespace) -> int:
    """Exit 0 while the running bot is healthy (cheap: no torch, no config checks).

    ``--url``, or [web] enabled in the config: its ``/healthz`` must answer 200. Otherwise (or
    with ``--data-dir``) the heartbeat file must be fresh.
    """
    import tomllib

    from bot.health import HealthError, check, check_http, healthz_url

    data_dir = Path(args.data_dir) if args.data_dir else None
    path = _config_path(args.config)
    data: dict[str, Any] = {}
    if path is not None and (data_dir is None or args.url is None):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
    url = args.url or (None if data_dir is not None else healthz_url(data.get("web", {})))
    try:
        if url is not None:
            print(check_http(url, timeout=args.timeout))
        else:
            data_dir = data_dir or Path(data.get("storage", {}).get("data_dir", "data"))
            print(check(data_dir, max_age_s=args.max_age))
    except HealthError as exc:
        print(f"imagine-bot: unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


def _setup_logging(verbose: bool) -> None:
    """One handler (the root's) for every library, so no line is printed twice."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    if verbose:
        return
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=_QUIET_MODULES)
    # transformers/diffusers: their own handler, not propagated; warn only about real trouble
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # APScheduler says INFO for each job it adds and for starting: eight lines at every start
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # huggingface_hub adds a handler AND propagates to the root: every line twice. Keep the root's.
    import huggingface_hub.utils.logging  # noqa: F401  (creates its handler now, so it can go)

    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        hub.removeHandler(handler)
    hub.propagate = True


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imagine-bot", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    config_help = "config TOML (default: ./config.toml if present, else built-in defaults)"
    gen = sub.add_parser("generate", help="make images from a prompt with /imagine flags")
    gen.add_argument("prompt", help='e.g. "a red fox in snow --ar 16:9 --seed 7 --no blur"')
    gen.add_argument("-o", "--output", help="PNG file, or a folder (default: output.dir); never overwrites")
    gen.add_argument("--model", help="a [models.NAME] of the config, or a kind: 'tiny', 'tiny-flux', 'tiny-turbo' "
                                     "(offline, random weights), 'sdxl-lightning', 'sdxl-turbo', 'flux-schnell'")
    gen.add_argument("--config", help=config_help)
    gen.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    gen.add_argument("--image", metavar="PATH", help="start from this picture (img2img; PNG, JPEG or WebP)")
    gen.add_argument("--strength", type=float, metavar="S",
                     help="with --image: how much of it changes, 0.1 to 1 (default 0.6)")
    run = sub.add_parser("run", help="run the bot (the terminal chat when no chat token is set)")
    run.add_argument("--config", help=config_help)
    run.add_argument("--model", help="serve only this model: a [models.NAME], or a kind, e.g. 'tiny' for an "
                                     "offline demo")
    down = sub.add_parser("download", help="fetch the SDXL-Lightning weights into a local folder")
    down.add_argument("--steps", type=int, nargs="+", choices=(1, 2, 4, 8), metavar="N",
                      help="step checkpoints to fetch: 1 2 4 8 (default: model.steps)")
    down.add_argument("--to", help="the folder (default: model.path, else models/sdxl-lightning)")
    down.add_argument("--model", metavar="NAME", help="fetch one model of [models.NAME] (or a kind such as "
                                                       "'flux-schnell') into models/NAME instead")
    down.add_argument("--eval", action="store_true", help="fetch the evaluation's extractors instead "
                      "(the CLIP model and the FID Inception weights) for `imagine-bot eval`")
    down.add_argument("--config", help=config_help)
    health = sub.add_parser("health", help="exit 0 while the running bot is alive (for HEALTHCHECK): "
                            "GET /healthz when [web] is enabled, else the heartbeat file")
    health.add_argument("--config", help=config_help)
    health.add_argument("--data-dir", help="check the heartbeat in this storage.data_dir (default: from the config)")
    health.add_argument("--max-age", type=float, default=60.0, help="seconds a heartbeat stays fresh")
    health.add_argument("--url", help="check this /healthz URL (default: from [web] listen and port when enabled)")
    health.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for /healthz")
    sub.add_parser("styles", help="list the style presets for --style")
    from bot.cli.keys import add_parser as add_keys

    add_keys(sub, config_help)
    from bot.cli.weblink import add_parser as add_web_link

    add_web_link(sub, config_help)
    from bot.cli.reports import add_parsers as add_reports

    add_reports(sub, config_help)
    from bot.cli.evaluate import add_parser as add_eval

    add_eval(sub, config_help)
    return parser
