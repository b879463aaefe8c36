"""API keys: a key bound to a user's account, for the HTTP API (``Authorization: Bearer``).

Keys are shown once and stored hashed (:mod:`storage.apikeys`). A key acts as its account:
a linked account's keys work for every platform identity in it.
"""

from __future__ import annotations

import logging

from datetime import timedelta

from bot.service.context import ServiceContext
from bot.service.tickets import NotAllowed, NotFound, Who
from storage import Database, apikeys, links, users
from storage.apikeys import ApiKey
from storage.clock import from_text

__all__ = ["ApiKey", "KeysPart", "operator_create", "operator_list", "operator_revoke"]

logger = logging.getLogger(__name__)

TOUCH_EVERY = timedelta(minutes=1)  # ``last_used_at`` is written at most this often per key


class KeysPart(ServiceContext):
    """Create, list, revoke and check API keys."""

    async def create_api_key(self, who: Who, label: str = "") -> tuple[str, ApiKey]:
        """A new key for the caller's account: (the key, shown only now; its listing).

        At most ``max_keys_per_user`` live keys per account (each key has its own rate limit, so
        more keys would multiply it): past that, NotAllowed says to revoke one first.
        """
        user = await self._user(who)
        limit = self.config.max_keys_per_user
        async with self.db.transaction() as tx:
            if await apikeys.live_count(tx, user.id) >= limit:
                raise NotAllowed(f"You already have {limit} live API keys, the most one account may have. "
                                 "Revoke one you no longer use (/apikey revoke ID), then make a new one.")
            key, row = await apikeys.create(tx, user.id, label, self.clock())
        logger.info("api key %s created for %s", row.prefix, who.key)  # never the key itself
        return key, row

    async def api_keys(self, who: Who) -> list[ApiKey]:
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        return [] if user is None else await apikeys.list_for(self.db, user.id)

    async def revoke_api_key(self, who: Who, key_id: int) -> None:
        """Revoke one of the caller's keys (NotFound for another's or an unknown one)."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None or not await apikeys.revoke(self.db, key_id, user.id, self.clock()):
            raise NotFound(f"You have no live API key {key_id}.")

    async def authenticate(self, key: str) -> tuple[Who, int] | None:
        """(who the key acts as, key id) for a live key, else None."""
        row = await apikeys.find(self.db, key)
        if row is None:
            return None
        now = self.clock()
        if row.last_used_at is None or now - from_text(row.last_used_at) >= TOUCH_EVERY:
            await apikeys.touch(self.db, row.id, now)  # one small write a minute, not one a request
        user = await users.get(self.db, await links.account_of(self.db, row.user_id))
        if user is None:
            return None
        return Who(user.platform, user.platform_user_id, user.display_name), row.id


# -- for operators (``imagine-bot keys``): straight on the database, no queue or model needed ----------


def _split(user: str) -> tuple[str, str]:
    platform, sep, user_id = user.partition(":")
    if not sep or not platform or not user_id:
        raise ValueError(f'a user is "platform:user_id", like "telegram:1234", not {user!r}')
    return platform, user_id


async def operator_create(db: Database, user: str, label: str = "") -> tuple[str, ApiKey]:
    platform, user_id = _split(user)
    account = await links.account_of(db, await links.own_row(db, platform, user_id))
    return await apikeys.create(db, account, label)


async def operator_list(db: Database, user: str) -> list[ApiKey]:
    found = await users.get_by_platform(db, *_split(user))
    return [] if found is None else await apikeys.list_for(db, found.id)


async def operator_revoke(db: Database, user: str, key_id: int) -> bool:
    found = await users.get_by_platform(db, *_split(user))
    return found is not None and await apikeys.revoke(db, key_id, found.id)
