"""API keys: ``ib_…`` bearer tokens bound to a user; only their sha256 is stored.

A key is 32 random bytes, so a plain sha256 is as strong as a slow hash here (nothing to guess
by dictionary), and checking one is one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from storage.clock import to_text
from storage.db import Executor

__all__ = ["ApiKey", "PREFIX", "create", "find", "hash_key", "list_for", "live_count", "new_key", "revoke", "touch"]

PREFIX = "ib_"


@dataclass(frozen=True)
class ApiKey:
    """One key as listed (never the key itself)."""

    id: int
    user_id: int
    prefix: str
    label: str
    created_at: str
    revoked_at: str | None
    last_used_at: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ApiKey:
        return cls(row["id"], row["user_id"], row["prefix"], row["label"], row["created_at"],
                   row["revoked_at"], row["last_used_at"])


def new_key() -> str:
    """A fresh random key, shown once."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


async def create(db: Executor, user_id: int, label: str = "", now: datetime | None = None) -> tuple[str, ApiKey]:
    """A new key for ``user_id``: (the key, shown once; its row)."""
    key = new_key()
    row = await db.fetchone(
        "INSERT INTO api_keys (user_id, prefix, hash, label, created_at) VALUES (?, ?, ?, ?, ?) RETURNING *",
        (user_id, key[: len(PREFIX) + 6], hash_key(key), label[:80], to_text(now)),
    )
    if row is None:  # pragma: no cover - INSERT … RETURNING always returns the row
        raise LookupError("the new key row was not returned")
    return key, ApiKey.from_row(row)


async def live_count(db: Executor, user_id: int) -> int:
    """How many of ``user_id``'s keys are not revoked."""
    return int(await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE user_id = ? AND revoked_at IS NULL", (user_id,), default=0))


async def find(db: Executor, key: str) -> ApiKey | None:
    """The live (not revoked) key with this text, or None."""
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    row = await db.fetchone("SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL", (hash_key(key),))
    return ApiKey.from_row(row) if row else None


async def list_for(db: Executor, user_id: int) -> list[ApiKey]:
    rows = await db.fetchall("SELECT * FROM api_keys WHERE user_id = ? ORDER BY id", (user_id,))
    return [ApiKey.from_row(r) for r in rows]


async def revoke(db: Executor, key_id: int, user_id: int | None = None, now: datetime | None = None) -> bool:
    """Revoke key ``key_id`` (only if it is ``user_id``'s, when given); whether one was live."""
    sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
    params: tuple[object, ...] = (to_text(now), key_id)
    if user_id is not None:
        sql += " AND user_id = ?"
        params += (user_id,)
    return bool(await db.execute(sql + " RETURNING id", params))


async def touch(db: Executor, key_id: int, now: datetime | None = None) -> None:
    await db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (to_text(now), key_id))
