"""Moderation commands of the Discord front end: /appeal, the Appeal button and /admin moderation.

::

    /appeal [message]                          ask an admin to review your strikes, cooldown or block
    /admin appeals                             open appeals, oldest first
    /admin lift target:<appeal id | platform:user | @user>   lift block, cooldown and strikes
    /admin reject appeal:<id>                  close an appeal without lifting
    /admin strikes user:<platform:user | @user | id>         a user's strikes, cooldown, block
    /admin policy [explicit] [allow] [reset]   this server's image/prompt policy (show or set)
    /admin modlog [user]                       the newest moderation decisions

The service (:class:`bot.safety.moderation.Moderation`) decides who may do what: only the
config's admins, except ``/admin policy``, which a member with the Manage Server permission may
use for their own server (the front end vouches for that with ``scope_admin=True``). Refusals
(:class:`~bot.safety.moderation.ModerationError`) are shown ephemerally.

A request refused because the user is blocked or on a cooldown (and a blocked prompt) gets an
ephemeral answer with an **Appeal** button (``imagine:appeal``), which files an appeal at once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import discord
from discord import app_commands

from bot.frontends.common import clip
from bot.frontends.discord.messages import PLATFORM, who_of
from bot.safety.blocklist import BlockedPrompt
from bot.safety.moderation import Restricted, scope_of
from bot.service import ImagineService
from generation.core.errors import ImagineError

__all__ = ["AppealButton", "DiscordModeration", "MODERATION_ITEMS", "ModeratedFront", "appeal_view",
           "wants_appeal_button"]

_LIMIT = 1900  # characters of one ephemeral answer
_MENTION = re.compile(r"<@!?(\d+)>")


class ModeratedFront(Protocol):
    """What the moderation commands need of the front end they serve."""

    service: ImagineService

    async def guard(self, interaction: discord.Interaction, action: Callable[[], Awaitable[None]],
                    *, remove_thinking: bool = False) -> None: ...


def user_key(text: str) -> str:
    """"platform:user" as given; a Discord mention or a bare id → "discord:<id>"."""
    text = text.strip()
    if (mention := _MENTION.fullmatch(text)) is not None:
        return f"{PLATFORM}:{mention[1]}"
    if text.isdecimal():
        return f"{PLATFORM}:{text}"
    return text


def wants_appeal_button(err: ImagineError) -> bool:
    """Errors whose answer offers an Appeal button: blocked/cooldown refusals, blocked prompts."""
    return (isinstance(err, Restricted) and err.reason in ("blocked", "cooldown")) or isinstance(err, BlockedPrompt)


class AppealButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:appeal"):
    """Appeal: put the clicker's strikes, cooldown or block in the admins' review list."""

    def __init__(self) -> None:
        super().__init__(discord.ui.Button(label="Appeal", emoji="⚖️", style=discord.ButtonStyle.primary,
                                           custom_id="imagine:appeal"))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> AppealButton:
        return cls()

    async def callback(self, interaction: discord.Interaction) -> None:
        """File the appeal (no message; /appeal takes one)."""
        front = interaction.client.front  # type: ignore[attr-defined]
        await front.moderation.appeal(interaction, None)


MODERATION_ITEMS = (AppealButton,)


def appeal_view() -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(AppealButton())
    return view


class DiscordModeration:
    """The moderation commands, bound to the front end (its service and error handling)."""

    def __init__(self, front: ModeratedFront) -> None:
        self.front = front

    @property
    def _moderation(self) -> Any:
        return self.front.service.moderation

    async def _answer(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(clip(text, _LIMIT), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    async def appeal(self, interaction: discord.Interaction, message: str | None) -> None:
        """/appeal and the Appeal button."""
        async def run() -> None:
            appeal = await self._moderation.appeal(who_of(interaction.user), message or "")
            what = {"blocked": "your block", "cooldown": "your cooldown"}.get(appeal.state, "your strikes")
            await self._answer(interaction, f"⚖️ Appeal #{appeal.id} filed: an admin will review {what} "
                                            f"({appeal.strikes} strike(s)). If they lift it, you can make "
                                            "images again right away; until then the limit stays.")

        await self.front.guard(interaction, run)

    async def appeals(self, interaction: discord.Interaction) -> None:
        async def run() -> None:
            found = await self._moderation.appeals(who_of(interaction.user))
            if not found:
                await self._answer(interaction, "No open appeals.")
                return
            lines = [f"{len(found)} open appeal(s) — `/admin lift target:<id>` or `/admin reject appeal:<id>`:"]
            for a in found:
                note = f" — “{clip(a.message, 200)}”" if a.message else ""
                lines.append(f"**#{a.id}** `{a.user_key}` {a.created_at[:16].replace('T', ' ')} UTC, "
                             f"{a.state or 'strikes'} ({a.strikes} strike(s)){note}")
            await self._answer(interaction, "\n".join(lines))

        await self.front.guard(interaction, run)

    async def lift(self, interaction: discord.Interaction, target: str) -> None:
        async def run() -> None:
            subject = target.strip().lstrip("#")
            standing = await self._moderation.lift(who_of(interaction.user),
                                                   subject if subject.isdecimal() and len(subject) < 12
                                                   else user_key(target))
            await self._answer(interaction, f"✅ Lifted `{standing.user_key}`: no block, no cooldown, "
                                            "strikes reset.")

        await self.front.guard(interaction, run)

    async def reject(self, interaction: discord.Interaction, appeal: str) -> None:
        async def run() -> None:
            number = appeal.strip().lstrip("#")
            if not number.isdecimal():
                raise ImagineError(f"Name an appeal by its number (e.g. 3), not {appeal!r}.")
            closed = await self._moderation.reject(who_of(interaction.user), int(number))
            await self._answer(interaction, f"Appeal #{closed.id} of `{closed.user_key}` rejected.")

        await self.front.guard(interaction, run)

    async def strikes(self, interaction: discord.Interaction, user: str) -> None:
        async def run() -> None:
            s = await self._moderation.user_standing(who_of(interaction.user), user_key(user))
            until = discord.utils.format_dt(s.cooldown_until, "R") if s.cooldown_until else "none"
            await self._answer(interaction, f"`{s.user_key}`: {s.strikes} strike(s), cooldown {until}, "
                                            f"{'blocked' if s.blocked else 'not blocked'}"
                                            + (f", appeal #{s.appeal.id} open" if s.appeal else "") + ".")

        await self.front.guard(interaction, run)

    async def policy(self, interaction: discord.Interaction, explicit: str | None, allow: str | None,
                     reset: bool | None) -> None:
        """Show or set this server's policy: bot admins, or members with Manage Server here."""
        async def run() -> None:
            who = who_of(interaction.user)
            guild_id = interaction.guild_id
            scope = scope_of({"platform": PLATFORM, "guild_id": str(guild_id) if guild_id else None})
            # Manage Server in this server vouches for its own policy; in a DM only bot admins
            server_admin = bool(guild_id) and interaction.permissions.manage_guild
            moderation = self._moderation
            if reset:
                policy = await moderation.reset_policy(who, scope, scope_admin=server_admin)
                said = "Reset to the default. "
            elif explicit is not None or allow is not None:
                changes: dict[str, Any] = {}
                if explicit is not None:
                    changes["explicit"] = explicit
                if allow is not None:
                    changes["allow"] = [c.strip() for c in allow.replace("_", " ").split(",")
                                        if c.strip() and c.strip().lower() not in ("none", "-")]
                policy = await moderation.set_policy(who, scope, scope_admin=server_admin, **changes)
                said = "Saved. "
            else:
                policy = await moderation.policy_for(scope)
                said = ""
            place = "this server" if guild_id else "DMs with the bot"
            await self._answer(interaction, f"{said}Policy of {place} (`{scope}`): explicit images "
                                            f"**{policy.explicit}**"
                                            + (" (spoilered in age-restricted channels only)"
                                               if policy.explicit == "spoiler" else "")
                                            + f"; allowed prompt categories: {', '.join(policy.allow) or 'none'}.")

        await self.front.guard(interaction, run)

    async def modlog(self, interaction: discord.Interaction, user: str | None) -> None:
        async def run() -> None:
            entries = await self._moderation.decisions(who_of(interaction.user), user_key(user) if user else None)
            if not entries:
                await self._answer(interaction, "No moderation decisions logged.")
                return
            lines = [f"`{e.created_at[:19].replace('T', ' ')}` `{e.user_key}` {e.kind} **{e.action}**"
                     f"{' ' + e.rule if e.rule else ''} ({e.scope})" + (f" about `{e.subject}`" if e.subject else "")
                     + (" ⚠️strike" if e.strike else "") for e in entries]
            text = ""
            for line in lines:  # newest first; keep whole lines under the limit
                if len(text) + len(line) + 1 > _LIMIT:
                    break
                text += line + "\n"
            await self._answer(interaction, text)

        await self.front.guard(interaction, run)

    # -- command definitions ---------------------------------------------------------------------

    def commands(self, admin: app_commands.Group) -> list[app_commands.Command[Any, Any, Any]]:
        """Add the moderation subcommands to ``admin``; return the top-level /appeal."""
        mod = self

        @app_commands.command(name="appeal", description="Ask an admin to review your strikes, cooldown or block")
        @app_commands.describe(message="Anything the admin should know (optional)")
        async def appeal(interaction: discord.Interaction,
                         message: app_commands.Range[str, 0, 500] | None = None) -> None:
            await mod.appeal(interaction, message)

        @admin.command(name="appeals", description="Open appeals, oldest first")
        async def appeals(interaction: discord.Interaction) -> None:
            await mod.appeals(interaction)

        @admin.command(name="lift", description="Lift a user's block, cooldown and strikes")
        @app_commands.describe(target="An appeal number, platform:user (e.g. discord:1234) or a @mention")
        async def lift(interaction: discord.Interaction, target: str) -> None:
            await mod.lift(interaction, target)

        @admin.command(name="reject", description="Close an appeal without lifting anything")
        @app_commands.describe(appeal="The appeal number")
        async def reject(interaction: discord.Interaction, appeal: str) -> None:
            await mod.reject(interaction, appeal)

        @admin.command(name="strikes", description="A user's strikes, cooldown and block")
        @app_commands.describe(user="platform:user (e.g. discord:1234), a @mention or a Discord user id")
        async def strikes(interaction: discord.Interaction, user: str) -> None:
            await mod.strikes(interaction, user)

        @admin.command(name="policy", description="Show or set this server's image and prompt policy")
        @app_commands.describe(explicit="Explicit images: block them, or send them spoilered (NSFW channels only)",
                               allow="Prompt categories to allow here, comma-separated ('none' clears)",
                               reset="Go back to the configured default")
        @app_commands.choices(explicit=[app_commands.Choice(name="block", value="block"),
                                        app_commands.Choice(name="spoiler", value="spoiler")])
        async def policy(interaction: discord.Interaction, explicit: app_commands.Choice[str] | None = None,
                         allow: str | None = None, reset: bool | None = None) -> None:
            await mod.policy(interaction, explicit.value if explicit else None, allow, reset)

        @admin.command(name="modlog", description="The newest moderation decisions")
        @app_commands.describe(user="Only about this user (platform:user, @mention or id)")
        async def modlog(interaction: discord.Interaction, user: str | None = None) -> None:
            await mod.modlog(interaction, user)

        return [appeal]
