"""Moderation in the console: /appeal, and /appeals /lift /reject /strikes /policy /modlog for admins.

Every decision is the service's (:class:`bot.safety.moderation.Moderation`). The commands are
given the console they serve (:class:`ModeratedFront`); this module does not import it.
"""

from __future__ import annotations

from typing import Protocol

from bot.service import ImagineService, Who

__all__ = ["MODERATION_COMMANDS", "ConsoleModeration", "ModeratedFront"]

MODERATION_COMMANDS = ("/appeal", "/appeals", "/lift", "/reject", "/strikes", "/policy", "/modlog")


class ModeratedFront(Protocol):
    """What the moderation commands need of the console."""

    service: ImagineService
    who: Who

    def say(self, text: str) -> None: ...


class ConsoleModeration:
    """The moderation commands, bound to the console (its service, user and output)."""

    def __init__(self, front: ModeratedFront) -> None:
        self.front = front

    async def run(self, command: str, rest: str, args: list[str]) -> None:
        """/appeal and the admins' moderation commands."""
        moderation = self.front.service.moderation
        if command == "/appeal":
            appeal = await moderation.appeal(self.front.who, rest)
            self.front.say(f"Appeal #{appeal.id} filed; an admin will review it.")
        elif command == "/appeals":
            found = await moderation.appeals(self.front.who)
            self.front.say("No open appeals." if not found else f"{len(found)} open appeal(s):")
            for a in found:
                self.front.say(f"  #{a.id} {a.user_key} {a.created_at[:16].replace('T', ' ')} "
                         f"{a.state or 'strikes'} ({a.strikes} strike(s)) {a.message!r}")
        elif command == "/lift" and len(args) == 1:
            standing = await moderation.lift(self.front.who, args[0])
            self.front.say(f"Lifted {standing.user_key}: no block, no cooldown, strikes reset.")
        elif command == "/reject" and len(args) == 1:
            appeal = await moderation.reject(self.front.who, args[0].lstrip("#"))
            self.front.say(f"Appeal #{appeal.id} of {appeal.user_key} rejected.")
        elif command == "/strikes" and len(args) == 1:
            s = await moderation.user_standing(self.front.who, args[0])
            until = f"{s.cooldown_until:%Y-%m-%d %H:%M} UTC" if s.cooldown_until else "none"
            self.front.say(f"{s.user_key}: {s.strikes} strike(s), cooldown {until}, "
                     f"{'blocked' if s.blocked else 'not blocked'}"
                     + (f", appeal #{s.appeal.id} open" if s.appeal else ""))
        elif command == "/policy":
            await self._policy(args)
        elif command == "/modlog" and len(args) <= 1:
            for e in await moderation.decisions(self.front.who, args[0] if args else None):
                self.front.say(f"  {e.created_at[:19].replace('T', ' ')} {e.user_key} {e.kind} {e.action}"
                         f" {e.rule or ''} scope={e.scope}" + (f" about={e.subject}" if e.subject else ""))
        else:
            self.front.say(f"Usage: see /help ({command}).")

    async def _policy(self, args: list[str]) -> None:
        scope = "*"
        if args and "=" not in args[0]:
            scope, args = args[0], args[1:]
        changes: dict[str, object] = {}
        for pair in args:
            key, eq, value = pair.partition("=")
            if key == "explicit" and eq:
                changes["explicit"] = value
            elif key == "allow" and eq:
                changes["allow"] = [c.strip() for c in value.replace("_", " ").split(",") if c.strip()]
            else:
                self.front.say("Usage: /policy [SCOPE] [explicit=block|spoiler] [allow=CATEGORY,...]")
                return
        moderation = self.front.service.moderation
        if changes:
            policy = await moderation.set_policy(self.front.who, scope, **changes)  # type: ignore[arg-type]
        else:
            policy = await moderation.policy_for(scope)
        self.front.say(f"Policy of {scope}: explicit images {policy.explicit}; "
                 f"allowed prompt categories: {', '.join(policy.allow) or 'none'}")
