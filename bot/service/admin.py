"""Admin commands: per-user quota limits, blocks, and bot-wide statistics."""

from __future__ import annotations

import logging
from typing import Any

from bot.service.rollout import compare_text, models_text, overview, set_share
from bot.service.accounts_rules import QuotaStatus
from bot.service.context import ServiceContext
from bot.service.tickets import Who
from generation.core.errors import InvalidRequest
from storage import jobs, quotas, users
from storage.rating_stats import DIMENSIONS, ratings_by, recent_comments

__all__ = ["AdminPart"]

logger = logging.getLogger(__name__)


class AdminPart(ServiceContext):
    """What only the bot's admins may do."""

    async def admin_set_quota(self, admin: Who, platform: str, user_id: str | int,
                              limit: int | None) -> QuotaStatus:
        """Give a user their own limit per window (None: back to the default)."""
        self._require_admin(admin)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidRequest("limit", f"The limit must be a whole number, 0 or more, not {limit!r}.")
        user = await users.get_or_create(self.db, platform, str(user_id))
        await quotas.set_override(self.db, user.id, limit)
        logger.info("%s set quota of %s:%s to %s", admin.key, platform, user_id, limit)
        return await self._quota_status(user.id)

    async def admin_block(self, admin: Who, platform: str, user_id: str | int) -> None:
        """Refuse all further requests from a user."""
        self._require_admin(admin)
        user = await users.get_or_create(self.db, platform, str(user_id))
        await users.set_blocked(self.db, user.id, True)
        logger.info("%s blocked %s:%s", admin.key, platform, user_id)

    async def admin_unblock(self, admin: Who, platform: str, user_id: str | int) -> None:
        """Accept requests from a blocked user again."""
        self._require_admin(admin)
        user = await users.get_or_create(self.db, platform, str(user_id))
        await users.set_blocked(self.db, user.id, False)
        logger.info("%s unblocked %s:%s", admin.key, platform, user_id)

    async def admin_stats(self, admin: Who) -> dict[str, Any]:
        """Job, image and user counts plus the queue's state."""
        self._require_admin(admin)
        stats = await jobs.stats(self.db, self.clock())
        snapshot = self.queue.snapshot()
        stats["queue"] = {
            "queued_jobs": snapshot.queued_jobs, "queued_images": snapshot.queued_images,
            "running_jobs": len(snapshot.running_jobs), "batches_run": snapshot.batches_run,
            "accepting": snapshot.accepting,
        }
        stats["model"] = self.model_id
        stats["ratings"] = await self.rating_stats()
        stats["comments"] = [str(c) for c in await recent_comments(self.db, 10)]  # newest first
        return stats

    # -- the model catalogue (issue 25) -------------------------------------------------------------

    async def models_text(self) -> str:
        """Each model: share, images served, rating with its 95 % interval, CLIP, time per image."""
        return models_text(await overview(self.db, self.catalogue))

    async def models_command(self, who: Who, text: str = "") -> str:
        """The chats' ``/models [compare A B | promote NAME [SHARE] | retire NAME]``: the listing for
        everyone, the rest for admins."""
        words = text.split()
        if not words or words[0].lower() == "list":
            return await self.models_text()
        action, rest = words[0].lower(), words[1:]
        share = None
        if action == "promote" and len(rest) == 2:
            try:
                share = float(rest[1].rstrip("%")) / (100 if rest[1].endswith("%") else 1)
            except ValueError:
                raise InvalidRequest("traffic",
                                     f"A share is a number from 0 to 1 or a percentage, not {rest[1]!r}.") from None
            rest = rest[:1]
        wanted = {"compare": 2, "promote": 1, "retire": 1}.get(action)
        if wanted is None or len(rest) != wanted:
            raise InvalidRequest("models", "Usage: /models | /models compare A B | /models promote NAME [SHARE] | "
                                           "/models retire NAME")
        return await self.admin_models(who, action, rest[0], rest[1] if len(rest) > 1 else "", share)

    async def admin_models(self, admin: Who, action: str = "list", name: str = "", other: str = "",
                           share: float | None = None) -> str:
        """``list``; ``compare A B``; ``promote NAME [share]`` (default 1.0); ``retire NAME`` (share 0)."""
        self._require_admin(admin)
        if action == "list":
            return await self.models_text()
        if action == "compare":
            return await compare_text(self.db, self.catalogue, name, other)
        if action in ("promote", "retire"):
            value = 0.0 if action == "retire" else (1.0 if share is None else share)
            text = await set_share(self.db, self.catalogue, name, value, by=admin.key)
            logger.info("%s: %s %s -> %s", admin.key, action, name, value)
            return text
        raise InvalidRequest("action", f"Choose list, compare A B, promote NAME [share] or retire NAME, "
                                       f"not {action!r}.")

    def loras_text(self) -> str:
        """The /loras listing: names, trigger words, base model (and files refused, with why)."""
        catalog = self.lora_catalog
        if catalog is None:
            return "This bot has no LoRAs installed."
        return str(catalog.describe())

    async def rating_stats(self, by: str | None = None) -> dict[str, list[str]]:
        """Average rating and count by model version, step count, style and LoRA ("key: 4.20★
        (3 ratings)", best first); ``by`` limits it to one of them."""
        wanted = DIMENSIONS if by is None else (by,)
        if by is not None and by not in DIMENSIONS:
            raise InvalidRequest("by", f"Ratings can be grouped by {', '.join(DIMENSIONS)}, not {by!r}.")
        return {name: [str(group) for group in await ratings_by(self.db, name)] for name in wanted}
