"""Retention: purge old images and stale quota rows (run by the bot's maintenance schedule)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from storage.clock import to_text, utcnow
from storage.db import Executor

__all__ = ["prune_quota_usage", "purge_images"]

log = logging.getLogger(__name__)

_FINISHED = ("delivered", "failed", "cancelled")


async def purge_images(db: Executor, older_than: timedelta, *, now: datetime | None = None) -> int:
    """Delete image rows of finished jobs created before ``now - older_than``; how many.

    The jobs stay in history (as text); their files become unreferenced and are removed by
    ``ImageStore.delete_unreferenced``. Ratings of those images go with them (cascade).
    """
    cutoff = to_text((now or utcnow()) - older_than)
    placeholders = ", ".join("?" * len(_FINISHED))
    rows = await db.execute(
        "DELETE FROM images WHERE job_id IN (SELECT id FROM jobs WHERE created_at < ?"
        f" AND status IN ({placeholders})) RETURNING id",
        (cutoff, *_FINISHED),
    )
    await db.execute(  # the uploads those jobs started from go the same way
        "DELETE FROM job_inputs WHERE job_id IN (SELECT id FROM jobs WHERE created_at < ?"
        f" AND status IN ({placeholders}))",
        (cutoff, *_FINISHED),
    )
    if rows:
        log.info("retention: purged %d image row(s) older than %s", len(rows), cutoff)
    return len(rows)


async def prune_quota_usage(db: Executor, before_window: str) -> int:
    """Delete quota rows of windows that started before ``before_window``; how many."""
    rows = await db.execute(
        "DELETE FROM quota_usage WHERE window_start < ? RETURNING user_id", (before_window,)
    )
    return len(rows)
