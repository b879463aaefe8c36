"""Users: one row per (platform, platform user id), with settings, block and DM flags.

A row linked to another (``account_links``, :mod:`storage.links`) acts as that account:
:func:`get_by_platform` returns the account's row (:func:`get_or_create` the identity's own).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from storage.clock import to_text
from storage.db import Executor
from storage.records import User

__all__ = [
    "get",
    "get_by_platform",
    "get_or_create",
    "get_settings",
    "set_blocked",
    "set_dm_closed",
    "update_settings",
]

log = logging.getLogger(__name__)


async def get_or_create(
    db: Executor, platform: str, platform_user_id: str | int, display_name: str = ""
) -> User:
    """The user's row, created on first sight; a changed display name is updated."""
    row = await db.fetchone(
        "INSERT INTO users (platform, platform_user_id, display_name, created_at)"
        " VALUES (?, ?, ?, ?)"
        " ON CONFLICT (platform, platform_user_id) DO UPDATE"
        " SET display_name = CASE WHEN excluded.display_name = '' THEN display_name"
        "                         ELSE excluded.display_name END"
        " RETURNING *",
        (platform, str(platform_user_id), display_name, to_text()),
    )
    if row is None:
        raise LookupError("the written row was not returned")
    return User.from_row(row)


async def get(db: Executor, user_id: int) -> User | None:
    """The user with this id, or None."""
    row = await db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
    return User.from_row(row) if row else None


async def get_by_platform(db: Executor, platform: str, platform_user_id: str | int) -> User | None:
    """The user with this platform id (its account when linked), or None (never creates).

    ``linked`` says whether any identity is linked to that account (one read for both)."""
    row = await db.fetchone(
        "SELECT a.*, EXISTS (SELECT 1 FROM account_links x WHERE x.account_id = a.id) AS linked"
        " FROM users u LEFT JOIN account_links l ON l.user_id = u.id"
        " JOIN users a ON a.id = coalesce(l.account_id, u.id)"
        " WHERE u.platform = ? AND u.platform_user_id = ?",
        (platform, str(platform_user_id)),
    )
    return User.from_row(row) if row else None


async def set_blocked(db: Executor, user_id: int, blocked: bool = True) -> bool:
    """Block or unblock; False when there is no such user."""
    rows = await db.execute(
        "UPDATE users SET blocked = ? WHERE id = ? RETURNING id", (int(blocked), user_id)
    )
    if rows:
        log.info("user %s blocked=%s", user_id, blocked)
    return bool(rows)


async def set_dm_closed(db: Executor, user_id: int, closed: bool = True) -> bool:
    """Remember that DMs to this user fail (or work again); False when there is no such user."""
    rows = await db.execute(
        "UPDATE users SET dm_closed = ? WHERE id = ? RETURNING id", (int(closed), user_id)
    )
    return bool(rows)


async def get_settings(db: Executor, user_id: int) -> dict[str, Any]:
    """The user's settings dict ({} for an unknown user)."""
    text = await db.fetchval("SELECT settings FROM users WHERE id = ?", (user_id,))
    return json.loads(text) if text else {}


async def update_settings(db: Executor, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge ``changes`` into the settings atomically (JSON merge patch: None removes a key)."""
    text = await db.fetchval(
        "UPDATE users SET settings = json_patch(settings, ?) WHERE id = ? RETURNING settings",
        (json.dumps(changes), user_id),
    )
    if text is None:
        raise LookupError(f"no user with id {user_id}")
    return json.loads(text)
