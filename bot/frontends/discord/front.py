"""Discord front end: slash commands, live progress, buttons, reaction ratings, DM history.

Thin on purpose: each command or click is one :class:`~bot.service.ImagineService` call plus
Discord messages. Commands (they work in guild channels and in DMs with the bot)::

    /imagine prompt [aspect count seed negative style]   flags in the prompt work too (--ar …)
    /history [search]   your requests as paged embeds, sent by DM
    /quota  /settings [aspect style count private]  /cancel [job]  /forget  /export
    /admin quota|block|unblock|stats                  only for ids in the config's admins
    /appeal [message]   ask an admin to review your strikes, cooldown or block
    /admin appeals|lift|reject|strikes|policy|modlog  moderation (``bot.frontends.discord.moderation``);
                        /admin policy also for members with Manage Server, for their server

Moderation: a request refused for a block or cooldown (or a blocked prompt) is answered
ephemerally with an Appeal button; images the image policy blocks are never uploaded (the
"thinking…" message is edited to say so; the quota is refunded). With the "spoiler" policy,
explicit images go out as SPOILER_ attachments in age-restricted channels only.

Results: one image, or a 2-column grid of them, with buttons (see ``bot.frontends.discord.views``):
U1…U4 post one image at full size, V1…V4 make variations, 🔄 rerolls with a new seed, 🗑 deletes
the message (requester or admin). Buttons carry the job id, so they work after a restart.

Ratings: react to a result message with 1️⃣ 2️⃣ 3️⃣ 4️⃣ 5️⃣ to give 1-5 stars. On a grid the
rating applies to every image of the grid; on a U message (one image) to that image. A newer
number reaction replaces your rating; removing the reaction that set it removes the rating.
Reactions arrive as raw gateway events, so this works on old messages and without the
message-content intent.

Delivery: the deferred interaction response is edited (progress at most once per
``progress_edit_interval``, then the result). When the interaction token has expired (15
minutes) or is gone, the result goes to the channel as a normal message (a DM when the request
came from a DM). With the ``private`` setting the result goes to the user's DMs; closed DMs
(403, code 50007) are remembered and the result comes as an ephemeral follow-up instead.
Images over the upload limit (the interaction's or the guild's) are re-encoded to fit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands
from discord.ext import commands

from bot.frontends.discord.views import (
    DYNAMIC_ITEMS,
    forget_view,
    history_page,
    render_grid,
    render_single,
    result_view,
    upscale_view,
)
from bot.frontends.discord.moderation import MODERATION_ITEMS, DiscordModeration, appeal_view, wants_appeal_button
from bot.options import parse_imagine
from bot.service import (
    Cancelled,
    Delivery,
    Failed,
    Finished,
    ImagineService,
    Queued,
    Recovered,
    Running,
    Ticket,
    Who,
)
from generation.errors import ImagineError, InvalidRequest
from generation.request import MAX_COUNT, MAX_SEED
from generation.styles import STYLES

__all__ = ["DiscordFrontEnd", "DiscordSettings", "RATING_EMOJIS"]

logger = logging.getLogger(__name__)

PLATFORM = "discord"
RATING_EMOJIS = {"1\u20e3": 1, "2\u20e3": 2, "3\u20e3": 3, "4\u20e3": 4, "5\u20e3": 5}  # keycaps, FE0F stripped
_DM_LIMIT = discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES  # what a bot may upload to a DM
_DMS_CLOSED = 50007
_MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
_RATE_HINT = "React 1️⃣–5️⃣ to rate."


@dataclass(frozen=True)
class DiscordSettings:
    """[discord] config: the token comes from the environment (DISCORD_TOKEN) and is never shown."""

    token: str = field(repr=False)
    api_base_url: str | None = None  # e.g. an API proxy; None: https://discord.com/api/v10
    gateway_url: str | None = None  # None: Discord's gateway
    dev_guild_ids: tuple[int, ...] = ()  # sync commands to these guilds at start (else globally)
    progress_edit_interval: float = 1.5  # seconds between progress edits, at least
    guild_ready_timeout: float = 2.0  # discord.py's wait for GUILD_CREATEs after READY

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("`discord.token` is empty: set DISCORD_TOKEN")
        object.__setattr__(self, "dev_guild_ids", tuple(int(g) for g in self.dev_guild_ids))
        if self.progress_edit_interval < 0:
            raise ValueError(f"`progress_edit_interval` must be 0 or more, not {self.progress_edit_interval}")


@dataclass
class _Reply:
    """Where one job's progress and result go."""

    target: dict[str, Any]  # platform, user_id, channel_id, guild_id, private (stored with the job)
    interaction: discord.Interaction | None = None  # None for jobs recovered after a restart
    upload_limit: int = _DM_LIMIT
    live: bool = True  # the interaction token still works

    @property
    def user_id(self) -> int:
        return int(self.target["user_id"])

    @property
    def private(self) -> bool:
        return bool(self.target.get("private"))

    def can_edit(self) -> bool:
        return self.interaction is not None and self.live and not self.interaction.is_expired()


