"""``imagine-bot loras``, ``stats`` and ``models``: what is installed, how it rates, how it measures."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Config

__all__ = ["add_parsers", "loras_command", "models_command", "stats_command"]


def add_parsers(sub: argparse._SubParsersAction, config_help: str) -> None:  # type: ignore[type-arg]
    loras = sub.add_parser("loras", help="list the LoRAs of lora.dir: names, trigger words, base model")
    loras.add_argument("--config", help=config_help)
    loras.add_argument("--model", help="'tiny' checks the files against the tiny model")
    stats = sub.add_parser("stats", help="average rating and count by model, steps, style or LoRA")
    stats.add_argument("--config", help=config_help)
    stats.add_argument("--by", choices=["model", "steps", "style", "lora"], help="one grouping only")
    models = sub.add_parser("models", help="the model versions the bot has run, with their newest "
                                           "`imagine-bot eval` figures")
    models.add_argument("--config", help=config_help)
    stats.add_argument("--comments", type=int, default=10, metavar="N",
                       help="show the newest N comments beside the ratings (0: none; default 10)")


def loras_command(config: Config, model: str | None = None) -> str:
    """The LoRA listing (names, trigger words, base model, refused files with the reason)."""
    from generation.model.lora import catalog_for

    catalog = catalog_for(config.lora, model or config.model.name)
    if catalog is None:
        return "No LoRAs are configured: set lora.dir in the config."
    return catalog.describe()


async def stats_command(config: Config, by: str | None, comments_shown: int = 10) -> str:
    """Average rating and count by model version, steps, style and LoRA, then the newest
    ``comments_shown`` comments, from the database."""
    from storage import Database
    from storage.rating_stats import DIMENSIONS, ratings_by, recent_comments

    lines: list[str] = []
    async with Database.open(config.storage.database) as db:
        for name in (by,) if by else DIMENSIONS:
            groups = await ratings_by(db, name)
            lines.append(f"by {name}:")
            lines.extend(f"  {group}" for group in groups) if groups else lines.append("  (no ratings yet)")
        comments = await recent_comments(db, comments_shown)
    if comments_shown and comments:
        lines.append("comments (newest first):")
        lines.extend(f"  {comment}" for comment in comments)
    return "\n".join(lines)


async def models_command(config: Config) -> str:
    """Each model version (most recently seen first) with the figures of its newest evaluation."""
    from storage import Database
    from storage.model_versions import evals, latest_evals

    async with Database.open(config.storage.database) as db:
        found = await latest_evals(db)
        runs = {}
        for run in await evals(db):
            runs[(run.model_id, run.checkpoint_hash)] = runs.get((run.model_id, run.checkpoint_hash), 0) + 1
    if not found:
        return "No model versions recorded yet: they appear once the bot has made images or `imagine-bot eval` ran."
    lines = []
    for version, run in found:
        lines.append(f"{version.model_id} @{version.checkpoint_hash[:12]}  seen {version.first_seen[:10]} .. "
                     f"{version.last_seen[:10]}")
        if run is None:
            lines.append("  not evaluated (imagine-bot eval)")
            continue
        figures = ", ".join(f"{name} {value:.4g}" for name, value in run.figures().items())
        count = runs[(version.model_id, version.checkpoint_hash)]
        lines.append(f"  eval {run.created_at[:16]} on {run.prompt_set} (n={run.n}, {run.extractor}"
                     f"{f', {count} runs' if count > 1 else ''}): {figures}")
    return "\n".join(lines)
