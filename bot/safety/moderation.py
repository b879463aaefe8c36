"""Moderation: prompt and image checks in context, strikes, cooldowns, blocks, appeals, policies.

The service calls three things, each logged to ``moderation_log`` (who, scope, rule, action, when;
a 16-hex hash of the normalized prompt, never its text)::

    admit(who)                          before any work: strike block? cooldown? too soon again?
    check_prompt(who, request, target)  prompt + negative prompt against the blocklist → BlockedPrompt
                                        (a strike when sure; none for a low-confidence match)
    check_images(request, target, images, job_id)   one verdict per image: "ok" | "spoiler" | "blocked"

Escalation: each prompt blocked with high confidence (and blocked image, when ``strike_on_image_block``) is a strike;
``cooldown_after`` strikes inside ``strike_window_hours`` → a cooldown of ``cooldown_minutes``;
``block_after`` → blocked until an admin lifts it. ``appeal()`` files a case for review;
``lift()``/``reject()`` close it. Admins are exempt from cooldowns and strikes, not from checks.

Scopes: a policy applies per server/group, named from the delivery ``target`` the front end
passes (:func:`scope_of`). Target keys read: ``platform``, ``guild_id`` (Discord),
``chat_id`` (Telegram), ``nsfw`` (bool; False means the channel forbids spoilered explicit
images, so they are blocked instead).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot.safety.blocklist import BlockedPrompt, BlocklistChecker, PromptChecker, Verdict, rule_tag
from bot.safety.images import EXPLICIT, AllowAllImages, ImageClassifier, NudityClassifier
from bot.safety.lexicon import LOW
from bot.safety.normalize import skeleton
from bot.safety.settings import EXPLICIT_ACTIONS, LOW_CONFIDENCE_ACTIONS, ModerationSettings, ScopePolicy
from generation.core.errors import ImagineError
from storage import moderation as store
from storage import users
from storage.clock import from_text, utcnow
from storage.db import Database
from storage.moderation import Appeal, LogEntry

__all__ = [
    "EXPLICIT_ACTIONS",
    "LOW_CONFIDENCE_ACTIONS",
    "Moderation",
    "ModerationError",
    "ModerationSettings",
    "Restricted",
    "ScopePolicy",
    "Standing",
    "prompt_hash",
    "scope_of",
]

logger = logging.getLogger(__name__)


class Restricted(ImagineError):
    """The user may not make a request now: ``reason`` is "blocked", "cooldown" or "too_soon"."""

    def __init__(self, message: str, reason: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class ModerationError(ImagineError):
    """A moderation command cannot be done (not an admin, nothing to appeal, no such appeal)."""


class _Who(Protocol):
    platform: str
    user_id: str

    @property
    def key(self) -> str: ...


@dataclass(frozen=True)
class Standing:
    """A user's moderation state as shown to them or an admin."""

    user_key: str
    strikes: int
    cooldown_until: datetime | None
    blocked: bool
    appeal: Appeal | None


def scope_of(target: Mapping[str, Any] | None) -> str:
    """The policy scope of a delivery target: "discord:guild:<id>", "telegram:chat:<id>", … or "*"."""
    target = target or {}
    platform = target.get("platform")
    if platform == "discord":
        guild = target.get("guild_id")
        return f"discord:guild:{guild}" if guild else "discord:dm"
    if platform == "telegram" and target.get("chat_id") is not None:
        return f"telegram:chat:{target['chat_id']}"
    return "*"


