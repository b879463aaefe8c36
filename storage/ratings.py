"""Ratings: one row of 1–5 stars per user and image, from a reaction, a button or a command."""

from __future__ import annotations

from datetime import datetime

from storage.clock import to_text
from storage.db import Executor
from storage.records import RATING_SOURCES, Rating

__all__ = ["MAX_COMMENT_CHARS", "average", "delete", "for_image", "get", "set_comment", "upsert"]

MAX_COMMENT_CHARS = 500


async def upsert(
    db: Executor,
    image_id: int,
    user_id: int,
    stars: int,
    source: str,
    comment: str | None = None,
    now: datetime | None = None,
) -> Rating:
    """Set the user's rating of the image (a new rating replaces the old one)."""
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise ValueError(f"`stars` must be a whole number from 1 to 5, not {stars!r}")
    if source not in RATING_SOURCES:
        raise ValueError(f"`source` must be one of {', '.join(RATING_SOURCES)}, not {source!r}")
    row = await db.fetchone(
        "INSERT INTO ratings (image_id, user_id, stars, source, comment, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (image_id, user_id) DO UPDATE SET stars = excluded.stars,"
        " source = excluded.source, comment = coalesce(excluded.comment, comment),"
        " updated_at = excluded.updated_at"
        " RETURNING *",
        (image_id, user_id, stars, source, comment, to_text(now)),
    )
    if row is None:
        raise LookupError("the written row was not returned")
    return Rating.from_row(row)


async def set_comment(
    db: Executor, image_id: int, user_id: int, comment: str, now: datetime | None = None
) -> Rating | None:
    """Put ``comment`` beside the user's rating of the image (replacing an older one); None when
    the user has not rated it: a comment belongs to a rating."""
    if not isinstance(comment, str) or not comment.strip() or len(comment) > MAX_COMMENT_CHARS:
        raise ValueError(f"`comment` must be 1 to {MAX_COMMENT_CHARS} characters of text, not {comment!r}")
    row = await db.fetchone(
        "UPDATE ratings SET comment = ?, updated_at = ? WHERE image_id = ? AND user_id = ? RETURNING *",
        (comment, to_text(now), image_id, user_id),
    )
    return Rating.from_row(row) if row else None


async def delete(db: Executor, image_id: int, user_id: int, source: str | None = None) -> bool:
    """Remove the rating (only if it came from ``source``, when given); whether one was removed.

    A removed reaction passes ``source="reaction"`` so it cannot erase a button rating.
    """
    sql = "DELETE FROM ratings WHERE image_id = ? AND user_id = ?"
    params: tuple[object, ...] = (image_id, user_id)
    if source is not None:
        sql += " AND source = ?"
        params += (source,)
    return bool(await db.execute(sql + " RETURNING image_id", params))


async def get(db: Executor, image_id: int, user_id: int) -> Rating | None:
    """The user's rating of the image, or None."""
    row = await db.fetchone(
        "SELECT * FROM ratings WHERE image_id = ? AND user_id = ?", (image_id, user_id)
    )
    return Rating.from_row(row) if row else None


async def for_image(db: Executor, image_id: int) -> list[Rating]:
    """All ratings of an image, newest first."""
    rows = await db.fetchall(
        "SELECT * FROM ratings WHERE image_id = ? ORDER BY updated_at DESC", (image_id,)
    )
    return [Rating.from_row(r) for r in rows]


async def average(db: Executor, image_id: int) -> tuple[float | None, int]:
    """``(mean stars, number of ratings)``; the mean is None without ratings."""
    row = await db.fetchone(
        "SELECT avg(stars) AS mean, count(*) AS n FROM ratings WHERE image_id = ?", (image_id,)
    )
    if row is None:
        raise LookupError("the written row was not returned")
    return row["mean"], row["n"]
