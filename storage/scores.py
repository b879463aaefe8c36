"""CLIP scores of images (``image_scores``): written once per image, deleted with it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from storage.db import Executor

__all__ = ["clip_scores", "set_clip_scores"]


async def set_clip_scores(db: Executor, scores: Sequence[tuple[int, float]], model: str) -> None:
    """Store ``(image_id, score)`` pairs (an image deleted meanwhile is skipped)."""
    for image_id, score in scores:
        await db.execute(
            "INSERT OR REPLACE INTO image_scores (image_id, clip, model) "
            "SELECT id, ?, ? FROM images WHERE id = ?",
            (float(score), model, image_id),
        )


async def clip_scores(db: Executor, image_ids: Iterable[int]) -> dict[int, float]:
    """The CLIP score of each of ``image_ids`` that has one."""
    ids = list(image_ids)
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = await db.fetchall(f"SELECT image_id, clip FROM image_scores WHERE image_id IN ({marks})", ids)
    return {int(row["image_id"]): float(row["clip"]) for row in rows}
