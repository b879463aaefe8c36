"""/describe calls: the per-user hourly limit counts them, and /export and /forget see them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from storage.clock import to_text
from storage.db import Executor

__all__ = ["Describe", "count_since", "first_since", "for_user", "record", "settle"]


@dataclass(frozen=True)
class Describe:
    """One /describe as stored: when, of which picture, and what was shown (if anything)."""

    id: int
    created_at: str
    image_sha: str
    caption: str | None
    suggestions: tuple[str, ...]


async def record(db: Executor, user_id: int, image_sha: str, now: datetime) -> int:
    """Count a /describe before the captioner runs (a crash mid-caption still counts); its id."""
    value = await db.fetchval("INSERT INTO describes (user_id, created_at, image_sha) VALUES (?, ?, ?) RETURNING id",
                              (user_id, to_text(now), image_sha))
    return int(value)


async def settle(db: Executor, describe_id: int, caption: str | None, suggestions: tuple[str, ...]) -> None:
    """What the user was shown (``caption`` None: nothing, the caption was refused or empty)."""
    await db.execute("UPDATE describes SET caption = ?, suggestions = ? WHERE id = ?",
                     (caption, json.dumps(list(suggestions), ensure_ascii=False), describe_id))


async def count_since(db: Executor, user_id: int, since: datetime) -> int:
    """How many /describe calls the user made at or after ``since``."""
    return int(await db.fetchval("SELECT COUNT(*) FROM describes WHERE user_id = ? AND created_at >= ?",
                                 (user_id, to_text(since))) or 0)


async def first_since(db: Executor, user_id: int, since: datetime) -> str | None:
    """When the oldest call at or after ``since`` was made (the limit frees up an hour after it)."""
    value = await db.fetchval("SELECT MIN(created_at) FROM describes WHERE user_id = ? AND created_at >= ?",
                              (user_id, to_text(since)))
    return None if value is None else str(value)


async def for_user(db: Executor, user_id: int) -> list[Describe]:
    """The user's /describe calls, oldest first."""
    rows = await db.fetchall("SELECT * FROM describes WHERE user_id = ? ORDER BY created_at, id", (user_id,))
    return [Describe(int(r["id"]), str(r["created_at"]), str(r["image_sha"]), r["caption"],
                     tuple(json.loads(r["suggestions"] or "[]"))) for r in rows]
