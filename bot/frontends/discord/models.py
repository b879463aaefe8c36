"""Discord's model commands (issue 25): ``/models`` for everyone, ``/admin models`` for admins,
and the ``model`` option's completions (/imagine, /settings).

    /models                                   each model: share, images, rating (95 %), CLIP, time
    /admin models action:list|compare|promote|retire model [other] [share]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.frontends.common import clip
from bot.frontends.discord.messages import who_of

if TYPE_CHECKING:
    from bot.service import ImagineService

__all__ = ["model_choices", "model_commands"]


def model_choices(service: ImagineService, current: str) -> list[app_commands.Choice[str]]:
    """Completions of the ``model`` option: the bot's models that contain what was typed."""
    return [app_commands.Choice(name=name, value=name) for name in service.model_choices(current)][:25]


def model_commands(front: Any, admin: app_commands.Group) -> list[app_commands.Command[Any, Any, Any]]:
    """Add ``/admin models`` to ``admin``; return the top-level ``/models``."""

    async def _models_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return model_choices(front.service, current)

    @app_commands.command(name="models", description="The bot's models: share, images, ratings, speed")
    async def models(interaction: discord.Interaction) -> None:
        async def run() -> None:
            text = await front.service.models_text()
            await interaction.response.send_message(clip(text, 1900), ephemeral=True)

        await front.guard(interaction, run)

    @admin.command(name="models", description="List, compare, promote or retire models (live, no restart)")
    @app_commands.describe(action="list, compare (model vs other), promote (to share, default 1) or retire",
                           model="A model", other="The model to compare with", share="Promote: share 0-1")
    @app_commands.choices(action=[app_commands.Choice(name=a, value=a)
                                  for a in ("list", "compare", "promote", "retire")])
    @app_commands.autocomplete(model=_models_autocomplete, other=_models_autocomplete)
    async def admin_models(interaction: discord.Interaction, action: str = "list", model: str | None = None,
                           other: str | None = None, share: app_commands.Range[float, 0.0, 1.0] | None = None) -> None:
        async def run() -> None:
            text = await front.service.admin_models(who_of(interaction.user), action, model or "", other or "", share)
            await interaction.response.send_message(clip(text, 1900), ephemeral=True)

        await front.guard(interaction, run)

    return [models]
