"""Moderation rows: the decision log, each user's standing, appeals, per-scope image policies.

Users are keyed by ``"platform:user_id"`` text (not ``users.id``), so a /forget does not wipe a
user's strikes or block. The log never holds prompt text, only a short hash of it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.clock import to_text
from storage.db import Executor

__all__ = [
    "Appeal",
    "LogEntry",
    "Policy",
    "Standing",
    "claim_request",
    "count_strikes",
    "delete_policy",
    "get_appeal",
    "get_policy",
    "get_standing",
    "list_appeals",
    "log",
    "log_entries",
    "open_appeal",
    "policies",
    "resolve_appeal",
    "reset_standing",
    "set_banned",
    "set_cooldown",
    "set_policy",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogEntry:
    """One moderation decision."""

    id: int
    user_key: str
    subject: str | None
    scope: str
    kind: str
    rule: str | None
    action: str
    strike: bool
    prompt_hash: str | None
    job_id: str | None
    created_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> LogEntry:
        return cls(row["id"], row["user_key"], row["subject"], row["scope"], row["kind"], row["rule"],
                   row["action"], bool(row["strike"]), row["prompt_hash"], row["job_id"], row["created_at"])


@dataclass(frozen=True)
class Standing:
    """A user's moderation state (all empty for someone never moderated)."""

    user_key: str
    strikes_since: str | None = None
    cooldown_until: str | None = None
    banned: bool = False
    last_request_at: str | None = None


@dataclass(frozen=True)
class Appeal:
    """A user's request that an admin review their strikes, cooldown or block."""

    id: int
    user_key: str
    status: str
    message: str
    strikes: int
    state: str
    created_at: str
    resolved_at: str | None
    resolved_by: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Appeal:
        return cls(row["id"], row["user_key"], row["status"], row["message"], row["strikes"], row["state"],
                   row["created_at"], row["resolved_at"], row["resolved_by"])


@dataclass(frozen=True)
class Policy:
    """How images in one scope are treated, and prompt categories allowed there."""

    scope: str
    explicit: str
    allow: tuple[str, ...]
    updated_by: str
    updated_at: str


# -- the log ----------------------------------------------------------------------------------


async def log(
    db: Executor, user_key: str, kind: str, action: str, *, scope: str = "*", rule: str | None = None,
    strike: bool = False, prompt_hash: str | None = None, job_id: str | None = None,
    subject: str | None = None, now: datetime | None = None,
) -> int:
    """Append one decision; its id."""
    row_id = await db.fetchval(
        "INSERT INTO moderation_log (user_key, subject, scope, kind, rule, action, strike, prompt_hash,"
        " job_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (user_key, subject, scope, kind, rule, action, int(strike), prompt_hash, job_id, to_text(now)),
    )
    return int(row_id)


async def log_entries(db: Executor, user_key: str | None = None, *, limit: int = 50) -> list[LogEntry]:
    """The newest decisions (about ``user_key`` when given, as the actor or the subject)."""
    if user_key is None:
        rows = await db.fetchall("SELECT * FROM moderation_log ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = await db.fetchall(
            "SELECT * FROM moderation_log WHERE user_key = ? OR subject = ? ORDER BY id DESC LIMIT ?",
            (user_key, user_key, limit),
        )
    return [LogEntry.from_row(r) for r in rows]


async def count_strikes(db: Executor, user_key: str, since: str | None) -> int:
    """Strikes logged for ``user_key`` after ``since`` (a timestamp text; None: all)."""
    return int(await db.fetchval(
        "SELECT count(*) FROM moderation_log WHERE user_key = ? AND strike = 1 AND created_at > ?",
        (user_key, since or ""), default=0,
    ))


# -- standing ---------------------------------------------------------------------------------


async def get_standing(db: Executor, user_key: str) -> Standing:
    """The user's standing (a blank one when there is no row)."""
    row = await db.fetchone("SELECT * FROM moderation_users WHERE user_key = ?", (user_key,))
    if row is None:
        return Standing(user_key)
    return Standing(user_key, row["strikes_since"], row["cooldown_until"], bool(row["banned"]),
                    row["last_request_at"])


async def _upsert(db: Executor, user_key: str, column: str, value: Any) -> None:
    await db.execute(
        f"INSERT INTO moderation_users (user_key, {column}) VALUES (?, ?)"
        f" ON CONFLICT (user_key) DO UPDATE SET {column} = excluded.{column}",
        (user_key, value),
    )


async def set_cooldown(db: Executor, user_key: str, until: datetime | None) -> None:
    """Refuse the user's requests until ``until`` (None clears it)."""
    await _upsert(db, user_key, "cooldown_until", to_text(until) if until else None)


async def set_banned(db: Executor, user_key: str, banned: bool = True) -> None:
    """Block (or unblock) the user's requests."""
    await _upsert(db, user_key, "banned", int(banned))


