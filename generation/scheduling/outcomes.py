"""What one finished executor call means for its jobs: images, per-job failures, or a lost batch.

Kept apart from the queue's scheduling so each reads on its own. :func:`settle` looks at the
executor task of one :class:`~generation.scheduling.pool.RunningBatch` and

- ``"ok"``: every job not cancelled meanwhile gets its images (``Done``);
- ``"failed"``: some items ended with an error (e.g. out of memory at one image); those jobs
  fail with that error, the others are done;
- ``"refused"``: the executor raised an ``ImagineError`` (it is closing): the jobs fail with it;
- ``"interrupted"``: the call was cancelled because every job in it was cancelled;
- ``"lost"``: the executor raised anything else (crashed thread, dead or silent replica) or
  broke the contract; nothing is settled: the queue decides between a retry and failure.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from generation.core.errors import GenerationFailed, ImagineError
from generation.core.request import GenerationResult
from generation.scheduling.events import Done

if TYPE_CHECKING:
    from generation.scheduling.job import Job
    from generation.scheduling.pool import RunningBatch

__all__ = ["INTERNAL_ERROR", "settle"]

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "Image generation failed because of an internal error; it has been logged."


def settle(
    running: RunningBatch,
    *,
    model_id: str,
    fail: Callable[[Job, ImagineError], None],
    done: Callable[[Job, Done], None],
) -> str:
    """Settle the jobs of ``running`` from its finished task; returns the verdict (see above)."""
    task, jobs, batch = running.task, running.jobs, running.batch
    assert task is not None and task.done()
    items = len(batch.items)
    if task.cancelled():
        for job in jobs:
            if not job.finished:
                fail(job, GenerationFailed("Generation was interrupted; please try again."))
        return "interrupted"
    exc = task.exception()
    if isinstance(exc, ImagineError):
        for job in jobs:
            if not job.finished:
                fail(job, copy.copy(exc))
        return "refused"
    if exc is not None:
        logger.error("%s failed on %d images of %s", running.slot.name, items, batch.shape, exc_info=exc)
        return "lost"
    outcomes = task.result()
    if len(outcomes) != items:
        logger.error("%s returned %d outcomes for %d images", running.slot.name, len(outcomes), items)
        return "lost"
    seconds = running.elapsed
    verdict = "ok"
    start = 0
    for job in jobs:
        mine = outcomes[start:start + job.images]
        start += job.images
        errors = [o for o in mine if isinstance(o, BaseException)]
        if errors:
            verdict = "failed"
        if job.finished:  # cancelled while running: its images are dropped
            continue
        if errors:
            error = errors[0]
            fail(job, copy.copy(error) if isinstance(error, ImagineError) else GenerationFailed(INTERNAL_ERROR))
            continue
        result = GenerationResult(
            request=job.request, images=tuple(mine), seeds=job.request.seeds, model=model_id, seconds=seconds,
            metadata={"job_id": job.id, "batch_size": items, "batch_jobs": len(jobs),
                      "queued_seconds": (job.started_at or job.submitted_at) - job.submitted_at,
                      "executor": running.slot.name, "attempt": running.attempt},
        )
        done(job, Done(result))
    return verdict
