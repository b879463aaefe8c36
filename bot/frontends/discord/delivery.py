"""Following a Discord job and delivering its result: progress edits, then the images.

The deferred interaction response is edited (progress at most once per
``progress_edit_interval``, coalesced per interaction: only the newest text waits, and the
update loop never waits for an edit; a live preview rides in the same edit as the text, as the
message's attachment, never as an extra edit, and never for a private request; then the result, which goes first: a waiting progress
text is dropped when the result is ready). Under load discord.py's own rate-limit handling
(per-route buckets from Discord's headers, ``retry_after`` on a 429) paces the edits. When the interaction token has expired (15
minutes) or is gone, the result goes to the channel as a normal message (a DM when the request
came from a DM). With the ``private`` setting the result goes to the user's DMs; closed DMs
(403, code 50007) are remembered and the result comes as an ephemeral follow-up instead.
Images over the upload limit (the interaction's or the guild's) are re-encoded to fit.

Delivering idempotently (DESIGN.md, "Deliver idempotently"). A kill -9 can land after Discord
stored the upload and before ``mark_delivered`` committed; the next start sends again. That
second send must not make a second copy, so every way a result goes out is safe to repeat:

- **Editing the interaction response** (the usual way). The job's target keeps the
  interaction's id and token, so after a restart the same "thinking…" message is edited again
  (:func:`~bot.frontends.discord.intake.interaction_from`) for as long as the token lives
  (15 minutes). An edit with the same content is the same message: nothing doubles.
- **Channel messages and DMs** (token expired, or ``private``): sent with a ``nonce`` derived
  from the job id (``imagine:<job>``; ``failed:<job>`` for a failure notice). discord.py 2.7's
  ``Messageable.send`` adds ``enforce_nonce: true`` whenever a nonce is given, and Discord
  then answers a repeat from the same bot within a few minutes with the message it already
  created instead of a new one. Restarts take seconds, so the re-send after a crash falls in
  that window. A restart can take longer (a crash loop, a host down), so a result owed from
  before the restart that goes to a channel or DM is first looked for in that channel's history
  (this bot's message with the job's file, from the request's time on): found, it is recorded,
  not sent. Where the history cannot be read, the re-send says it may be a copy.
- The ephemeral follow-up for ``private`` results when DMs are closed is the one way with no
  key (webhook executions take no nonce): there the window is the one write
  ``mark_delivered`` after the send.

Chosen over "record before sending": a local write before the send cannot tell whether the send
happened, so it could only turn a double into a loss; Discord's own keys close the window.

:class:`Delivering` is a part of :class:`~bot.frontends.discord.front.DiscordFrontEnd`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot.frontends.edits import mask_overlay
from bot.frontends.common import Coalescer, clip, eta_phrase, meter, new_reference, render_grid, variation_hint
from bot.frontends.discord.messages import DM_LIMIT, DMS_CLOSED, MENTIONS, PLATFORM, RATE_HINT, file_of
from bot.frontends.discord.settings import DiscordSettings
from bot.frontends.discord.views import result_view
from bot.service import (Cancelled, Delivery, Failed, Finished, ImagineService, Queued, Running, Ticket, Untold,
                         Who)

__all__ = ["Delivering", "RESENT_NOTE", "Reply", "progress_text"]

logger = logging.getLogger(__name__)

HISTORY_SCAN = 300  # messages read (from the request's time on) to find a result posted before a crash
RESENT_NOTE = "(Sent again after a restart: if you already have these images, this is a copy.)"


@dataclass
class Reply:
    """Where one job's progress and result go."""

    target: dict[str, Any]  # platform, user_id, channel_id, guild_id, private (stored with the job)
    interaction: discord.Interaction | None = None  # None for jobs recovered after a restart
    upload_limit: int = DM_LIMIT
    live: bool = True  # the interaction token still works
    recovered: bool = False  # owed from before a restart: it may have been sent already
    previewed: bool = False  # a live preview is attached to the response (a text-only edit takes it off)

    @property
    def user_id(self) -> int:
        return int(self.target["user_id"])

    @property
    def private(self) -> bool:
        return bool(self.target.get("private"))

    def can_edit(self) -> bool:
        return self.interaction is not None and self.live and not self.interaction.is_expired()


