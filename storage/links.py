"""One account across platforms: one-time link codes, links, and merging two users' rows.

A platform identity (a ``users`` row) either holds its own account or is linked to another
row, the account (``account_links``). :func:`storage.users.get_by_platform` follows the link,
so quota, history, ratings, settings and API keys are the account's from then on.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from storage.clock import to_text
from storage.db import Executor, Transaction

__all__ = ["ALPHABET", "account_of", "claim_code", "identities", "issue_code", "link", "own_row", "probe", "unlink"]

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
CODE_LENGTH = 8


def _hash(code: str) -> str:
    return hashlib.sha256(code.strip().upper().replace("-", "").encode("utf-8")).hexdigest()


async def issue_code(db: Executor, user_id: int, now: datetime, valid: timedelta) -> str:
    """A new one-time code for ``user_id``'s account, valid for ``valid``."""
    code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    await db.execute(
        "INSERT INTO link_codes (code_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (_hash(code), user_id, to_text(now), to_text(now + valid)),
    )
    return code


async def claim_code(db: Executor, code: str, now: datetime) -> int | None:
    """Use a code (once, before it expires); the user id that issued it, or None."""
    return await db.fetchval(
        "UPDATE link_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?"
        " RETURNING user_id", (to_text(now), _hash(code), to_text(now)),
    )


async def account_of(db: Executor, user_id: int) -> int:
    """The account a users row acts as (itself when it is not linked)."""
    found = await db.fetchval("SELECT account_id FROM account_links WHERE user_id = ?", (user_id,))
    return int(found) if found is not None else user_id


async def identities(db: Executor, account_id: int) -> list[tuple[str, str, bool]]:
    """Every (platform, platform user id, blocked) of an account, the account's own row first."""
    rows = await db.fetchall(
        "SELECT platform, platform_user_id, blocked FROM users WHERE id = ?"
        " UNION ALL SELECT u.platform, u.platform_user_id, u.blocked FROM account_links l"
        " JOIN users u ON u.id = l.user_id WHERE l.account_id = ?", (account_id, account_id))
    return [(r[0], r[1], bool(r[2])) for r in rows]


async def link(tx: Transaction, user_id: int, account_id: int, now: datetime) -> None:
    """Make ``user_id`` (and anything linked to it) act as ``account_id``; move its rows there.

    Jobs, API keys and ratings move (a rating the account already has for that image wins); the
    quota used in each window is added up, so linking never frees quota; settings the account
    lacks are copied; of two personal limits the lower one holds.
    """
    await tx.execute("UPDATE account_links SET account_id = ? WHERE account_id = ?", (account_id, user_id))
    await tx.execute("INSERT INTO account_links (user_id, account_id, linked_at) VALUES (?, ?, ?)"
                     " ON CONFLICT (user_id) DO UPDATE SET account_id = excluded.account_id,"
                     " linked_at = excluded.linked_at", (user_id, account_id, to_text(now)))
    await tx.execute("UPDATE jobs SET user_id = ? WHERE user_id = ?", (account_id, user_id))
    await tx.execute("UPDATE api_keys SET user_id = ? WHERE user_id = ?", (account_id, user_id))
    await tx.execute("UPDATE OR IGNORE ratings SET user_id = ? WHERE user_id = ?", (account_id, user_id))
    await tx.execute("DELETE FROM ratings WHERE user_id = ?", (user_id,))
    await tx.execute(
        "INSERT INTO quota_usage (user_id, window_start, used) SELECT ?, window_start, used FROM quota_usage"
        " WHERE user_id = ? AND used > 0 ON CONFLICT (user_id, window_start) DO UPDATE"
        " SET used = quota_usage.used + excluded.used", (account_id, user_id))
    await tx.execute(
        "INSERT INTO quota_overrides (user_id, daily_limit) SELECT ?, daily_limit FROM quota_overrides"
        " WHERE user_id = ? ON CONFLICT (user_id) DO UPDATE"
        " SET daily_limit = min(quota_overrides.daily_limit, excluded.daily_limit)", (account_id, user_id))
    await tx.execute(
        "UPDATE users SET settings = json_patch((SELECT settings FROM users WHERE id = ?), settings)"
        " WHERE id = ?", (user_id, account_id))
    await tx.execute("UPDATE users SET blocked = 1 WHERE id = ? AND (SELECT blocked FROM users WHERE id = ?)",
                     (account_id, user_id))


async def unlink(db: Executor, user_id: int) -> bool:
    """Let a linked users row act as itself again (the account keeps the history)."""
    return bool(await db.execute("DELETE FROM account_links WHERE user_id = ? RETURNING user_id", (user_id,)))


async def probe(db: Executor, now: datetime) -> None:
    """One small write: raises when the database is not writable."""
    await db.execute("INSERT INTO health_probe (id, checked_at) VALUES (1, ?)"
                     " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at", (to_text(now),))


async def own_row(db: Executor, platform: str, platform_user_id: str) -> int:
    """The id of this identity's own users row (created on first sight), not the account's."""
    row_id = await db.fetchval(
        "INSERT INTO users (platform, platform_user_id, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (platform, platform_user_id) DO UPDATE SET platform = excluded.platform RETURNING id",
        (platform, str(platform_user_id), to_text()))
    return int(row_id)
