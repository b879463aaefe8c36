"""Moderation on Telegram: /appeal, the 📝 Appeal button under a refusal, /admin moderation.

Every decision is the service's (:class:`bot.safety.Moderation`); this module only parses the
commands and words the replies. It is given the front end it serves (:class:`ModeratedFront`:
its bot and service); it does not import it. Admin subcommands of ``/admin``::

    appeals                         open appeals, oldest first
    lift APPEAL|USER                lift a block, cooldown and strikes (closes the appeal)
    reject APPEAL                   close an appeal without lifting
    strikes USER                    a user's strikes, cooldown, block, open appeal
    modlog [USER]                   the newest moderation decisions
    policy [explicit=block|spoiler] [allow=a,b|none] [reset]   this chat's policy

USER is a Telegram id or ``platform:id``. The bot's admins (config) may do all of it; a group's
administrator or owner (``getChatMember``) may set that group's policy; anyone may see it.
"""

from __future__ import annotations

import logging
import shlex
from typing import Any, Protocol

from telegram import Message, User
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError

from bot.safety.moderation import Moderation, ScopePolicy, Standing, scope_of
from bot.frontends.common import clip
from bot.service import ImagineService, Who
from generation.core.errors import ImagineError

__all__ = [
    "ADMIN_SUBCOMMANDS",
    "ADMIN_USAGE",
    "APPEALABLE",
    "ModeratedFront",
    "admin_command",
    "appeal_text",
    "notify_admins",
]

logger = logging.getLogger(__name__)

APPEALABLE = ("cooldown", "blocked")  # Restricted reasons a refusal offers the Appeal button for
ADMIN_SUBCOMMANDS = ("appeals", "lift", "reject", "strikes", "modlog", "policy")
ADMIN_USAGE = (
    "Moderation: /admin appeals · /admin lift APPEAL|USER · /admin reject APPEAL · /admin strikes USER · "
    "/admin modlog [USER] · /admin policy [explicit=block|spoiler] [allow=category,…|none] [reset] "
    "(this chat; group admins may set their group's)"
)
_POLICY_USAGE = ("Usage: /admin policy [explicit=block|spoiler] [allow=category,…|none] [reset] — "
                 "categories with spaces take _ (explicit_sexual_content)")
_GROUPS = (ChatType.GROUP, ChatType.SUPERGROUP)
_CHAT_ADMINS = (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)


class ModeratedFront(Protocol):
    """What the moderation commands need of the front end they serve."""

    service: ImagineService

    @property
    def bot(self) -> Any: ...


def appeal_text(appeal_id: int) -> str:
    return (f"📝 Appeal #{appeal_id} filed. An admin will review it; once it is lifted you can make "
            "images again.")


def user_key(text: str) -> str:
    """``platform:id`` from a Telegram id or ``platform:id``."""
    text = text.strip()
    if text.isdecimal():
        return f"telegram:{text}"
    platform, sep, uid = text.partition(":")
    if not sep or not uid or not platform.isalpha():
        raise ImagineError(f"A user is a Telegram id or platform:id, not {text!r}.")
    return f"{platform.lower()}:{uid}"


def standing_text(s: Standing) -> str:
    until = f"until {s.cooldown_until:%Y-%m-%d %H:%M} UTC" if s.cooldown_until else "none"
    return (f"{s.user_key}: {s.strikes} strike(s), cooldown {until}, "
            f"{'blocked' if s.blocked else 'not blocked'}" + (f", appeal #{s.appeal.id} open" if s.appeal else ""))


def policy_text(scope: str, policy: ScopePolicy, saved: bool = False) -> str:
    explicit = "sent behind a spoiler" if policy.explicit == "spoiler" else "blocked"
    return (("Saved. " if saved else "") + f"Policy of this chat ({scope}): explicit images are {explicit}; "
            f"allowed prompt categories: {', '.join(policy.allow) or 'none'}.")


async def notify_admins(front: ModeratedFront, text: str) -> None:
    """Tell the bot's Telegram admins in their private chats (best effort)."""
    bot = front.bot
    for key in sorted(front.service.moderation.admins):
        platform, _, uid = key.partition(":")
        if platform != "telegram" or not uid.lstrip("-").isdecimal():
            continue
        try:
            await bot.send_message(int(uid), clip(text, 4096))
        except TelegramError as err:
            logger.info("could not tell admin %s: %s", key, err)