def progress_text(label: str, update: Queued | Running) -> str:
    """The deferred response while a job waits or runs."""
    if isinstance(update, Queued):
        eta = f", {eta_phrase(update.eta, update.measured)}" if update.eta > 0 or not update.measured else ""
        return f"⏳ {label} — queued, position {update.position}{eta}"
    filled = round(10 * update.step / update.steps) if update.steps else 0
    return f"🎨 {label} — generating {meter(filled, 10)} {update.step}/{update.steps}"


class Delivering:
    """Progress and results of jobs (a part of the front end: needs its service, settings, bot)."""

    service: ImagineService
    settings: DiscordSettings
    bot: commands.Bot

    if TYPE_CHECKING:  # provided by the front end
        def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]: ...

    def follow(self, ticket: Ticket, reply: Reply) -> None:
        """Show progress and deliver the result, in the background."""
        self._spawn(self._follow(ticket, reply), ticket.job_id)

    async def _follow(self, ticket: Ticket, reply: Reply) -> None:
        sent: list[bytes | None] = [None]  # the preview on the message now

        async def edit(shown: tuple[str, bytes | None]) -> None:
            text, preview = shown
            if preview is None or preview is sent[0]:
                await self._progress(reply, text)
            else:  # a new preview: the message's attachment becomes it, in the same edit as the text
                sent[0] = preview
                await self._progress(reply, text, preview)

        progress = Coalescer(edit, self.settings.progress_edit_interval)
        label = "your private request" if reply.private else f"**{clip(ticket.request.prompt, 200)}**"
        preview: bytes | None = None  # the newest; never for a private request (the channel would see it)
        try:
            async for update in ticket.updates():
                if isinstance(update, Finished):
                    await progress.settle()
                    await self._deliver(update.delivery, reply)
                elif isinstance(update, (Failed, Cancelled)):
                    await progress.settle()
                    await self._post(reply, f"❌ {label}: {update.message}", mention=True,
                                     nonce=f"failed:{ticket.job_id}")
                    await self.service.mark_told(ticket.job_id)  # a crash before this tells it again
                else:
                    if not reply.private and getattr(update, "preview", None) is not None:
                        preview = update.preview  # type: ignore[union-attr]
                    progress.show((progress_text(label, update), preview))
        except asyncio.CancelledError:
            progress.close()
            raise
        except Exception:
            ref = new_reference()
            logger.exception("discord: following job %s failed (reference %s)", ticket.job_id, ref)
            with contextlib.suppress(Exception):
                await progress.settle()  # no progress edit may land after the apology
                await self._post(reply, f"Sorry, your images could not be sent (reference {ref}).")

    async def _progress(self, reply: Reply, text: str, preview: bytes | None = None) -> None:
        """Edit the progress text, and with ``preview`` the live preview attached to it."""
        if reply.interaction is None or not reply.can_edit():
            return
        try:
            if preview is not None:
                await reply.interaction.edit_original_response(
                    content=text, attachments=[discord.File(io.BytesIO(preview), filename="preview.jpg")])
                reply.previewed = True
            else:
                await reply.interaction.edit_original_response(content=text)
        except discord.NotFound:
            reply.live = False
        except discord.HTTPException as err:
            logger.warning("discord: progress edit failed: %s", err)

    async def tell_untold(self, untold: Untold, reply: Reply) -> None:
        """After a restart: tell a failure that was never told, then mark it told.

        The same words and nonce as the live path (:meth:`_follow`): while the token works the
        response is edited, after that Discord answers a repeated nonce with the first message.
        """
        label = "your private request" if reply.private else f"**{clip(untold.text, 200)}**"
        icon = "🚫" if untold.cancelled else "❌"
        await self._post(reply, f"{icon} {label}: {untold.message}", mention=True, nonce=f"failed:{untold.job_id}")
        await self.service.mark_told(untold.job_id)

    async def _tell_guarded(self, untold: Untold, reply: Reply) -> None:
        try:
            await self.tell_untold(untold, reply)
        except Exception:
            logger.exception("discord: telling job %s's failure failed; it stays owed", untold.job_id)

    # -- delivering ----------------------------------------------------------------------------

    async def _deliver_guarded(self, delivery: Delivery, reply: Reply) -> None:
        try:
            await self._deliver(delivery, reply)
        except Exception:
            logger.exception("discord: delivering job %s failed; it stays owed", delivery.job_id)

    async def _deliver(self, delivery: Delivery, reply: Reply) -> None:
        """Send the result (interaction edit, channel message or DM), record it, mark delivered."""
        spoiler = any(image.spoiler for image in delivery.images)
        note = " (made earlier: no quota used)" if delivery.cached else ""
        content = f"**{clip(delivery.text, 1500)}** — <@{reply.user_id}>{note}{variation_hint(delivery)}\n{RATE_HINT}"
        view = result_view(delivery)
        shown = await asyncio.to_thread(mask_overlay, delivery)  # an edit: the region it repainted
        extra = (shown, f"{delivery.job_id}-mask.jpg") if shown is not None else None
        if extra is not None:
            content += "\n🖌️ The second picture shows the region that was repainted (red)."
        nonce = f"imagine:{delivery.job_id}"  # Discord returns the first message for a repeated nonce
        message: discord.Message | None = None
        if reply.private and reply.recovered:
            message, looked = await self._posted_before(reply, delivery.job_id)
            if message is not None:
                await self._record(delivery.job_id, message)
                return
            content += "" if looked else f"\n{RESENT_NOTE}"
        if reply.private:
            data, ext = await asyncio.to_thread(render_grid, delivery.images, DM_LIMIT)
            message = await self._dm(reply, content, file_of(data, f"{delivery.job_id}.{ext}", spoiler), view,
                                     nonce, extra)
            if message is not None:
                await self._post(reply, "📬 Your images are in your DMs.", only_edit=True)
            elif reply.interaction is not None and reply.can_edit():
                await self._post(reply, "I couldn't DM you (your DMs are closed), so here they are, "
                                        "visible only to you.", only_edit=True)
                data, ext = await asyncio.to_thread(render_grid, delivery.images, reply.upload_limit)
                message = await reply.interaction.followup.send(
                    content, file=file_of(data, f"{delivery.job_id}.{ext}", spoiler), view=view,
                    ephemeral=True, wait=True)
        if message is None and reply.can_edit():  # the usual way: the "thinking…" message becomes the result
            data, ext = await asyncio.to_thread(render_grid, delivery.images, reply.upload_limit)
            message = await self._post(reply, content, file=(data, f"{delivery.job_id}.{ext}", spoiler),
                                       view=view, mention=True, only_edit=True, extra=extra)
        if message is None and not reply.can_edit():  # the token is gone: a channel message (or DM)
            if reply.recovered and not reply.private:
                message, looked = await self._posted_before(reply, delivery.job_id)
                if message is not None:
                    await self._record(delivery.job_id, message)
                    return
                content += "" if looked else f"\n{RESENT_NOTE}"
            data, ext = await asyncio.to_thread(render_grid, delivery.images, await self._channel_limit(reply))
            message = await self._post(reply, content, file=(data, f"{delivery.job_id}.{ext}", spoiler),
                                       view=view, mention=True, nonce=nonce, extra=extra)
        await self._record(delivery.job_id, message)

    async def _record(self, job_id: str, message: discord.Message | None) -> None:
        if message is not None:
            await self.service.remember_message(job_id, PLATFORM, None, message.id)
            await self.service.record_refs(job_id, {"jump_url": message.jump_url})
        await self.service.mark_delivered(job_id)

    async def _posted_before(self, reply: Reply, job_id: str) -> tuple[discord.Message | None, bool]:
        """This bot's message with the job's result in the target channel (or DM), if any; and
        whether the channel could be read. Reads from the request's time on, at most HISTORY_SCAN."""
        try:
            channel = (await (await self._user(reply.user_id)).create_dm() if reply.private
                       else await self._channel(reply))
            if channel is None:
                return None, False
            since = (reply.target.get("interaction") or {}).get("id")
            after = discord.Object(id=int(since) - 1) if since else None
            me = self.bot.user.id if self.bot.user is not None else None
            async for message in channel.history(limit=HISTORY_SCAN, after=after):
                if message.author.id == me and any(a.filename.startswith(f"{job_id}.") for a in message.attachments):
                    logger.info("discord: job %s was already posted (message %s)", job_id, message.id)
                    return message, True
        except discord.HTTPException as err:
            logger.warning("discord: cannot read channel history to check job %s (%s); re-sending with a note",
                           job_id, err)
            return None, False
        return None, True

    async def _post(self, reply: Reply, content: str, *, file: tuple[bytes, str, bool] | None = None,
                    view: discord.ui.View | None = None, mention: bool = False,
                    only_edit: bool = False, nonce: str | None = None,
                    extra: tuple[bytes, str] | None = None) -> discord.Message | None:
        """Edit the interaction response while its token works; else a channel message (or DM).

        ``nonce`` (at most 25 characters) makes the channel message idempotent: discord.py sends
        it with ``enforce_nonce``, and Discord answers a repeat from the same bot within a few
        minutes with the message it already created. ``extra`` (bytes, name): a second attachment
        (an edit's mask overlay).
        """
        extras = [discord.File(io.BytesIO(extra[0]), filename=extra[1])] if extra is not None else []
        if reply.interaction is not None and reply.can_edit():
            kwargs: dict[str, Any] = {"content": content, "view": view}
            if file is not None:
                kwargs["attachments"] = [file_of(*file), *extras]
            elif reply.previewed or reply.recovered:  # a live preview goes with the progress it belonged to
                kwargs["attachments"] = []
            try:
                return await reply.interaction.edit_original_response(**kwargs)
            except discord.NotFound:
                reply.live = False  # the token expired: fall back to a normal message
        if only_edit:
            return None
        channel = await self._channel(reply)
        if channel is None:
            return None
        kwargs = {"content": content, "allowed_mentions": MENTIONS if mention else discord.AllowedMentions.none()}
        if view is not None:
            kwargs["view"] = view
        if file is not None and extras:
            kwargs["files"] = [file_of(*file), *extras]
        elif file is not None:
            kwargs["file"] = file_of(*file)
        if nonce is not None:
            kwargs["nonce"] = nonce
        try:
            return await channel.send(**kwargs)
        except discord.Forbidden as err:
            if err.code == DMS_CLOSED:
                await self.service.set_dm_closed(Who(PLATFORM, str(reply.user_id)))
                logger.info("discord: DMs closed for user %s; result not sent", reply.user_id)
                return None
            raise

    async def _dm(self, reply: Reply, content: str, file: discord.File, view: discord.ui.View,
                  nonce: str | None = None, extra: tuple[bytes, str] | None = None) -> discord.Message | None:
        """Send to the user's DMs; None (and remembered) when they are closed."""
        who = Who(PLATFORM, str(reply.user_id))
        try:
            user = await self._user(reply.user_id)
            files = [file, *([discord.File(io.BytesIO(extra[0]), filename=extra[1])] if extra else [])]
            message = await user.send(content, files=files, view=view, nonce=nonce)
        except discord.Forbidden as err:
            if err.code != DMS_CLOSED:
                raise
            await self.service.set_dm_closed(who)
            return None
        await self.service.set_dm_closed(who, False)
        return message

    async def _user(self, user_id: int) -> discord.User:
        return self.bot.get_user(user_id) or await self.bot.fetch_user(user_id)

    async def _channel(self, reply: Reply) -> discord.abc.Messageable | None:
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

    async def _channel_limit(self, reply: Reply) -> int:
        guild_id = reply.target.get("guild_id")
        guild = self.bot.get_guild(int(guild_id)) if guild_id else None
        return guild.filesize_limit if guild is not None else DM_LIMIT
