"""CLIP scores in the service: after a job's images are stored, off the delivery path.

``score_later`` starts a task that has the scorer (generation.quality.clip_score, its own thread) score
the images against the prompt the model drew and stores the scores (storage.scores). A failure
is logged and costs nothing else: a score is a measurement, never a condition for delivery.
``drain`` lets running tasks finish (bounded) before the database closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from storage import scores

__all__ = ["drain", "score_later"]

logger = logging.getLogger(__name__)


def score_later(ctx: Any, image_ids: Sequence[int], images: Sequence[Any], prompt: str) -> None:
    """Score ``images`` (rows ``image_ids``) against ``prompt`` in the background, if [eval] is on."""
    scorer = getattr(ctx, "scorer", None)
    if scorer is None or not image_ids:
        return
    task = asyncio.create_task(_score(ctx, scorer, list(image_ids), list(images), prompt), name="clip-score")
    ctx.scoring.add(task)
    task.add_done_callback(ctx.scoring.discard)


async def drain(ctx: Any, timeout: float) -> None:
    """Wait up to ``timeout`` for scoring tasks, then cancel the rest."""
    pending = set(getattr(ctx, "scoring", ()))
    if not pending:
        return
    _, late = await asyncio.wait(pending, timeout=timeout)
    for task in late:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _score(ctx: Any, scorer: Any, image_ids: list[int], images: list[Any], prompt: str) -> None:
    try:
        values = await scorer.score(images, prompt)
        await scores.set_clip_scores(ctx.db, list(zip(image_ids, values)), scorer.model_name)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.warning("CLIP scoring of images %s failed", image_ids, exc_info=True)
