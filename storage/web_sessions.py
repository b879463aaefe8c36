"""The web studio's sign-in links and browser sessions; only sha256 hashes of their tokens are stored.

A token is 32 random bytes, so a plain sha256 is as strong as a slow hash here (nothing to
guess by dictionary), and checking one is one indexed lookup (as for API keys).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.clock import to_text
from storage.db import Executor

__all__ = ["Session", "claim_signin", "create", "end", "end_all", "find", "for_user", "issue_signin",
           "peek_signin", "touch"]


@dataclass(frozen=True)
class Session:
    """One browser session as stored (never its token)."""

    id: int
    user_id: int
    csrf: str
    agent: str
    created_at: str
    last_seen_at: str
    expires_at: str
    ended_at: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Session:
        return cls(*(row[name] for name in cls.__dataclass_fields__))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _valid_shape(token: str) -> bool:
    return isinstance(token, str) and 20 <= len(token) <= 100


async def issue_signin(db: Executor, user_id: int, now: datetime, valid: timedelta) -> str:
    """A new one-time sign-in token for ``user_id``'s account, valid for ``valid``."""
    token = secrets.token_urlsafe(32)
    await db.execute(
        "INSERT INTO web_signins (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (_hash(token), user_id, to_text(now), to_text(now + valid)),
    )
    return token


async def peek_signin(db: Executor, token: str, now: datetime) -> int | None:
    """The user id of a live (unused, unexpired) sign-in token, without using it; else None."""
    if not _valid_shape(token):
        return None
    found = await db.fetchval("SELECT user_id FROM web_signins WHERE token_hash = ? AND used_at IS NULL"
                              " AND expires_at > ?", (_hash(token), to_text(now)))
    return None if found is None else int(found)


async def claim_signin(db: Executor, token: str, now: datetime) -> int | None:
    """Use a sign-in token (once, before it expires); the user id it was issued for, or None."""
    if not _valid_shape(token):
        return None
    found = await db.fetchval(
        "UPDATE web_signins SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?"
        " RETURNING user_id", (to_text(now), _hash(token), to_text(now)))
    return None if found is None else int(found)


async def create(db: Executor, user_id: int, agent: str, now: datetime, valid: timedelta) -> tuple[str, Session]:
    """A new session for ``user_id``: (its cookie token, shown only now; the row)."""
    token = secrets.token_urlsafe(32)
    row = await db.fetchone(
        "INSERT INTO web_sessions (user_id, token_hash, csrf, agent, created_at, last_seen_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
        (user_id, _hash(token), secrets.token_urlsafe(24), agent[:200], to_text(now), to_text(now),
         to_text(now + valid)))
    if row is None:  # pragma: no cover - INSERT … RETURNING always returns the row
        raise LookupError("the new session row was not returned")
    return token, Session.from_row(row)


async def find(db: Executor, token: str, now: datetime) -> Session | None:
    """The live session with this cookie token (not ended, not expired), or None."""
    if not _valid_shape(token):
        return None
    row = await db.fetchone("SELECT * FROM web_sessions WHERE token_hash = ? AND ended_at IS NULL"
                            " AND expires_at > ?", (_hash(token), to_text(now)))
    return Session.from_row(row) if row else None


async def touch(db: Executor, session_id: int, now: datetime) -> None:
    await db.execute("UPDATE web_sessions SET last_seen_at = ? WHERE id = ?", (to_text(now), session_id))


async def for_user(db: Executor, user_id: int, now: datetime) -> list[Session]:
    """The user's live sessions, newest first."""
    rows = await db.fetchall("SELECT * FROM web_sessions WHERE user_id = ? AND ended_at IS NULL"
                             " AND expires_at > ? ORDER BY id DESC", (user_id, to_text(now)))
    return [Session.from_row(r) for r in rows]


async def end(db: Executor, session_id: int, user_id: int, now: datetime) -> bool:
    """End one of ``user_id``'s sessions; whether it was live."""
    return bool(await db.execute("UPDATE web_sessions SET ended_at = ? WHERE id = ? AND user_id = ?"
                                 " AND ended_at IS NULL RETURNING id", (to_text(now), session_id, user_id)))


async def end_all(db: Executor, user_id: int, now: datetime) -> int:
    """End every live session of ``user_id`` and drop its unused sign-in links; how many sessions."""
    await db.execute("DELETE FROM web_signins WHERE user_id = ?", (user_id,))
    return len(await db.execute("UPDATE web_sessions SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL"
                                " RETURNING id", (to_text(now), user_id)))
