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
    models = sub.add_parser("models", help="the models: share, images, rating (95 %% interval), CLIP, time per "
                                           "image; the versions run with their `imagine-bot eval` figures; "
                                           "compare A B, promote NAME [SHARE], retire NAME")
    models.add_argument("action", nargs="?", default="list", choices=["list", "compare", "promote", "retire"],
                        help="list (default); compare A B: is the rating difference significant; promote NAME "
                             "[SHARE]: send SHARE (default 1) of the requests that name no model to NAME, live; "
                             "retire NAME: none")
    models.add_argument("names", nargs="*", metavar="NAME", help="the model(s), and promote's share (0-1)")
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


async def models_command(config: Config, action: str = "list", names: list[str] | None = None) -> str:
    """The catalogue (share, images, ratings, CLIP, time per image) and each model version (most
    recently seen first) with the figures of its newest evaluation; or compare/promote/retire."""
    from bot.service.rollout import compare_text, models_text, overview, set_share
    from generation.core.errors import InvalidRequest
    from generation.model.entries import catalogue_of, entry_configs
    from storage import Database
    from storage.model_versions import evals, latest_evals

    catalogue = catalogue_of(entry_configs(config.model, config.models))
    names = list(names or [])
    wanted = {"list": (0, 0), "compare": (2, 2), "promote": (1, 2), "retire": (1, 1)}[action]
    if not wanted[0] <= len(names) <= wanted[1]:
        raise InvalidRequest("models", "Usage: imagine-bot models [list | compare A B | promote NAME [SHARE] | "
                                       "retire NAME]")
    async with Database.open(config.storage.database) as db:
        if action == "compare":
            return await compare_text(db, catalogue, names[0], names[1])
        if action in ("promote", "retire"):
            try:
                share = 0.0 if action == "retire" else float(names[1]) if len(names) > 1 else 1.0
            except ValueError:
                raise InvalidRequest("traffic", f"A share is a number from 0 to 1, not {names[1]!r}.") from None
            return await set_share(db, catalogue, names[0], share, by="cli")
        head = models_text(await overview(db, catalogue))
        found = await latest_evals(db)
        runs = {}
        for run in await evals(db):
            runs[(run.model_id, run.checkpoint_hash)] = runs.get((run.model_id, run.checkpoint_hash), 0) + 1
    if not found:
        return head + "\n\nNo model versions recorded yet: they appear once the bot has made images or " \
                      "`imagine-bot eval` ran."
    lines = [head, "", "versions:"]
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