def prompt_hash(prompt: str, negative: str = "") -> str:
    """16 hex of sha256 over the normalized prompt: lets an admin see repeats, not the text."""
    text = skeleton(prompt) + "\x00" + skeleton(negative)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _minutes(seconds: float) -> str:
    minutes = max(1, int(seconds + 59) // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


class Moderation:
    """Decisions in context of who asks and where the result goes, all logged."""

    def __init__(
        self,
        db: Database,
        settings: ModerationSettings | None = None,
        *,
        prompt_checker: PromptChecker | None = None,
        image_classifier: ImageClassifier | None = None,
        admins: Iterable[str] = (),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings or ModerationSettings()
        self.prompt_checker: PromptChecker = prompt_checker or BlocklistChecker.default()
        self.image_classifier: ImageClassifier = image_classifier or NudityClassifier(self.settings.image)
        self.admins = frozenset(admins)
        self._policies: dict[str, ScopePolicy] = {}  # scope -> policy (see policy_for)
        self.clock = clock

    @classmethod
    def permissive(cls, db: Database, *, prompt_checker: PromptChecker | None = None,
                   image_classifier: ImageClassifier | None = None, admins: Iterable[str] = (),
                   clock: Callable[[], datetime] = utcnow) -> Moderation:
        """No request spacing and no image detector unless given (a service built without config)."""
        return cls(db, ModerationSettings(request_interval_s=0.0), prompt_checker=prompt_checker,
                   image_classifier=image_classifier or AllowAllImages(), admins=admins, clock=clock)

    def is_admin(self, who: _Who) -> bool:
        return who.key in self.admins

    # -- the three service hooks -----------------------------------------------------------------

    async def admit(self, who: _Who, *, spaced: bool = True) -> None:
        """Refuse a blocked, cooling-down or too-quick user (Restricted) before any work is done.

        ``spaced=False``: no request spacing (an API key, which has its own per-key rate limit);
        blocks and cooldowns hold all the same.
        """
        if self.is_admin(who):
            return
        key, now = who.key, self.clock()
        standing = await store.get_standing(self.db, key)
        if standing.banned:
            await store.log(self.db, key, "request", "refused", rule="blocked", now=now)
            raise Restricted("You are blocked from making images after repeated blocked requests. "
                             "Use /appeal to ask an admin to review it.", "blocked")
        if standing.cooldown_until and (until := from_text(standing.cooldown_until)) > now:
            wait = (until - now).total_seconds()
            await store.log(self.db, key, "request", "refused", rule="cooldown", now=now)
            raise Restricted(f"You are on a cooldown after repeated blocked requests until {until:%H:%M} UTC "
                             f"(in {_minutes(wait)}). Use /appeal if this is a mistake.", "cooldown", wait)
        gap = self.settings.request_interval_s
        if gap > 0 and spaced:
            last = await store.claim_request(self.db, key, now, now - timedelta(seconds=gap))
            if last is not None:
                wait = max(0.0, gap - (now - from_text(last)).total_seconds())
                await store.log(self.db, key, "request", "refused", rule="request interval", now=now)
                raise Restricted(f"Please wait {max(1, round(wait))} s between requests.", "too_soon", wait)

    async def checker_for(self, target: Mapping[str, Any] | None) -> Any:
        """The prompt checker with the scope's allow list applied, for text the user did not type
        (a refined prompt): the same rules as :meth:`check_prompt`, without logging or strikes."""
        policy = await self.policy_for(scope_of(target))
        return _AllowListed(self.prompt_checker, frozenset(policy.allow)) if policy.allow else self.prompt_checker

    async def check_prompt(self, who: _Who, prompt: str, negative: str = "",
                           target: Mapping[str, Any] | None = None) -> Verdict:
        """Raise BlockedPrompt (naming the category) when the prompt is refused; the verdict otherwise.

        A high-confidence match is a strike. A low-confidence one (``verdict.tier == "low"``) is
        refused without a strike, or only logged as "warned" when ``low_confidence = "warn"``.
        The log's rule names the category and what fired, hashed so that it never repeats the
        prompt's words ("graphic gore [word:5d41402a]"; BlocklistChecker.explain reads it back).
        """
        scope = scope_of(target)
        policy = await self.policy_for(scope)
        if policy.allow:
            verdict = self.prompt_checker.check(prompt, negative, allow=frozenset(policy.allow))
        else:
            verdict = self.prompt_checker.check(prompt, negative)
        if verdict.allowed:
            return verdict
        category = verdict.category or "not allowed"
        rule = f"{category} [{rule_tag(verdict.rule)}]" if getattr(verdict, "rule", None) else category
        sure = getattr(verdict, "tier", None) != LOW
        digest = prompt_hash(prompt, negative)
        if not sure and self.settings.low_confidence == "warn":
            await store.log(self.db, who.key, "prompt", "warned", scope=scope, rule=rule, prompt_hash=digest,
                            now=self.clock())
            return verdict
        strike = sure and not self.is_admin(who)
        await store.log(self.db, who.key, "prompt", "blocked" if sure else "refused", scope=scope, rule=rule,
                        strike=strike, prompt_hash=digest, now=self.clock())
        if strike:
            note = await self._escalate(who.key, scope)
        else:
            note = "" if sure else "This did not count as a strike."
        raise BlockedPrompt(category, note)

    async def check_images(self, user_key: str, target: Mapping[str, Any] | None, images: Sequence[Any], *,
                           job_id: str | None = None) -> list[str]:
        """One verdict per image, by the scope's policy: "ok", "spoiler" or "blocked"; logged."""
        scope = scope_of(target)
        policy = await self.policy_for(scope)
        spoiler_allowed = policy.explicit == "spoiler" and (target or {}).get("nsfw") is not False
        verdicts: list[str] = []
        rules: list[str] = []
        for image in images:
            finding = await asyncio.to_thread(self.image_classifier.classify, image)
            if finding.forced is not None:
                verdict = finding.forced
            elif finding.category is None:
                verdict = "ok"
            elif finding.category == EXPLICIT and spoiler_allowed:
                verdict = "spoiler"
            else:
                verdict = "blocked"
            if finding.category and verdict != "ok":
                rules.append(finding.category)
            verdicts.append(verdict)
        now = self.clock()
        if "blocked" in verdicts:
            strike = self.settings.strike_on_image_block and user_key not in self.admins
            await store.log(self.db, user_key, "image", "blocked", scope=scope, rule=rules[0] if rules else None,
                            strike=strike, job_id=job_id, now=now)
            logger.info("job %s: images blocked (%s) in %s", job_id, rules[0] if rules else "?", scope)
            if strike:
                await self._escalate(user_key, scope)
        elif "spoiler" in verdicts:
            await store.log(self.db, user_key, "image", "spoiler", scope=scope, rule=rules[0] if rules else None,
                            job_id=job_id, now=now)
        return verdicts

    async def preview_ok(self, jpeg: bytes) -> bool:
        """Whether a live preview (a small JPEG of an image still forming) may be shown: only when
        the image classifier finds nothing at all in it. Nothing is logged and no strike is given
        (the finished image is judged as always); a spoiler-allowed scope gets no preview either."""
        def look() -> bool:
            from PIL import Image

            with Image.open(io.BytesIO(jpeg)) as opened:
                finding = self.image_classifier.classify(opened.convert("RGB"))
            return finding.forced in (None, "ok") and finding.category is None

        try:
            return await asyncio.to_thread(look)
        except Exception:  # an unreadable preview or a classifier failure: not shown
            logger.warning("a live preview could not be checked; not shown", exc_info=True)
            return False

    # -- strikes -----------------------------------------------------------------------------------

    async def _strikes(self, key: str, now: datetime) -> tuple[int, store.Standing]:
        standing = await store.get_standing(self.db, key)
        since = now - timedelta(hours=self.settings.strike_window_hours)
        floor = max(filter(None, [standing.strikes_since, since.isoformat(timespec="microseconds")]))
        return await store.count_strikes(self.db, key, floor), standing

    async def _escalate(self, key: str, scope: str) -> str:
        """Apply the thresholds after a new strike; a note for the user ("" when nothing to say)."""
        s, now = self.settings, self.clock()
        count, standing = await self._strikes(key, now)
        if s.block_after and count >= s.block_after:
            if not standing.banned:
                await store.set_banned(self.db, key, True)
                await store.log(self.db, key, "strike", "blocked", scope=scope, rule=f"{count} strikes", now=now)
                logger.warning("%s blocked after %d strikes", key, count)
            return "You are now blocked from making images; use /appeal to ask an admin to review it."
        if s.cooldown_after and count >= s.cooldown_after and s.cooldown_minutes > 0:
            until = now + timedelta(minutes=s.cooldown_minutes)
            await store.set_cooldown(self.db, key, until)
            await store.log(self.db, key, "strike", "cooldown", scope=scope, rule=f"{count} strikes", now=now)
            return (f"After {count} blocked requests you are on a cooldown for {_minutes(s.cooldown_minutes * 60)}"
                    + (f"; at {s.block_after} you are blocked." if s.block_after else "."))
        if s.cooldown_after and count >= max(1, s.cooldown_after - 1):
            return f"Another blocked request means a {_minutes(s.cooldown_minutes * 60)} cooldown."
        return ""

    async def standing(self, user_key: str) -> Standing:
        """Strikes counted now, cooldown, block and any open appeal of a user."""
        now = self.clock()
        count, row = await self._strikes(user_key, now)
        until = from_text(row.cooldown_until) if row.cooldown_until else None
        open_appeals = await store.list_appeals(self.db, "open", user_key=user_key, limit=1)
        return Standing(user_key, count, until if until and until > now else None, row.banned,
                        open_appeals[0] if open_appeals else None)

    # -- appeals -------------------------------------------------------------------------------------

    async def appeal(self, who: _Who, message: str = "") -> Appeal:
        """Put the caller's strikes/cooldown/block in the admins' review list."""
        current = await self.standing(who.key)
        if current.appeal is not None:
            raise ModerationError(f"Your appeal #{current.appeal.id} is already waiting for an admin.")
        state = "blocked" if current.blocked else "cooldown" if current.cooldown_until else ""
        if not state and current.strikes == 0:
            raise ModerationError("You have no strikes, cooldown or block to appeal.")
        now = self.clock()
        appeal = await store.open_appeal(self.db, who.key, message.strip()[:500], current.strikes, state, now)
        if appeal is None:  # raced with another appeal of the same user
            raise ModerationError("Your appeal is already waiting for an admin.")
        await store.log(self.db, who.key, "appeal", "opened", rule=state or "strikes", now=now)
        logger.info("%s appealed (#%d)", who.key, appeal.id)
        return appeal

    async def appeals(self, admin: _Who, status: str | None = "open") -> list[Appeal]:
        """The review list (open appeals, oldest first)."""
        self._require_admin(admin)
        return await store.list_appeals(self.db, status)

    async def lift(self, admin: _Who, subject: int | str) -> Standing:
        """Lift a user's block, cooldown and strikes: by appeal id or "platform:user_id"."""
        self._require_admin(admin)
        key, appeal = await self._subject(subject)
        now = self.clock()
        await store.reset_standing(self.db, key, now)
        platform, _, user_id = key.partition(":")
        row = await users.get_by_platform(self.db, platform, user_id)
        if row is not None and row.blocked:
            await users.set_blocked(self.db, row.id, False)
        for open_appeal in ([appeal] if appeal else await store.list_appeals(self.db, "open", user_key=key)):
            await store.resolve_appeal(self.db, open_appeal.id, "lifted", admin.key, now)
        await store.log(self.db, admin.key, "admin", "lifted", subject=key, now=now)
        logger.info("%s lifted %s", admin.key, key)
        return await self.standing(key)

    async def reject(self, admin: _Who, appeal_id: int) -> Appeal:
        """Close an open appeal without lifting anything."""
        self._require_admin(admin)
        key, appeal = await self._subject(int(appeal_id))
        now = self.clock()
        await store.resolve_appeal(self.db, int(appeal_id), "rejected", admin.key, now)
        await store.log(self.db, admin.key, "admin", "rejected", subject=key, now=now)
        found = await store.get_appeal(self.db, int(appeal_id))
        if found is None:  # deleted meanwhile (a concurrent /forget)
            raise LookupError(f"appeal {appeal_id} is gone")
        return found

    async def user_standing(self, admin: _Who, user_key: str) -> Standing:
        """An admin's look at one user."""
        self._require_admin(admin)
        return await self.standing(user_key)

    async def decisions(self, admin: _Who, user_key: str | None = None, limit: int = 20) -> list[LogEntry]:
        """The newest logged decisions (about one user when given)."""
        self._require_admin(admin)
        return await store.log_entries(self.db, user_key, limit=limit)

    async def _subject(self, subject: int | str) -> tuple[str, Appeal | None]:
        if isinstance(subject, int) or (isinstance(subject, str) and subject.strip().lstrip("#").isdecimal()):
            appeal = await store.get_appeal(self.db, int(str(subject).strip().lstrip("#")))
            if appeal is None:
                raise ModerationError(f"There is no appeal {subject}.")
            if appeal.status != "open":
                raise ModerationError(f"Appeal #{appeal.id} is already {appeal.status}.")
            return appeal.user_key, appeal
        if subject.count(":") != 1 or not all(subject.split(":")):
            raise ModerationError(f"Name a user as platform:user_id (e.g. discord:1234), not {subject!r}.")
        return subject, None

    # -- policies --------------------------------------------------------------------------------

    async def policy_for(self, scope: str) -> ScopePolicy:
        """The scope's stored policy, else its configured one, else the configured default.

        Cached per scope: only set_policy/reset_policy (in this process) change stored policies.
        """
        cached = self._policies.get(scope)
        if cached is not None:
            return cached
        stored = await store.get_policy(self.db, scope)
        if stored is not None:
            policy = ScopePolicy(stored.explicit, stored.allow)
        else:
            configured = self.settings.policies
            policy = configured.get(scope) or configured.get("*") or ScopePolicy(self.settings.explicit)
        self._policies[scope] = policy
        return policy

    async def set_policy(self, admin: _Who, scope: str, *, explicit: str | None = None,
                         allow: Iterable[str] | None = None, scope_admin: bool = False) -> ScopePolicy:
        """Change a scope's policy; bot admins anywhere, or ``scope_admin`` (the front end vouches
        that ``admin`` administers that server/group)."""
        if not scope_admin:
            self._require_admin(admin)
        current = await self.policy_for(scope)
        policy = ScopePolicy(explicit or current.explicit, tuple(current.allow if allow is None else allow))
        known = getattr(self.prompt_checker, "categories", None)
        unknown = [c for c in policy.allow if known is not None and c not in known]
        if unknown:
            raise ModerationError(f"Unknown prompt categor{'ies' if len(unknown) > 1 else 'y'}: "
                                  f"{', '.join(unknown)}. Known: {', '.join(known or ())}.")
        now = self.clock()
        await store.set_policy(self.db, scope, policy.explicit, policy.allow, admin.key, now)
        self._policies[scope] = policy
        await store.log(self.db, admin.key, "admin", "policy", scope=scope,
                        rule=f"explicit={policy.explicit}; allow={','.join(policy.allow) or '-'}", now=now)
        return policy

    async def reset_policy(self, admin: _Who, scope: str, *, scope_admin: bool = False) -> ScopePolicy:
        """Drop a scope's stored policy (the configured one applies again)."""
        if not scope_admin:
            self._require_admin(admin)
        await store.delete_policy(self.db, scope)
        self._policies.pop(scope, None)
        await store.log(self.db, admin.key, "admin", "policy reset", scope=scope, now=self.clock())
        return await self.policy_for(scope)

    def _require_admin(self, admin: _Who) -> None:
        if not self.is_admin(admin):
            raise ModerationError("Only the bot's admins can do that.")


class _AllowListed:
    """A prompt checker that always passes a scope's allow list."""

    def __init__(self, inner: Any, allow: frozenset[str]) -> None:
        self.inner, self.allow = inner, allow

    def check(self, prompt: str, negative: str = "") -> Any:
        return self.inner.check(prompt, negative, allow=self.allow)
