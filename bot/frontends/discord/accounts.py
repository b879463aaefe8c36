"""Discord: the web gallery and one account across platforms.

    🌐 under a result      put that image in the public web gallery (its owner); Unshare takes it out
    /share job [image]     the same as a command; /unshare job [image] (the owner or an admin)
    /link [code]           no code: a one-time code for /link on another platform (10 minutes);
                           with one: join that platform's account (quota, history, settings, keys)
    /unlink                act as this Discord user alone again
    /apikey [action] [key] a new key for the HTTP API (shown once), list or revoke; only in a DM
    /web                   a one-time sign-in link to the web studio (10 minutes); only in a DM

Every answer is ephemeral: only the clicker sees it. :class:`AccountHandlers` is a part of
:class:`~bot.frontends.discord.front.DiscordFrontEnd`; :func:`build_account_commands` binds
the slash commands to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.frontends.common import (
    APIKEY_PRIVATE,
    JOB_ID_LENGTH,
    UNLINKED,
    WEB_PRIVATE,
    api_key_text,
    canonical_ref,
    link_code_text,
    linked_text,
    share_image,
    web_link_text,
)
from bot.frontends.discord.messages import via_of, who_of
from bot.frontends.discord.views import share_view
from bot.service import ImagineService
from generation.core.errors import ImagineError
from generation.core.request import MAX_COUNT

__all__ = ["AccountHandlers", "build_account_commands"]



class AccountHandlers:
    """Sharing, linking and API keys (a part of the front end: needs its service and guard)."""

    service: ImagineService

    if TYPE_CHECKING:  # provided by the front end
        async def guard(self, interaction: discord.Interaction, action: Callable[[], Awaitable[None]],
                        *, remove_thinking: bool = False) -> None: ...

    async def on_share(self, interaction: discord.Interaction, job_id: str, index: int, share: bool,
                       *, named: str | None = None) -> None:
        """🌐 / Unshare (buttons) and /share, /unshare: answer with the public link, or why not.

        ``named``: the image as the user named it instead (JOB-N as the API does, or its number
        as in /history)."""
        async def run() -> None:
            nonlocal job_id, index
            who = who_of(interaction.user)
            ref = f"{job_id}-{index + 1}" if named is None else await canonical_ref(self.service, who, named)
            text = await share_image(self.service, who, ref, share, via_of(interaction))
            job_id, _, number = ref.rpartition("-")
            index = int(number) - 1
            if share:
                await interaction.response.send_message(text, ephemeral=True, view=share_view(job_id, index))
            elif interaction.type == discord.InteractionType.component:  # Unshare under a share answer
                await interaction.response.edit_message(content=text, view=None)
            else:
                await interaction.response.send_message(text, ephemeral=True)

        await self.guard(interaction, run)

    async def link(self, interaction: discord.Interaction, code: str | None) -> None:
        """/link [code]."""
        async def run() -> None:
            who = who_of(interaction.user)
            text = (linked_text(await self.service.link(who, code)) if code
                    else link_code_text(await self.service.link_code(who)))
            await interaction.response.send_message(text, ephemeral=True)

        await self.guard(interaction, run)

    async def unlink(self, interaction: discord.Interaction) -> None:
        """/unlink."""
        async def run() -> None:
            done = await self.service.unlink(who_of(interaction.user))
            await interaction.response.send_message(UNLINKED[done], ephemeral=True)

        await self.guard(interaction, run)

    async def apikey(self, interaction: discord.Interaction, action: str, key_id: int | None) -> None:
        """/apikey new|list|revoke: only in a DM with the bot."""
        async def run() -> None:
            if interaction.guild_id is not None:
                await interaction.response.send_message(APIKEY_PRIVATE, ephemeral=True)
                return
            if action == "revoke" and key_id is None:
                raise ImagineError("Which key? /apikey action:revoke key:ID (the id from /apikey list).")
            text = await api_key_text(self.service, who_of(interaction.user), action, key_id)
            await interaction.response.send_message(text, ephemeral=True)

        await self.guard(interaction, run)


    async def web(self, interaction: discord.Interaction) -> None:
        """/web: a sign-in link to the web studio, only in a DM with the bot."""
        async def run() -> None:
            if interaction.guild_id is not None:
                await interaction.response.send_message(WEB_PRIVATE, ephemeral=True)
                return
            url = await self.service.web_signin_link(who_of(interaction.user))
            await interaction.response.send_message(web_link_text(url), ephemeral=True)

        await self.guard(interaction, run)


def build_account_commands(front: AccountHandlers) -> list[app_commands.Command[Any, Any, Any]]:
    """/share, /unshare, /link, /unlink, /apikey and /web, bound to ``front``."""
    job_help = "The request id (from the result or /history), or the image itself: JOB-N or its number"
    image_help = "Which image of the request (from 1)"

    @app_commands.command(name="share", description="Put one of your images in the public web gallery")
    @app_commands.describe(job=job_help, image=image_help)
    async def share(interaction: discord.Interaction, job: str,
                    image: app_commands.Range[int, 1, MAX_COUNT] = 1) -> None:
        await front.on_share(interaction, job.strip(), image - 1, True, named=_named(job))

    @app_commands.command(name="unshare", description="Take an image out of the public web gallery")
    @app_commands.describe(job=job_help, image=image_help)
    async def unshare(interaction: discord.Interaction, job: str,
                      image: app_commands.Range[int, 1, MAX_COUNT] = 1) -> None:
        await front.on_share(interaction, job.strip(), image - 1, False, named=_named(job))

    @app_commands.command(name="link", description="Use one account on Discord and Telegram")
    @app_commands.describe(code="The code /link gave you on your other platform (empty: get a code)")
    async def link(interaction: discord.Interaction, code: str | None = None) -> None:
        await front.link(interaction, (code or "").strip() or None)

    @app_commands.command(name="unlink", description="Stop sharing an account with another platform")
    async def unlink(interaction: discord.Interaction) -> None:
        await front.unlink(interaction)

    @app_commands.command(name="apikey", description="A key for the HTTP API (in a DM with the bot)")
    @app_commands.describe(action="new (default): a new key, shown once; list; revoke", key="The key id to revoke")
    @app_commands.choices(action=[app_commands.Choice(name=n, value=n) for n in ("new", "list", "revoke")])
    async def apikey(interaction: discord.Interaction, action: app_commands.Choice[str] | None = None,
                     key: int | None = None) -> None:
        await front.apikey(interaction, action.value if action else "new", key)

    @app_commands.command(name="web", description="Sign in to the web studio (a link, in a DM with the bot)")
    async def web(interaction: discord.Interaction) -> None:
        await front.web(interaction)

    return [share, unshare, link, unlink, apikey, web]


def _named(job: str) -> str | None:
    """The image itself when /share's ``job`` names one (JOB-N, or a number shorter than a job
    id); None for a request id."""
    job = job.strip()
    if "-" in job or (job.isdecimal() and len(job) < JOB_ID_LENGTH):
        return job
    return None
