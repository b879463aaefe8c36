"""The inbox: requests stored before the platform is told they arrived.

A front end stores each raw request (:func:`receive`) and only then acknowledges it to its
platform (Telegram: the next getUpdates offset; a webhook: the 200; Discord: the deferral).
When the request's outcome is committed (a job row, a refusal sent), :func:`mark_handled`
closes it. After a crash, :func:`unhandled` gives back what was received but not handled, to
process again; ``jobs.origin`` (UNIQUE) makes the second processing find the first job
instead of creating another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.clock import to_text
from storage.db import Executor

__all__ = ["InboxItem", "mark_handled", "prune", "receive", "unhandled"]


@dataclass(frozen=True)
class InboxItem:
    """One stored request."""

    platform: str
    key: str
    payload: dict[str, Any]
    received_at: str
    attempts: int


async def receive(db: Executor, platform: str, key: str | int, payload: dict[str, Any],
                  now: datetime | None = None) -> bool:
    """Store a request; False if it was stored before (a platform re-sent it)."""
    rows = await db.execute(
        "INSERT INTO inbox (platform, key, payload, received_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (platform, key) DO NOTHING RETURNING key",
        (platform, str(key), json.dumps(payload, ensure_ascii=False), to_text(now)),
    )
    return bool(rows)


async def mark_handled(db: Executor, platform: str, key: str | int, now: datetime | None = None) -> bool:
    """Close a request; False if it was already closed (or never stored)."""
    rows = await db.execute(
        "UPDATE inbox SET handled_at = ? WHERE platform = ? AND key = ? AND handled_at IS NULL RETURNING key",
        (to_text(now), platform, str(key)),
    )
    return bool(rows)


async def reopen(db: Executor, platform: str, key: str | int) -> bool:
    """Mark a handled request unhandled again (its job was withdrawn before it was told)."""
    rows = await db.execute(
        "UPDATE inbox SET handled_at = NULL WHERE platform = ? AND key = ? RETURNING key",
        (platform, str(key)),
    )
    return bool(rows)


async def unhandled(db: Executor, platform: str, *, limit: int = 1000) -> list[InboxItem]:
    """Requests received but not handled, oldest first; each call counts an attempt."""
    rows = await db.fetchall(
        "UPDATE inbox SET attempts = attempts + 1 WHERE (platform, key) IN"
        " (SELECT platform, key FROM inbox WHERE platform = ? AND handled_at IS NULL"
        "  ORDER BY received_at LIMIT ?) RETURNING *",
        (platform, limit),
    )
    items = [InboxItem(r["platform"], r["key"], json.loads(r["payload"]), r["received_at"], r["attempts"])
             for r in rows]
    return sorted(items, key=lambda i: (i.received_at, i.key))


async def prune(db: Executor, before: datetime) -> int:
    """Delete handled requests older than ``before``; how many."""
    rows = await db.execute(
        "DELETE FROM inbox WHERE handled_at IS NOT NULL AND handled_at < ? RETURNING key",
        (to_text(before),),
    )
    return len(rows)
