"""Model checkpoints the bot has run: first and last time each was seen."""

from __future__ import annotations

from datetime import datetime

from storage.clock import to_text
from storage.db import Executor
from storage.records import ModelVersion

__all__ = ["all_versions", "record_seen"]


async def record_seen(
    db: Executor, model_id: str, checkpoint_hash: str, now: datetime | None = None
) -> ModelVersion:
    """Note that this checkpoint is in use now (first_seen is kept, last_seen moves)."""
    moment = to_text(now)
    row = await db.fetchone(
        "INSERT INTO model_versions (model_id, checkpoint_hash, first_seen, last_seen)"
        " VALUES (?, ?, ?, ?)"
        " ON CONFLICT (model_id, checkpoint_hash) DO UPDATE SET last_seen = excluded.last_seen"
        " RETURNING *",
        (model_id, checkpoint_hash, moment, moment),
    )
    if row is None:
        raise LookupError("the written row was not returned")
    return ModelVersion.from_row(row)


async def all_versions(db: Executor) -> list[ModelVersion]:
    """Every recorded checkpoint, most recently seen first."""
    rows = await db.fetchall("SELECT * FROM model_versions ORDER BY last_seen DESC")
    return [ModelVersion.from_row(r) for r in rows]
