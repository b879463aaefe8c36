"""Discord basics the modules of this front end share: who a user is, attachments, DM limits, texts."""

from __future__ import annotations

import io

import discord

from bot.service import Via, Who

__all__ = ["DM_LIMIT", "DMS_CLOSED", "DMS_CLOSED_TEXT", "MENTIONS", "PLATFORM", "RATE_HINT", "file_of", "via_of",
           "who_of"]

PLATFORM = "discord"
DM_LIMIT = discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES  # what a bot may upload to a DM
DMS_CLOSED = 50007  # the error code of a DM to a user whose DMs are closed
MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
RATE_HINT = "React 1️⃣–5️⃣ to rate."
DMS_CLOSED_TEXT = ("I can't send you direct messages: your DMs are closed. Allow direct messages from "
                   "server members (Privacy Settings), then try again.")


def via_of(interaction: discord.Interaction) -> Via | None:
    """The message a button click came from (Discord says which), for the service's authority check."""
    message = interaction.message
    return Via(None, message.id) if message is not None else None


def who_of(user: discord.abc.User) -> Who:
    """The service identity of a Discord user."""
    return Who(PLATFORM, str(user.id), getattr(user, "display_name", "") or user.name)


def file_of(data: bytes, name: str, spoiler: bool = False) -> discord.File:
    """An attachment from bytes in memory."""
    return discord.File(io.BytesIO(data), filename=name, spoiler=spoiler)
