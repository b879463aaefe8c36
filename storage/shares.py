"""Shared images: the only images the public gallery shows."""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.clock import to_text
from storage.db import Executor
from storage.jobs import escape_like

__all__ = ["Shared", "by_id", "for_image", "page", "share", "unshare"]


@dataclass(frozen=True)
class Shared:
    """A shared image with what the gallery shows about it."""

    id: str
    image_id: int
    shared_by: int
    created_at: str
    job_id: str
    idx: int
    seed: int
    path: str
    width: int
    height: int
    request: str  # the job's request JSON
    model_id: str
    owner: int  # the job's user id
    average: float | None
    ratings: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Shared:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


_SELECT = """
SELECT s.id, s.image_id, s.shared_by, s.created_at, i.job_id, i.idx, i.seed, i.path, i.width, i.height,
       j.request, j.model_id, j.user_id AS owner,
       (SELECT avg(stars) FROM ratings r WHERE r.image_id = s.image_id) AS average,
       (SELECT count(*) FROM ratings r WHERE r.image_id = s.image_id) AS ratings
FROM shares s JOIN images i ON i.id = s.image_id JOIN jobs j ON j.id = i.job_id
"""


async def share(db: Executor, image_id: int, user_id: int, now: datetime | None = None) -> str:
    """Share an image (again: the same id); its public id."""
    row = await db.fetchone(
        "INSERT INTO shares (id, image_id, shared_by, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (image_id) DO UPDATE SET image_id = excluded.image_id RETURNING id",
        (secrets.token_urlsafe(9), image_id, user_id, to_text(now)),
    )
    if row is None:
        raise LookupError("the written row was not returned")
    return str(row["id"])


async def unshare(db: Executor, image_id: int) -> bool:
    return bool(await db.execute("DELETE FROM shares WHERE image_id = ? RETURNING id", (image_id,)))


async def by_id(db: Executor, share_id: str) -> Shared | None:
    row = await db.fetchone(_SELECT + " WHERE s.id = ?", (share_id,))
    return Shared.from_row(row) if row else None


async def for_image(db: Executor, image_id: int) -> str | None:
    """The public id of a shared image, or None."""
    return await db.fetchval("SELECT id FROM shares WHERE image_id = ?", (image_id,))


async def page(db: Executor, *, order: str = "new", search: str | None = None, limit: int = 24,
               offset: int = 0) -> tuple[list[Shared], int]:
    """A page of shared images (``order`` "new" or "top") and how many match in all."""
    where = ""
    params: list[Any] = []
    if search:
        where = " WHERE j.prompt LIKE ? ESCAPE '\\'"
        params.append(f"%{escape_like(search)}%")
    ordering = "average IS NULL, average DESC, ratings DESC, s.created_at DESC" if order == "top" \
        else "s.created_at DESC, s.rowid DESC"
    total = await db.fetchval(
        "SELECT count(*) FROM shares s JOIN images i ON i.id = s.image_id JOIN jobs j ON j.id = i.job_id"
        + where, params, default=0)
    rows = await db.fetchall(_SELECT + where + f" ORDER BY {ordering} LIMIT ? OFFSET ?", (*params, limit, offset))
    return [Shared.from_row(r) for r in rows], int(total)
