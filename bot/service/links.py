"""One account across platforms: ``/link`` gives a one-time code, ``/link CODE`` elsewhere joins.

The identity that enters the code joins the account of the one that asked for it: its jobs,
ratings, API keys and this window's used quota move there (:func:`storage.links.link`). From
then on quota, history, ratings, settings and keys are shared; for blocks, strikes and
cooldowns every identity's state is checked, so the stricter one holds
(:meth:`ServiceContext._active_user`). ``/unlink`` lets an identity act as itself again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from bot.service.context import ServiceContext
from bot.service.tickets import NotAllowed, Who
from generation.core.errors import InvalidRequest
from storage import links, users

__all__ = ["LINK_VALID", "LinksPart"]

logger = logging.getLogger(__name__)

LINK_VALID = timedelta(minutes=10)


class LinksPart(ServiceContext):
    """Link codes, linking and unlinking platform identities."""

    async def link_code(self, who: Who) -> str:
        """A one-time code, valid for 10 minutes, to enter with ``/link CODE`` on another platform."""
        user = await self._user(who)
        return await links.issue_code(self.db, user.id, self.clock(), LINK_VALID)

    async def link(self, who: Who, code: str) -> list[str]:
        """Join the account that issued ``code``; every identity of the account after."""
        if not isinstance(code, str) or not code.strip():
            raise InvalidRequest("code", "Usage: /link CODE (get a code with /link on your other platform).")
        own = await links.own_row(self.db, who.platform, who.user_id)
        now = self.clock()
        async with self.db.transaction() as tx:
            issuer = await links.claim_code(tx, code, now)
            if issuer is None:
                raise InvalidRequest("code", "That code is unknown, used or expired; ask for a new one with /link.")
            account = await links.account_of(tx, issuer)
            if account == await links.account_of(tx, own):
                raise NotAllowed("Those are already the same account.")
            await links.link(tx, own, account, now)
        found = await links.identities(self.db, account)
        logger.info("%s linked to account %s", who.key, account)
        return [f"{platform}:{user_id}" for platform, user_id, _ in found]

    async def unlink(self, who: Who) -> bool:
        """Let this identity act as itself again; False when it was not linked."""
        own = await links.own_row(self.db, who.platform, who.user_id)
        if await links.account_of(self.db, own) == own:
            others = await links.identities(self.db, own)
            if len(others) > 1:
                raise NotAllowed("This identity holds the account: use /unlink on the other platform.")
            return False
        logger.info("%s unlinked", who.key)
        return await links.unlink(self.db, own)

    async def linked(self, who: Who) -> list[str]:
        """Every identity of the caller's account ("platform:user_id")."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return [who.key]
        return [f"{platform}:{user_id}" for platform, user_id, _ in await links.identities(self.db, user.id)]
