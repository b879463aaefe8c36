"""``imagine-bot download --model NAME``: one model of the catalogue into a local folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Config

__all__ = ["download_model"]


def download_model(config: Config, args: argparse.Namespace) -> int:
    """Fetch model ``args.model`` (a [models.NAME], or a kind) and print the lines that use it."""
    from generation.core.errors import InvalidRequest
    from generation.model.download import config_lines, download, download_pretrained
    from generation.model.entries import entry_configs, narrow
    from generation.model.model_config import TINY_KINDS

    try:
        ((name, (entry, model)),) = narrow(entry_configs(config.model, config.models), config.model, args.model).items()
    except ValueError as exc:
        raise InvalidRequest("model", str(exc)) from None
    if model.name in TINY_KINDS:
        print(f"{name} ({model.name}) is built in-process with random weights: there is nothing to download.")
        return 0
    to = Path(args.to) if args.to else Path(model.path or f"models/{name}")
    if model.name == "sdxl-lightning":
        steps = tuple(args.steps) if args.steps else tuple(model.steps)
        folder = download(to, base_repo=model.base_repo, lightning_repo=model.lightning_repo,
                          vae_repo=model.vae_repo or None, steps=steps)
        lines = config_lines(folder, steps).replace("[model]", f"[models.{name}]\nkind = \"sdxl-lightning\"")
    else:
        folder = download_pretrained(to, model.hub_repo)
        lines = f'[models.{name}]\nkind = "{model.name}"\npath = "{folder.resolve()}"'
    print(f"Downloaded {name} to {folder}. Put these lines in config.toml:\n\n{lines}")
    return 0