class _Bot(commands.Bot):
    """commands.Bot that knows its front end (the buttons find it as ``interaction.client.front``)."""

    def __init__(self, front: DiscordFrontEnd, settings: DiscordSettings) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_reactions = True
        intents.dm_reactions = True
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None,
                         guild_ready_timeout=settings.guild_ready_timeout,
                         allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True,
                                                                         private_channel=False),
                         allowed_installs=app_commands.AppInstallationType(guild=True, user=False))
        self.front = front

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*DYNAMIC_ITEMS, *MODERATION_ITEMS)


class DiscordFrontEnd:
    """The Discord adapter: build with (service, settings), then ``await start()``; ``close()``."""

    def __init__(self, service: ImagineService, settings: DiscordSettings) -> None:
        self.service = service
        self.settings = settings
        self.bot = _Bot(self, settings)
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restore: tuple[str, yarl.URL] | None = None
        self.moderation = DiscordModeration(self)  # /appeal, the Appeal button, /admin moderation
        for command in _commands(self):
            self.bot.tree.add_command(command)
        self.bot.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        self.bot.add_listener(self._on_reaction_add, "on_raw_reaction_add")
        self.bot.add_listener(self._on_reaction_remove, "on_raw_reaction_remove")

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self, recovered: Recovered | None = None, *, timeout: float = 60.0) -> None:
        """Log in, connect, wait for READY, sync commands; then deliver what ``recovered`` owes."""
        self._point_at_api()
        await self.bot.login(self.settings.token)
        self._runner = asyncio.create_task(self.bot.connect(reconnect=True), name="discord-gateway")
        ready = asyncio.create_task(self.bot.wait_until_ready())
        done, _ = await asyncio.wait({ready, self._runner}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if self._runner in done:
                self._runner.result()
            raise TimeoutError(f"Discord gateway not ready within {timeout:.0f} s")
        await self.sync_commands()
        if recovered is not None:
            self.resume(recovered)
        logger.info("discord front end ready as %s", self.bot.user)

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
        """Deliver results owed from before a restart and follow re-run jobs (Discord targets)."""
        for delivery in recovered.deliveries:
            if delivery.target.get("platform") == PLATFORM:
                self._spawn(self._deliver_guarded(delivery, _Reply(dict(delivery.target))), delivery.job_id)
        for ticket in recovered.tickets:
            if ticket.target.get("platform") == PLATFORM:
                self.follow(ticket, _Reply(dict(ticket.target)))

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"discord-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- errors --------------------------------------------------------------------------------

    async def _guard(self, interaction: discord.Interaction, action: Callable[[], Awaitable[None]],
                     *, remove_thinking: bool = False) -> None:
        """Run ``action``; ImagineError text goes to the user, anything else is logged with a reference."""
        try:
            await action()
        except ImagineError as err:
            view = appeal_view() if wants_appeal_button(err) else None
            await self._tell(interaction, str(err), remove_thinking=remove_thinking, view=view)
        except Exception:
            ref = uuid.uuid4().hex[:8]
            logger.exception("discord: %s failed (reference %s)", _describe(interaction), ref)
            await self._tell(interaction, f"Sorry, something went wrong (reference {ref}).",
                             remove_thinking=remove_thinking)

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
        ref = uuid.uuid4().hex[:8]
        logger.error("discord: %s failed (reference %s)", _describe(interaction), ref, exc_info=error)
        await self._tell(interaction, f"Sorry, something went wrong (reference {ref}).")

    # -- /imagine, reroll, variation -----------------------------------------------------------

    async def imagine(self, interaction: discord.Interaction, prompt: str, **options: Any) -> None:
        """Check the options, defer, submit, follow the job."""
        typed = {k: v for k, v in options.items() if v is not None}
        try:  # pure and fast: a typo gets an ephemeral answer before anything is public
            parse_imagine(prompt, caps=self.service.caps, **typed)
        except InvalidRequest as err:
            await interaction.response.send_message(str(err), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)

        async def submit() -> None:
            who = _who(interaction.user)
            reply = await self._reply(interaction, who)
            ticket = await self.service.imagine(who, prompt, target=reply.target, **typed)
            self.follow(ticket, reply)

        await self._guard(interaction, submit, remove_thinking=True)

    async def on_reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        """🔄: a new message follows the rerolled job."""
        await interaction.response.defer(thinking=True)

        async def submit() -> None:
            who = _who(interaction.user)
            reply = await self._reply(interaction, who)
            self.follow(await self.service.reroll(who, job_id, target=reply.target), reply)

        await self._guard(interaction, submit, remove_thinking=True)

    async def on_variation(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """V1…V4: a new message follows the variation job."""
        await interaction.response.defer(thinking=True)

        async def submit() -> None:
            who = _who(interaction.user)
            reply = await self._reply(interaction, who)
            self.follow(await self.service.variation(who, job_id, index, target=reply.target), reply)

        await self._guard(interaction, submit, remove_thinking=True)

    async def _reply(self, interaction: discord.Interaction, who: Who) -> _Reply:
        settings = await self.service.settings(who)
        target = {
            "platform": PLATFORM,
            "user_id": str(interaction.user.id),
            "channel_id": str(interaction.channel_id) if interaction.channel_id else None,
            "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
            "private": bool(settings.get("private")),
        }
        channel = interaction.channel
        if interaction.guild_id and hasattr(channel, "is_nsfw"):
            # the image policy may send explicit images as spoilers only in age-restricted channels
            target["nsfw"] = bool(channel.is_nsfw())
        return _Reply(target, interaction, interaction.filesize_limit)

    def follow(self, ticket: Ticket, reply: _Reply) -> None:
        """Show progress and deliver the result, in the background."""
        self._spawn(self._follow(ticket, reply), ticket.job_id)

    async def _follow(self, ticket: Ticket, reply: _Reply) -> None:
        loop = asyncio.get_running_loop()
        last_edit = -math.inf
        label = "your private request" if reply.private else f"**{_clip(ticket.request.prompt, 200)}**"
        try:
            async for update in ticket.updates():
                if isinstance(update, Finished):
                    await self._deliver(update.delivery, reply)
                elif isinstance(update, (Failed, Cancelled)):
                    await self._post(reply, f"❌ {label}: {update.message}", mention=True)
                elif loop.time() - last_edit >= self.settings.progress_edit_interval:
                    last_edit = loop.time()
                    await self._progress(reply, _progress_text(label, update))
        except asyncio.CancelledError:
            raise
        except Exception:
            ref = uuid.uuid4().hex[:8]
            logger.exception("discord: following job %s failed (reference %s)", ticket.job_id, ref)
            with contextlib.suppress(Exception):
                await self._post(reply, f"Sorry, your images could not be sent (reference {ref}).")

    async def _progress(self, reply: _Reply, text: str) -> None:
        if not reply.can_edit():
            return
        assert reply.interaction is not None
        try:
            await reply.interaction.edit_original_response(content=text)
        except discord.NotFound:
            reply.live = False
        except discord.HTTPException as err:
            logger.warning("discord: progress edit failed: %s", err)

    # -- delivering ----------------------------------------------------------------------------

    async def _deliver_guarded(self, delivery: Delivery, reply: _Reply) -> None:
        try:
            await self._deliver(delivery, reply)
        except Exception:
            logger.exception("discord: delivering job %s failed; it stays owed", delivery.job_id)

    async def _deliver(self, delivery: Delivery, reply: _Reply) -> None:
        """Send the result (interaction edit, channel message or DM), record it, mark delivered."""
        spoiler = any(image.spoiler for image in delivery.images)
        note = " (made earlier: no quota used)" if delivery.cached else ""
        content = f"**{_clip(delivery.text, 1500)}** — <@{reply.user_id}>{note}\n{_RATE_HINT}"
        view = result_view(delivery)
        message: discord.Message | None = None
        if reply.private:
            data, ext = await asyncio.to_thread(render_grid, delivery.images, _DM_LIMIT)
            message = await self._dm(reply, content, _file(data, f"{delivery.job_id}.{ext}", spoiler), view)
            if message is not None:
                await self._post(reply, "📬 Your images are in your DMs.", only_edit=True)
            elif reply.can_edit():
                assert reply.interaction is not None
                await self._post(reply, "I couldn't DM you (your DMs are closed), so here they are, "
                                        "visible only to you.", only_edit=True)
                data, ext = await asyncio.to_thread(render_grid, delivery.images, reply.upload_limit)
                message = await reply.interaction.followup.send(
                    content, file=_file(data, f"{delivery.job_id}.{ext}", spoiler), view=view,
                    ephemeral=True, wait=True)
        if message is None:
            limit = reply.upload_limit if reply.can_edit() else await self._channel_limit(reply)
            data, ext = await asyncio.to_thread(render_grid, delivery.images, limit)
            message = await self._post(reply, content, file=(data, f"{delivery.job_id}.{ext}", spoiler),
                                       view=view, mention=True)
        if message is not None:
            await self.service.remember_message(delivery.job_id, message.id, jump_url=message.jump_url)
        await self.service.mark_delivered(delivery.job_id)

    async def _post(self, reply: _Reply, content: str, *, file: tuple[bytes, str, bool] | None = None,
                    view: discord.ui.View | None = None, mention: bool = False,
                    only_edit: bool = False) -> discord.Message | None:
        """Edit the interaction response while its token works; else a channel message (or DM)."""
        if reply.can_edit():
            assert reply.interaction is not None
            kwargs: dict[str, Any] = {"content": content, "view": view}
            if file is not None:
                kwargs["attachments"] = [_file(*file)]
            try:
                return await reply.interaction.edit_original_response(**kwargs)
            except discord.NotFound:
                reply.live = False  # the token expired: fall back to a normal message
        if only_edit:
            return None
        channel = await self._channel(reply)
        if channel is None:
            return None
        kwargs = {"content": content, "allowed_mentions": _MENTIONS if mention else discord.AllowedMentions.none()}
        if view is not None:
            kwargs["view"] = view
        if file is not None:
            kwargs["file"] = _file(*file)
        try:
            return await channel.send(**kwargs)
        except discord.Forbidden as err:
            if err.code == _DMS_CLOSED:
                await self.service.set_dm_closed(Who(PLATFORM, str(reply.user_id)))
                logger.info("discord: DMs closed for user %s; result not sent", reply.user_id)
                return None
            raise

    async def _dm(self, reply: _Reply, content: str, file: discord.File,
                  view: discord.ui.View) -> discord.Message | None:
        """Send to the user's DMs; None (and remembered) when they are closed."""
        who = Who(PLATFORM, str(reply.user_id))
        try:
            user = await self._user(reply.user_id)
            message = await user.send(content, file=file, view=view)
        except discord.Forbidden as err:
            if err.code != _DMS_CLOSED:
                raise
            await self.service.set_dm_closed(who)
            return None
        await self.service.set_dm_closed(who, False)
        return message

    async def _user(self, user_id: int) -> discord.User:
        return self.bot.get_user(user_id) or await self.bot.fetch_user(user_id)

    async def _channel(self, reply: _Reply) -> discord.abc.Messageable | None:
        if not reply.target.get("guild_id") or not reply.target.get("channel_id"):
            return await (await self._user(reply.user_id)).create_dm()
        channel_id = int(reply.target["channel_id"])
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(channel_id)
            except discord.HTTPException as err:
                logger.warning("discord: channel %s unavailable: %s", channel_id, err)
                return None
        return channel if isinstance(channel, discord.abc.Messageable) else None

    async def _channel_limit(self, reply: _Reply) -> int:
        guild_id = reply.target.get("guild_id")
        guild = self.bot.get_guild(int(guild_id)) if guild_id else None
        return guild.filesize_limit if guild is not None else _DM_LIMIT

    # -- buttons -------------------------------------------------------------------------------

    async def on_upscale(self, interaction: discord.Interaction, job_id: str, index: int) -> None:
        """U1…U4: post image ``index`` of the job alone, at full size."""
        await interaction.response.defer(thinking=True)

        async def post() -> None:
            delivery = await self.service.job_delivery(job_id)
            image = next((i for i in delivery.images if i.index == index), None)
            if image is None:
                raise ImagineError(f"That request has no image {index + 1}.")
            data, ext = await asyncio.to_thread(render_single, image.path, interaction.filesize_limit)
            content = (f"**{_clip(delivery.text, 1500)}** — image #{index + 1} (seed {image.seed}) — "
                       f"<@{interaction.user.id}>\n{_RATE_HINT}")
            message = await interaction.edit_original_response(
                content=content, attachments=[_file(data, f"{job_id}-{index + 1}.{ext}", image.spoiler)],
                view=upscale_view(job_id, index))
            await self.service.remember_message(job_id, message.id, index=index)

        await self._guard(interaction, post, remove_thinking=True)

    async def on_delete(self, interaction: discord.Interaction, job_id: str) -> None:
        """🗑: delete the message, if the clicker asked for it (or is an admin)."""
        async def delete() -> None:
            if not await self.service.owns(_who(interaction.user), job_id):
                await interaction.response.send_message("Only the person who asked for these images can "
                                                        "delete them.", ephemeral=True)
                return
            await interaction.response.defer()
            await interaction.delete_original_response()

        await self._guard(interaction, delete)

    async def on_forget(self, interaction: discord.Interaction, confirm: bool, user_id: int) -> None:
        """The /forget confirmation buttons."""
        async def answer() -> None:
            if interaction.user.id != user_id:
                await interaction.response.send_message("This is not your confirmation.", ephemeral=True)
                return
            if not confirm:
                await interaction.response.edit_message(content="Nothing was deleted.", view=None)
                return
            await interaction.response.defer()
            outcome = await self.service.forget(_who(interaction.user))
            await interaction.edit_original_response(
                content=(f"Forgotten: your history, ratings, settings and images are deleted "
                         f"({outcome.jobs_cancelled} running request(s) cancelled, "
                         f"{outcome.files_deleted} file(s) removed)."), view=None)

        await self._guard(interaction, answer)

    async def on_history_page(self, interaction: discord.Interaction, page: int, search: str) -> None:
        """◀ ▶ on a /history message: show that page in place."""
        await interaction.response.defer()

        async def show() -> None:
            content, embeds, files, view = await self._history(_who(interaction.user), page, search)
            await interaction.edit_original_response(
                content=content, embeds=embeds, attachments=[_file(d, n) for n, d in files], view=view)

        await self._guard(interaction, show)

    # -- other commands ------------------------------------------------------------------------

    async def _history(self, who: Who, page: int, search: str) -> tuple[str, list[discord.Embed],
                                                                          list[tuple[str, bytes]], Any]:
        view = await self.service.history(who, page=page, per_page=5, search=search or None)
        return await asyncio.to_thread(history_page, view, search)

    async def history(self, interaction: discord.Interaction, search: str | None) -> None:
        """/history: the first page by DM (in a DM with the bot: right here)."""
        in_dm = interaction.guild_id is None
        await interaction.response.defer(ephemeral=not in_dm, thinking=True)

        async def send() -> None:
            who = _who(interaction.user)
            content, embeds, files, view = await self._history(who, 0, search or "")
            if in_dm:
                kwargs: dict[str, Any] = {"content": content, "embeds": embeds,
                                          "attachments": [_file(d, n) for n, d in files]}
                if view is not None:
                    kwargs["view"] = view
                await interaction.edit_original_response(**kwargs)
                return
            try:
                kwargs = {"embeds": embeds, "files": [_file(d, n) for n, d in files]}
                if view is not None:
                    kwargs["view"] = view
                await interaction.user.send(content, **kwargs)
            except discord.Forbidden as err:
                if err.code != _DMS_CLOSED:
                    raise
                await self.service.set_dm_closed(who)
                await interaction.edit_original_response(content=_DMS_CLOSED_TEXT)
                return
            await self.service.set_dm_closed(who, False)
            await interaction.edit_original_response(content="📬 Sent your history to your DMs.")

        await self._guard(interaction, send)

    async def quota(self, interaction: discord.Interaction) -> None:
        """/quota."""
        async def show() -> None:
            used, limit, remaining, resets_at = await self.service.quota(_who(interaction.user))
            await interaction.response.send_message(
                f"You have used {used} of {limit} images; {remaining} left. "
                f"Resets {discord.utils.format_dt(resets_at, 'R')}.", ephemeral=True)

        await self._guard(interaction, show)

    async def settings_command(self, interaction: discord.Interaction, **changes: Any) -> None:
        """/settings: change the given ones, show all."""
        async def save() -> None:
            given = {k: v for k, v in changes.items() if v is not None}
            current = await self.service.settings(_who(interaction.user), **given)
            shown = ", ".join(f"{k}: {'on' if v is True else 'off' if v is False else v}" for k, v in current.items())
            await interaction.response.send_message(("Saved. " if given else "") + f"Your settings — {shown}.",
                                                    ephemeral=True)

        await self._guard(interaction, save)

    async def cancel(self, interaction: discord.Interaction, job: str | None) -> None:
        """/cancel."""
        await interaction.response.defer(ephemeral=True, thinking=True)

        async def run() -> None:
            outcome = await self.service.cancel(_who(interaction.user), job or None)
            await interaction.followup.send(
                f"Cancelled {outcome.job_id} ({_clip(outcome.text, 300)}); "
                f"{outcome.refunded} image(s) refunded.", ephemeral=True)

        await self._guard(interaction, run)

    async def forget(self, interaction: discord.Interaction) -> None:
        """/forget: ask first."""
        await interaction.response.send_message(
            "This deletes your history, ratings, settings and images for good. Are you sure?",
            view=forget_view(interaction.user.id), ephemeral=True)

    async def export(self, interaction: discord.Interaction) -> None:
        """/export: the zip by DM, unless it is over the upload limit."""
        await interaction.response.defer(ephemeral=True, thinking=True)

        async def run() -> None:
            who = _who(interaction.user)
            path = await self.service.export(who)
            size = path.stat().st_size
            if size > _DM_LIMIT:
                await interaction.followup.send(
                    f"Your export is {size / 2**20:.1f} MiB, over the {_DM_LIMIT / 2**20:.0f} MiB upload "
                    f"limit, so I can't send it here. Ask the bot's operator for `{path.name}`.", ephemeral=True)
                return
            try:
                await interaction.user.send("Your data export (export.json and your images).",
                                            file=discord.File(path, filename=path.name))
            except discord.Forbidden as err:
                if err.code != _DMS_CLOSED:
                    raise
                await self.service.set_dm_closed(who)
                await interaction.followup.send(_DMS_CLOSED_TEXT, ephemeral=True)
                return
            await self.service.set_dm_closed(who, False)
            await interaction.followup.send("📬 Sent your export to your DMs.", ephemeral=True)

        await self._guard(interaction, run)

    async def admin(self, interaction: discord.Interaction, action: str, user: discord.User | None = None,
                    limit: int | None = None) -> None:
        """/admin subcommands (the service checks that the caller is an admin)."""
        async def run() -> None:
            me = _who(interaction.user)
            if action == "stats":
                stats = await self.service.admin_stats(me)
                text = "```json\n" + _clip(json.dumps(stats, indent=1, default=str), 1900) + "\n```"
            elif action == "quota":
                assert user is not None
                status = await self.service.admin_set_quota(me, PLATFORM, user.id, limit)
                text = f"{user.mention} now has {status.limit} images per window ({status.used} used)."
            elif action == "block":
                assert user is not None
                await self.service.admin_block(me, PLATFORM, user.id)
                text = f"{user.mention} is blocked."
            else:
                assert user is not None
                await self.service.admin_unblock(me, PLATFORM, user.id)
                text = f"{user.mention} is unblocked."
            await interaction.response.send_message(text, ephemeral=True,
                                                    allowed_mentions=discord.AllowedMentions.none())

        await self._guard(interaction, run)

    # -- reactions -----------------------------------------------------------------------------

    async def _on_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        stars = _stars_of(payload)
        if stars is None or (self.bot.user is not None and payload.user_id == self.bot.user.id):
            return
        name = payload.member.display_name if payload.member is not None else ""
        try:
            await self.service.rate_message(Who(PLATFORM, str(payload.user_id), name), payload.message_id, stars)
        except ImagineError as err:
            logger.info("discord: reaction rating refused: %s", err)
        except Exception:
            logger.exception("discord: reaction rating on message %s failed", payload.message_id)

    async def _on_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        stars = _stars_of(payload)
        if stars is None:
            return
        try:
            await self.service.unrate_message(Who(PLATFORM, str(payload.user_id)), payload.message_id, stars)
        except Exception:
            logger.exception("discord: removing a reaction rating on message %s failed", payload.message_id)


_DMS_CLOSED_TEXT = ("I can't send you direct messages: your DMs are closed. Allow direct messages from "
                    "server members (Privacy Settings), then try again.")


def _stars_of(payload: discord.RawReactionActionEvent) -> int | None:
    if payload.emoji.id is not None or not payload.emoji.name:
        return None
    return RATING_EMOJIS.get(payload.emoji.name.replace("\ufe0f", ""))


def _who(user: discord.abc.User) -> Who:
    return Who(PLATFORM, str(user.id), getattr(user, "display_name", "") or user.name)


def _file(data: bytes, name: str, spoiler: bool = False) -> discord.File:
    return discord.File(io.BytesIO(data), filename=name, spoiler=spoiler)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(interaction: discord.Interaction) -> str:
    name = interaction.command.qualified_name if interaction.command else (interaction.data or {}).get("custom_id")
    return f"{name!s} by {interaction.user.id}"


def _progress_text(label: str, update: Queued | Running) -> str:
    if isinstance(update, Queued):
        eta = f", about {update.eta:.0f} s" if update.eta > 0 else ""
        return f"⏳ {label} — queued, position {update.position}{eta}"
    filled = round(10 * update.step / update.steps) if update.steps else 0
    return f"🎨 {label} — generating {'▰' * filled}{'▱' * (10 - filled)} {update.step}/{update.steps}"


# -- app command definitions -------------------------------------------------------------------


async def _style_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    text = current.strip().lower()
    found = [s for s in STYLES.values() if text in s.name or text in s.description.lower()]
    return [app_commands.Choice(name=_clip(f"{s.name} — {s.description}", 100), value=s.name) for s in found][:25]


def _commands(front: DiscordFrontEnd) -> list[app_commands.Command[Any, Any, Any] | app_commands.Group]:
    """The slash commands, bound to ``front``."""
    aspects = [app_commands.Choice(name=f"{ar} ({w}x{h})", value=ar) for ar, (w, h) in front.service.caps.sizes().items()]

    @app_commands.command(name="imagine", description="Make images from a prompt (flags like --ar 16:9 work too)")
    @app_commands.describe(prompt="What to draw; may include --ar W:H --seed N --no TEXT --n N --style NAME",
                           aspect="Aspect ratio", count="Number of images (1-4)", seed="Seed for repeatable images",
                           negative="What to avoid (negative prompt)", style="A style preset")
    @app_commands.choices(aspect=aspects)
    @app_commands.autocomplete(style=_style_autocomplete)
    async def imagine(interaction: discord.Interaction, prompt: str,
                      aspect: app_commands.Choice[str] | None = None,
                      count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
                      seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
                      negative: str | None = None, style: str | None = None) -> None:
        await front.imagine(interaction, prompt, aspect=aspect.value if aspect else None, count=count,
                            seed=seed, negative=negative, style=style)

    @app_commands.command(name="history", description="Your requests, sent to you by DM")
    @app_commands.describe(search="Only requests whose prompt contains this")
    async def history(interaction: discord.Interaction, search: str | None = None) -> None:
        await front.history(interaction, search)

    @app_commands.command(name="quota", description="How many images you have left")
    async def quota(interaction: discord.Interaction) -> None:
        await front.quota(interaction)

    @app_commands.command(name="settings", description="Show or change your defaults")
    @app_commands.describe(aspect="Default aspect ratio", style="Default style", count="Default number of images",
                           private="Send results to your DMs")
    @app_commands.choices(aspect=aspects)
    @app_commands.autocomplete(style=_style_autocomplete)
    async def settings(interaction: discord.Interaction, aspect: app_commands.Choice[str] | None = None,
                       style: str | None = None, count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
                       private: bool | None = None) -> None:
        await front.settings_command(interaction, aspect=aspect.value if aspect else None, style=style,
                                     count=count, private=private)

    @app_commands.command(name="cancel", description="Cancel your latest (or the given) queued request")
    @app_commands.describe(job="A request id (default: your latest)")
    async def cancel(interaction: discord.Interaction, job: str | None = None) -> None:
        await front.cancel(interaction, job)

    @app_commands.command(name="forget", description="Delete everything stored about you")
    async def forget(interaction: discord.Interaction) -> None:
        await front.forget(interaction)

    @app_commands.command(name="export", description="Your data and images as a zip, by DM")
    async def export(interaction: discord.Interaction) -> None:
        await front.export(interaction)

    admin = app_commands.Group(name="admin", description="Bot admin tools (admins only)")

    @admin.command(name="stats", description="Jobs, images, users and the queue")
    async def stats(interaction: discord.Interaction) -> None:
        await front.admin(interaction, "stats")

    @admin.command(name="quota", description="Set a user's images per window (empty: back to the default)")
    async def admin_quota(interaction: discord.Interaction, user: discord.User,
                          limit: app_commands.Range[int, 0, 1_000_000] | None = None) -> None:
        await front.admin(interaction, "quota", user, limit)

    @admin.command(name="block", description="Refuse a user's requests")
    async def block(interaction: discord.Interaction, user: discord.User) -> None:
        await front.admin(interaction, "block", user)

    @admin.command(name="unblock", description="Accept a user's requests again")
    async def unblock(interaction: discord.Interaction, user: discord.User) -> None:
        await front.admin(interaction, "unblock", user)

    moderation = front.moderation.commands(admin)  # /appeal; /admin appeals|lift|reject|strikes|policy|modlog
    return [imagine, history, quota, settings, cancel, forget, export, admin, *moderation]
