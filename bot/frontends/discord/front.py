"""Discord front end: the adapter class, its lifetime, errors and reaction ratings.

:class:`DiscordFrontEnd` is built from its parts: :class:`~.commands.CommandHandlers` (slash
commands and buttons), :class:`~.accounts.AccountHandlers` (🌐 sharing, /link, /apikey),
:class:`~.delivery.Delivering` (progress and results), :class:`~.comments.CommentHandlers` (💬) and
:class:`~.moderation.DiscordModeration` (given the front end it serves). Buttons are
:mod:`~bot.frontends.discord.views`; they find the front end as ``interaction.client.front``.

Ratings: react to a result message with 1️⃣ 2️⃣ 3️⃣ 4️⃣ 5️⃣ to give 1-5 stars. On a grid the
rating applies to every image of the grid; on a U message (one image) to that image. A newer
number reaction replaces your rating; removing the reaction that set it removes the rating.
Reactions arrive as raw gateway events, so this works on old messages and without the
message-content intent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands
from discord.ext import commands

from bot.frontends.common import apology, new_reference
from bot.frontends.discord.accounts import AccountHandlers, build_account_commands
from bot.frontends.discord.commands import CommandHandlers, build_commands
from bot.frontends.discord.comments import CommentHandlers
from bot.frontends.discord.delivery import Delivering, Reply
from bot.frontends.discord.intake import Intake, interaction_from
from bot.frontends.discord.messages import DM_LIMIT, PLATFORM
from bot.frontends.discord.moderation import MODERATION_ITEMS, DiscordModeration, appeal_view, wants_appeal_button
from bot.frontends.discord.edits import DescribeButton, EditHandlers, build_edit_commands
from bot.frontends.discord.settings import DiscordSettings
from bot.frontends.discord.views import DYNAMIC_ITEMS
from bot.service import ImagineService, Recovered, Who
from generation.core.errors import ImagineError

__all__ = ["DiscordFrontEnd", "DiscordLoginFailed", "RATING_EMOJIS"]

logger = logging.getLogger(__name__)

# what an unreachable Discord raises from login(): refused, DNS failure (a ClientConnectorError), timeout
_UNREACHABLE = (OSError, aiohttp.ClientError, asyncio.TimeoutError)
RATING_EMOJIS = {"1\u20e3": 1, "2\u20e3": 2, "3\u20e3": 3, "4\u20e3": 4, "5\u20e3": 5}  # keycaps, FE0F stripped


class _Bot(commands.Bot):
    """commands.Bot that knows its front end (the buttons find it as ``interaction.client.front``)."""

    def __init__(self, front: DiscordFrontEnd, settings: DiscordSettings) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_reactions = True
        intents.dm_reactions = True
        # The bot never joins voice: discord.py's "PyNaCl/davey is not installed" warnings are noise.
        for flag in ("warn_nacl", "warn_dave"):
            if hasattr(discord.VoiceClient, flag):
                setattr(discord.VoiceClient, flag, False)
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None,
                         guild_ready_timeout=settings.guild_ready_timeout,
                         allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True,
                                                                         private_channel=False),
                         allowed_installs=app_commands.AppInstallationType(guild=True, user=False))
        self.front = front

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS, *MODERATION_ITEMS, DescribeButton)


class DiscordLoginFailed(ImagineError):
    """Discord refused the token: the operator must fix DISCORD_TOKEN."""


class DiscordFrontEnd(CommandHandlers, AccountHandlers, CommentHandlers, EditHandlers, Intake, Delivering):
    """The Discord adapter: build with (service, settings), then ``await start()``; ``close()``."""

    def __init__(self, service: ImagineService, settings: DiscordSettings) -> None:
        self.service = service
        self.settings = settings
        self.bot = _Bot(self, settings)
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restore: tuple[str, yarl.URL] | None = None
        self._ready = asyncio.Event()
        self.moderation = DiscordModeration(self)  # /appeal, the Appeal button, /admin moderation
        for command in [*build_commands(self), *build_account_commands(self),  # + /share /link /apikey …
                        *build_edit_commands(self)]:  # /describe
            self.bot.tree.add_command(command)
        self.bot.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        self.bot.add_listener(self._on_reaction_add, "on_raw_reaction_add")
        self.bot.add_listener(self._on_reaction_remove, "on_raw_reaction_remove")

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self, recovered: Recovered | None = None, *, timeout: float = 60.0) -> None:
        """Log in, connect, wait for READY, sync commands; deliver what ``recovered`` owes; replay.

        An invalid token raises :class:`DiscordLoginFailed` (the process should exit). When
        Discord cannot be reached (connection refused, DNS failure, gateway silent for
        ``timeout``) one line is logged and the front end keeps trying in the background with
        backoff, so the rest of the bot runs meanwhile.
        """
        self._point_at_api()
        self._ready = asyncio.Event()
        try:
            await self._login()
        except discord.LoginFailure as err:
            raise DiscordLoginFailed(f"Discord refused the bot token (DISCORD_TOKEN): {err}") from None
        except _UNREACHABLE as err:
            logger.error("discord: cannot reach %s (%s); retrying in the background with backoff",
                         discord.http.Route.BASE, _reason(err))
            self._runner = asyncio.create_task(self._serve(recovered, logged_in=False), name="discord")
            return
        self._runner = asyncio.create_task(self._serve(recovered, logged_in=True), name="discord")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._runner}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            return
        ready.cancel()
        if self._runner in done:
            self._runner.result()  # why it ended
        logger.error("discord: not ready within %.0f s; still trying in the background", timeout)

    async def _serve(self, recovered: Recovered | None, *, logged_in: bool) -> None:
        """Log in (retrying with backoff), run the gateway (discord.py reconnects), then the start-up work."""
        delay = self.settings.retry_initial_s
        while not logged_in:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.retry_max_s)
            try:
                await self._login()
                logged_in = True
                logger.info("discord: reached %s; connecting", discord.http.Route.BASE)
            except discord.LoginFailure as err:
                logger.critical("discord: Discord refused the bot token (DISCORD_TOKEN): %s; Discord stays off", err)
                return
            except _UNREACHABLE as err:
                logger.debug("discord: still unreachable (%s); next try in %.0f s", _reason(err), delay)
        gateway = asyncio.create_task(self.bot.connect(reconnect=True), name="discord-gateway")
        try:
            ready = asyncio.create_task(self.bot.wait_until_ready())
            done, _ = await asyncio.wait({ready, gateway}, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                ready.cancel()
                gateway.result()
                return
            await self.sync_commands()
            if recovered is not None:
                self.resume(recovered)
            await self.replay()
            logger.info("discord front end ready as %s", self.bot.user)
            self._ready.set()
            await gateway
        finally:
            if not gateway.done():
                gateway.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await gateway

    async def _login(self) -> None:
        """One login attempt (bounded); a failed one leaves no HTTP session behind."""
        try:
            await asyncio.wait_for(self.bot.login(self.settings.token), self.settings.connect_timeout_s)
        except BaseException:
            http = self.bot.http
            with contextlib.suppress(Exception):
                await http.close()
            http.connector = discord.utils.MISSING  # the next login makes a new connector
            raise

    async def sync_commands(self) -> None:
        """Sync to the development guilds (instant) when configured, else globally."""
        if self.settings.dev_guild_ids:
            for guild_id in self.settings.dev_guild_ids:
                guild = discord.Object(id=guild_id)
                self.bot.tree.copy_global_to(guild=guild)
                await self.bot.tree.sync(guild=guild)
        else:
            await self.bot.tree.sync()

    async def close(self) -> None:
        """Stop following jobs (their rows stay for recover()), disconnect."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.bot.close()
        if self._runner is not None:
            if not self._ready.is_set():
                self._runner.cancel()  # still trying to reach Discord
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._runner, 10)
        if self._restore is not None:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._restore
            self._restore = None

    def _point_at_api(self) -> None:
        base, gateway = self.settings.api_base_url, self.settings.gateway_url
        if base is None and gateway is None:
            return
        self._restore = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        if base is not None:
            discord.http.Route.BASE = base.rstrip("/")
        if gateway is not None:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway.rstrip("/") + "/")

    def resume(self, recovered: Recovered) -> None:
        """Deliver results and failures owed from before a restart; follow re-run jobs (Discord targets).

        While a job's interaction token lives, its response is edited (as it would have been);
        after that the result goes to the channel with the job's nonce (see :mod:`.delivery`).
        """
        for untold in recovered.untold:  # failures a crash kept from being told
            if untold.target.get("platform") == PLATFORM:
                self._spawn(self._tell_guarded(untold, self._recovered_reply(untold.target, owed=True)),
                            f"tell-{untold.job_id}")
        for delivery in recovered.deliveries:
            if delivery.target.get("platform") == PLATFORM:
                reply = self._recovered_reply(delivery.target, owed=True)
                self._spawn(self._deliver_guarded(delivery, reply), delivery.job_id)
        for ticket in recovered.tickets:  # never sent: they had not finished
            if ticket.target.get("platform") == PLATFORM:
                self.follow(ticket, self._recovered_reply(ticket.target, owed=False))

    def _recovered_reply(self, target: dict[str, Any], *, owed: bool) -> Reply:
        limit = int((target.get("interaction") or {}).get("upload_limit") or DM_LIMIT)
        return Reply(dict(target), interaction_from(self.bot, target), limit, recovered=owed)

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"discord-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- errors --------------------------------------------------------------------------------

    async def guard(self, interaction: discord.Interaction, action: Callable[[], Awaitable[None]],
                    *, remove_thinking: bool = False) -> None:
        """Run ``action``; ImagineError text goes to the user, anything else is logged with a reference."""
        try:
            await action()
        except ImagineError as err:
            view = appeal_view() if wants_appeal_button(err) else None
            await self._tell(interaction, str(err), remove_thinking=remove_thinking, view=view)
        except Exception:
            ref = new_reference()
            logger.exception("discord: %s failed (reference %s)", _describe(interaction), ref)
            await self._tell(interaction, apology(ref), remove_thinking=remove_thinking)

    async def _tell(self, interaction: discord.Interaction, text: str, *, remove_thinking: bool = False,
                    view: discord.ui.View | None = None) -> None:
        """An ephemeral message to the user of ``interaction``, however it was answered so far."""
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(text, ephemeral=True, **extra)
                return
            if remove_thinking:  # a public "thinking…" placeholder: drop it, answer privately
                with contextlib.suppress(discord.HTTPException):
                    await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=True, **extra)
        except discord.HTTPException:
            logger.warning("discord: could not tell %s: %s", interaction.user, text)

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        ref = new_reference()
        logger.error("discord: %s failed (reference %s)", _describe(interaction), ref, exc_info=error)
        await self._tell(interaction, apology(ref))

    # -- reactions -----------------------------------------------------------------------------

    async def _on_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        stars = _stars_of(payload)
        if stars is None or (self.bot.user is not None and payload.user_id == self.bot.user.id):
            return
        name = payload.member.display_name if payload.member is not None else ""
        try:
            await self.service.rate_message(Who(PLATFORM, str(payload.user_id), name), None, payload.message_id,
                                            stars)
        except ImagineError as err:
            logger.info("discord: reaction rating refused: %s", err)
        except Exception:
            logger.exception("discord: reaction rating on message %s failed", payload.message_id)

    async def _on_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        stars = _stars_of(payload)
        if stars is None:
            return
        try:
            await self.service.unrate_message(Who(PLATFORM, str(payload.user_id)), None, payload.message_id, stars)
        except Exception:
            logger.exception("discord: removing a reaction rating on message %s failed", payload.message_id)


def _reason(err: BaseException) -> str:
    return str(err) or type(err).__name__


def _stars_of(payload: discord.RawReactionActionEvent) -> int | None:
    if payload.emoji.id is not None or not payload.emoji.name:
        return None
    return RATING_EMOJIS.get(payload.emoji.name.replace("\ufe0f", ""))


def _describe(interaction: discord.Interaction) -> str:
    name = interaction.command.qualified_name if interaction.command else (interaction.data or {}).get("custom_id")
    return f"{name!s} by {interaction.user.id}"