async def reset_standing(db: Executor, user_key: str, now: datetime) -> None:
    """Lift a block and a cooldown; strikes before ``now`` stop counting."""
    await db.execute(
        "INSERT INTO moderation_users (user_key, strikes_since, cooldown_until, banned) VALUES (?, ?, NULL, 0)"
        " ON CONFLICT (user_key) DO UPDATE SET strikes_since = excluded.strikes_since,"
        " cooldown_until = NULL, banned = 0",
        (user_key, to_text(now)),
    )


async def claim_request(db: Executor, user_key: str, now: datetime, not_after: datetime) -> str | None:
    """Record a request at ``now`` if the last one was at or before ``not_after``.

    One statement, so two requests racing for the slot cannot both get it. Returns None when
    claimed, else the time of the last request (the caller tells the user how long to wait).
    """
    rows = await db.execute(
        "INSERT INTO moderation_users (user_key, last_request_at) VALUES (?, ?)"
        " ON CONFLICT (user_key) DO UPDATE SET last_request_at = excluded.last_request_at"
        " WHERE last_request_at IS NULL OR last_request_at <= ? RETURNING user_key",
        (user_key, to_text(now), to_text(not_after)),
    )
    if rows:
        return None
    last = await db.fetchval("SELECT last_request_at FROM moderation_users WHERE user_key = ?", (user_key,))
    return str(last)


# -- appeals ----------------------------------------------------------------------------------


async def open_appeal(db: Executor, user_key: str, message: str, strikes: int, state: str,
                      now: datetime) -> Appeal | None:
    """A new open appeal, or None when the user already has one open."""
    row = await db.fetchone(
        "INSERT INTO moderation_appeals (user_key, message, strikes, state, created_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (user_key) WHERE status = 'open' DO NOTHING RETURNING *",
        (user_key, message, strikes, state, to_text(now)),
    )
    return Appeal.from_row(row) if row else None


async def get_appeal(db: Executor, appeal_id: int) -> Appeal | None:
    """The appeal with this id, or None."""
    row = await db.fetchone("SELECT * FROM moderation_appeals WHERE id = ?", (appeal_id,))
    return Appeal.from_row(row) if row else None


async def list_appeals(db: Executor, status: str | None = "open", *, user_key: str | None = None,
                       limit: int = 50) -> list[Appeal]:
    """Appeals, oldest first (open ones by default)."""
    where, params = [], []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if user_key is not None:
        where.append("user_key = ?")
        params.append(user_key)
    sql = "SELECT * FROM moderation_appeals"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await db.fetchall(sql + " ORDER BY id LIMIT ?", (*params, limit))
    return [Appeal.from_row(r) for r in rows]


async def resolve_appeal(db: Executor, appeal_id: int, status: str, admin_key: str, now: datetime) -> bool:
    """Close an open appeal as 'lifted' or 'rejected'; False when it was not open."""
    if status not in ("lifted", "rejected"):
        raise ValueError(f"`status` must be 'lifted' or 'rejected', not {status!r}")
    rows = await db.execute(
        "UPDATE moderation_appeals SET status = ?, resolved_at = ?, resolved_by = ?"
        " WHERE id = ? AND status = 'open' RETURNING id",
        (status, to_text(now), admin_key, appeal_id),
    )
    return bool(rows)


# -- policies ---------------------------------------------------------------------------------


def _policy(row: sqlite3.Row) -> Policy:
    return Policy(row["scope"], row["explicit"], tuple(json.loads(row["allow"])), row["updated_by"],
                  row["updated_at"])


async def get_policy(db: Executor, scope: str) -> Policy | None:
    """The stored policy of ``scope``, or None."""
    row = await db.fetchone("SELECT * FROM moderation_policies WHERE scope = ?", (scope,))
    return _policy(row) if row else None


async def policies(db: Executor) -> list[Policy]:
    """All stored policies, by scope."""
    return [_policy(r) for r in await db.fetchall("SELECT * FROM moderation_policies ORDER BY scope")]


async def set_policy(db: Executor, scope: str, explicit: str, allow: tuple[str, ...], admin_key: str,
                     now: datetime) -> Policy:
    """Store the policy of ``scope`` (replacing any)."""
    row = await db.fetchone(
        "INSERT INTO moderation_policies (scope, explicit, allow, updated_by, updated_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (scope) DO UPDATE SET explicit = excluded.explicit, allow = excluded.allow,"
        " updated_by = excluded.updated_by, updated_at = excluded.updated_at RETURNING *",
        (scope, explicit, json.dumps(list(allow)), admin_key, to_text(now)),
    )
    if row is None:
        raise LookupError("the written row was not returned")
    return _policy(row)


async def delete_policy(db: Executor, scope: str) -> bool:
    """Forget the stored policy of ``scope`` (config applies again)."""
    return bool(await db.execute("DELETE FROM moderation_policies WHERE scope = ? RETURNING scope", (scope,)))