async def _is_chat_admin(bot: Any, message: Message, user: User) -> bool:
    """Whether ``user`` administers the group ``message`` is in (False in private chats)."""
    if message.chat.type not in _GROUPS:
        return False
    try:
        member = await bot.get_chat_member(message.chat_id, user.id)
    except TelegramError as err:
        logger.info("getChatMember(%s, %s) failed: %s", message.chat_id, user.id, err)
        return False
    return member.status in _CHAT_ADMINS


async def admin_command(front: ModeratedFront, message: Message, user: User, who: Who, args: list[str]) -> str:
    """Run ``/admin <moderation subcommand> …``; the reply text (ModerationError propagates)."""
    bot, moderation = front.bot, front.service.moderation
    sub, rest = args[0].lower(), args[1:]
    if sub == "appeals" and not rest:
        found = await moderation.appeals(who)
        if not found:
            return "No open appeals."
        lines = [f"{len(found)} open appeal(s), oldest first:"]
        for a in found:
            note = f" “{clip(a.message, 200)}”" if a.message else ""
            lines.append(f"#{a.id} {a.user_key} · {a.created_at[:16].replace('T', ' ')} · "
                         f"{a.state or 'strikes'} ({a.strikes} strike(s)){note}")
        lines.append("/admin lift ID to lift · /admin reject ID to close")
        return clip("\n".join(lines), 4096)
    if sub == "lift" and len(rest) == 1:
        subject = rest[0].lstrip("#") if rest[0].lstrip("#").isdecimal() else user_key(rest[0])
        standing = await moderation.lift(who, subject)
        platform, _, uid = standing.user_key.partition(":")
        if platform == "telegram" and uid.isdecimal():
            try:
                await bot.send_message(int(uid), "✅ An admin lifted your cooldown/block and strikes; "
                                                 "you can make images again.")
            except TelegramError as err:
                logger.info("could not tell %s about the lift: %s", standing.user_key, err)
        return f"Lifted {standing.user_key}: no block, no cooldown, strikes reset."
    if sub == "reject" and len(rest) == 1 and rest[0].lstrip("#").isdecimal():
        appeal = await moderation.reject(who, int(rest[0].lstrip("#")))
        return f"Appeal #{appeal.id} of {appeal.user_key} rejected."
    if sub == "strikes" and len(rest) == 1:
        return standing_text(await moderation.user_standing(who, user_key(rest[0])))
    if sub == "modlog" and len(rest) <= 1:
        entries = await moderation.decisions(who, user_key(rest[0]) if rest else None)
        if not entries:
            return "No moderation decisions logged yet."
        lines = ["Newest moderation decisions:"]
        for e in entries:
            about = f" · about {e.subject}" if e.subject else ""
            rule = f" {e.rule}" if e.rule else ""
            lines.append(f"{e.created_at[:19].replace('T', ' ')} {e.user_key} {e.kind} {e.action}{rule}"
                         f" · {e.scope}{about}")
        return clip("\n".join(lines), 4096)
    if sub == "policy":
        return await _policy(bot, moderation, message, user, who, rest)
    if not moderation.is_admin(who):
        raise ImagineError("Only the bot's admins can do that.")
    return ADMIN_USAGE


async def _policy(bot: Any, moderation: Moderation, message: Message, user: User, who: Who,
                  args: list[str]) -> str:
    scope = scope_of({"platform": "telegram", "chat_id": message.chat_id})
    try:
        pairs = shlex.split(" ".join(args))
    except ValueError:
        return _POLICY_USAGE
    changes: dict[str, Any] = {}
    reset = False
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.lower()
        if key == "explicit" and eq:
            changes["explicit"] = value.lower()
        elif key == "allow" and eq:
            names = [c.strip().replace("_", " ") for c in value.split(",") if c.strip()]
            changes["allow"] = [] if names in ([], ["none"], ["-"]) else names
        elif key == "reset" and not eq:
            reset = True
        else:
            return _POLICY_USAGE
    if reset and changes:
        return _POLICY_USAGE
    if not changes and not reset:
        return policy_text(scope, await moderation.policy_for(scope))
    scope_admin = not moderation.is_admin(who) and await _is_chat_admin(bot, message, user)
    if not scope_admin and not moderation.is_admin(who):
        raise ImagineError("Only the bot's admins, or a group's administrators in their group, "
                           "can change this chat's policy.")
    if reset:
        policy = await moderation.reset_policy(who, scope, scope_admin=scope_admin)
        return "Reset. " + policy_text(scope, policy)
    if changes.get("explicit") not in (None, "block", "spoiler"):
        return _POLICY_USAGE
    policy = await moderation.set_policy(who, scope, scope_admin=scope_admin, **changes)
    return policy_text(scope, policy, saved=True)
