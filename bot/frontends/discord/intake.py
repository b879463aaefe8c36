"""Discord requests that make jobs: stored before they are acknowledged, answered after a crash.

The rule (DESIGN.md, "Acknowledge only what is stored"): an ``/imagine``, 🔄 or V click is
written to the service's inbox (``service.receive``, one small SQLite write, a few ms) *before*
the deferral tells Discord "thinking…". The job row then commits together with closing that
inbox row (``origin=("discord", interaction id)``), so:

- killed after the deferral, before the job row committed: the request is still in the inbox;
  the next start runs it again (:meth:`Intake.replay`) and answers it;
- killed after the job row committed: the inbox row is closed and the job is recovered by
  ``service.recover()``; a replay that races it gets ``AlreadyAccepted`` and does nothing.

What is stored (:func:`stored_request`) is enough to run the request again and to answer it
without the original :class:`discord.Interaction`: the command and its options, the user, the
channel, and the interaction's id, application id and token. While the token is valid (15
minutes from the interaction's snowflake time) :func:`interaction_from` rebuilds an
Interaction whose ``edit_original_response`` edits the "thinking…" message; after that the
answer goes to the channel (or DM) as a normal message that mentions the user.

A typo in the options is answered at once, ephemerally, and nothing is stored: that answer is
the acknowledgement. A refusal (quota, blocked prompt, …) is told first and closed afterwards
(``service.handled``): a crash between the two tells it once more after the restart (by
editing the same response while the token lives), and nothing is ever charged for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord.ext import commands

from bot.frontends.common import apology, clip, new_reference, tool_action, upload_too_large
from bot.frontends.discord.delivery import Reply
from bot.frontends.discord.messages import DM_LIMIT, PLATFORM
from bot.frontends.discord.moderation import appeal_view, wants_appeal_button
from bot.service import AlreadyAccepted, ImagineService, Ticket, Via, Who
from generation.core.errors import ImagineError, InvalidRequest

__all__ = ["Intake", "MAX_ATTEMPTS", "interaction_fields", "interaction_from", "stored_request"]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a stored request that failed to finish this many starts is dropped (logged)


def interaction_fields(interaction: discord.Interaction) -> dict[str, Any]:
    """What is needed to answer ``interaction`` later: ids, token, channel type, upload limit."""
    channel = interaction.channel
    return {
        "id": str(interaction.id),
        "application_id": str(interaction.application_id),
        "token": interaction.token,
        "channel_type": channel.type.value if channel is not None else None,
        "upload_limit": interaction.filesize_limit,
    }


def stored_request(interaction: discord.Interaction, kind: str, **fields: Any) -> dict[str, Any]:
    """The inbox payload of a job-making interaction (``kind``: imagine, reroll or variation)."""
    user = interaction.user
    channel = interaction.channel
    clicked = interaction.message  # a button's message: what the service checks a click on another's job against
    return {
        "kind": kind,
        **fields,
        **({"via": str(clicked.id)} if clicked is not None else {}),
        "user_id": str(user.id),
        "user_name": getattr(user, "display_name", "") or user.name,
        "channel_id": str(interaction.channel_id) if interaction.channel_id else None,
        "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
        "interaction": interaction_fields(interaction),
        "created_at": interaction.created_at.isoformat(),
        **({"nsfw": bool(channel.is_nsfw())} if interaction.guild_id and hasattr(channel, "is_nsfw") else {}),
    }


def interaction_from(bot: commands.Bot, record: dict[str, Any]) -> discord.Interaction | None:
    """An Interaction rebuilt from a stored request or job target, to edit its response; None without one.

    ``record`` has ``interaction`` (see :func:`interaction_fields`), ``user_id``, ``channel_id``
    and ``guild_id``. Its expiry comes from the snowflake id, so ``is_expired()`` is right.
    """
    fields = record.get("interaction")
    if not fields or not fields.get("token"):
        return None
    channel_id = record.get("channel_id")
    data: dict[str, Any] = {
        "id": fields["id"],
        "application_id": fields["application_id"],
        "type": 2,
        "token": fields["token"],
        "version": 1,
        "attachment_size_limit": int(fields.get("upload_limit") or DM_LIMIT),
        "user": {"id": str(record["user_id"]), "username": "", "discriminator": "0", "global_name": None,
                 "avatar": None},
    }
    if channel_id:
        data["channel_id"] = channel_id
        data["channel"] = {"id": channel_id, "type": fields.get("channel_type") or 0, "name": "", "position": 0}
    if record.get("guild_id"):
        data["guild_id"] = record["guild_id"]
        data["channel"]["guild_id"] = record["guild_id"]
        data["member"] = {"user": data.pop("user"), "roles": [], "joined_at": None, "deaf": False, "mute": False,
                          "flags": 0}
    try:
        return discord.Interaction(data=data, state=bot._connection)  # type: ignore[arg-type]
    except Exception:  # an incomplete record: answer by channel message instead
        logger.warning("discord: could not rebuild interaction %s", fields.get("id"), exc_info=True)
        return None


class Intake:
    """Accepting job-making interactions by the rule above, and replaying them after a restart."""

    service: ImagineService
    bot: commands.Bot

    if TYPE_CHECKING:  # provided by the front end and by Delivering
        def follow(self, ticket: Ticket, reply: Reply) -> None: ...

        async def _tell(self, interaction: discord.Interaction, text: str, *, remove_thinking: bool = False,
                        view: discord.ui.View | None = None) -> None: ...

        async def _post(self, reply: Reply, content: str, *, file: tuple[bytes, str, bool] | None = None,
                        view: discord.ui.View | None = None, mention: bool = False, only_edit: bool = False,
                        nonce: str | None = None) -> discord.Message | None: ...

    async def accept(self, interaction: discord.Interaction, kind: str, **fields: Any) -> None:
        """Store the request, then defer, then make the job and follow it."""
        key = str(interaction.id)
        stored = stored_request(interaction, kind, **fields)
        if not await self.service.receive(PLATFORM, key, stored):  # durable before Discord hears "got it"
            logger.info("discord: interaction %s arrived twice (a gateway replay); the first is answered", key)
            return
        await interaction.response.defer(thinking=True)
        await self._run(key, stored, interaction)

    async def replay(self) -> int:
        """Run the requests stored but not finished before a restart again; how many were run."""
        done = 0
        for item in await self.service.unhandled(PLATFORM):
            if item.attempts > MAX_ATTEMPTS:  # it failed every start so far: tell the user, stop trying
                ref = new_reference()
                logger.error("discord: dropping stored interaction %s after %d starts (reference %s)",
                             item.key, item.attempts - 1, ref)
                await self._refuse(None, item.payload, None, apology(ref), None)
                await self.service.handled(PLATFORM, item.key)
                continue
            logger.info("discord: answering interaction %s stored before the restart", item.key)
            await self._run(item.key, item.payload, None)
            done += 1
        return done

    async def _run(self, key: str, stored: dict[str, Any], live: discord.Interaction | None) -> None:
        """Make the job of a stored request and follow it; tell a refusal, then close the request."""
        reply: Reply | None = None
        try:
            settings = await self.service.settings(Who(PLATFORM, stored["user_id"], stored.get("user_name") or ""))
            reply = reply_for(self.bot, stored, bool(settings.get("private")), live)
            ticket = await _submit(self.service, key, stored, reply.target, self.bot)
        except AlreadyAccepted as err:  # made before the crash: recover() follows that job
            logger.info("discord: interaction %s already made job %s", key, err.job_id)
            return
        except ImagineError as err:
            view = appeal_view() if wants_appeal_button(err) else None
            await self._refuse(reply, stored, live, str(err), view)
        except Exception:
            ref = new_reference()
            logger.exception("discord: %s request %s failed (reference %s)", stored.get("kind"), key, ref)
            await self._refuse(reply, stored, live, apology(ref), None)
        else:
            self.follow(ticket, reply)
            if ticket.notes and live is not None:  # the refined prompt, or why the user's own was used
                try:
                    await live.followup.send(clip("\n".join(ticket.notes), 1900), ephemeral=True)
                except discord.HTTPException as err:
                    logger.warning("discord: could not send the notes of job %s: %s", ticket.job_id, err)
            return
        await self.service.handled(PLATFORM, key)

    async def _refuse(self, reply: Reply | None, stored: dict[str, Any], live: discord.Interaction | None,
                      text: str, view: discord.ui.View | None) -> None:
        if live is not None:  # ephemeral, as for any refusal
            await self._tell(live, text, remove_thinking=True, view=view)
            return
        reply = reply or reply_for(self.bot, stored, False)
        try:  # after a restart: in the deferred response while its token works, else in the channel
            await self._post(reply, f"<@{reply.user_id}> {text}", view=view, mention=True,
                             nonce=f"refused:{stored['interaction']['id'][-12:]}")
        except discord.HTTPException as err:
            logger.warning("discord: could not tell user %s: %s (%s)", reply.user_id, text, err)


async def _submit(service: ImagineService, key: str, stored: dict[str, Any], target: dict[str, Any],
                  bot: commands.Bot) -> Ticket:
    """Make (or find) the job of a stored request; ``AlreadyAccepted`` when it was made before."""
    who = Who(PLATFORM, stored["user_id"], stored.get("user_name") or "")
    origin = (PLATFORM, key)
    kind = stored["kind"]
    if kind == "imagine":
        image = await download_attachment(bot, stored["image"]) if stored.get("image") else None
        return await service.imagine(who, stored["prompt"], target=target, origin=origin, image=image,
                                     **stored.get("options", {}))
    via = Via(None, stored["via"]) if stored.get("via") else None
    if kind == "reroll":
        return await service.reroll(who, stored["job_id"], target=target, origin=origin, via=via)
    if kind == "variation":
        return await service.variation(who, stored["job_id"], int(stored["index"]), target=target, origin=origin,
                                       via=via)
    if kind == "edit":  # 🖌️ Vary (Region): the modal's two fields (bot.frontends.discord.edits)
        return await service.edit(who, stored["job_id"], int(stored["index"]), stored["prompt"],
                                  words=stored["words"], target=target, origin=origin, via=via)
    if kind == "tool":  # upscale, zoom out, pan (bot.frontends.common.TOOLS)
        return await tool_action(service, who, stored["job_id"], int(stored["index"]), stored["action"],
                                 target=target, origin=origin, via=via)
    raise ValueError(f"unknown stored Discord request kind {kind!r}")


async def download_attachment(bot: commands.Bot, image: dict[str, Any]) -> bytes:
    """The bytes of an attached image (from Discord's CDN), or InvalidRequest saying what to do."""
    too_large = upload_too_large(int(image.get("size") or 0))
    if too_large:
        raise InvalidRequest("image", too_large)
    try:
        data = await bot.http.get_from_cdn(image["url"])
    except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError) as err:
        logger.info("discord: attachment %s could not be downloaded: %s", image.get("filename"), err)
        raise InvalidRequest("image", "Your image could not be downloaded from Discord (the link may have "
                                      "expired); attach it again.") from None
    too_large = upload_too_large(len(data))
    if too_large:
        raise InvalidRequest("image", too_large)
    return data


def reply_target(stored: dict[str, Any], private: bool) -> dict[str, Any]:
    """The job target (where its progress and result go) of a stored request."""
    return {
        "platform": PLATFORM,
        "user_id": stored["user_id"],
        "channel_id": stored.get("channel_id"),
        "guild_id": stored.get("guild_id"),
        "private": private,
        "interaction": stored.get("interaction"),
        **({"nsfw": stored["nsfw"]} if "nsfw" in stored else {}),
    }


def reply_for(bot: commands.Bot, stored: dict[str, Any], private: bool,
              interaction: discord.Interaction | None = None) -> Reply:
    """A Reply for a stored request or job target: the live interaction, else one rebuilt from it."""
    inter = interaction if interaction is not None else interaction_from(bot, stored)
    limit = int((stored.get("interaction") or {}).get("upload_limit") or DM_LIMIT)
    return Reply(reply_target(stored, private), inter, limit)
