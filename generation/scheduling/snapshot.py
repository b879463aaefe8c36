"""The queue at one moment, for /status, /metrics and the benchmarks (read only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from generation.core.request import Shape

__all__ = ["QueueSnapshot"]


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue at one moment, for /status and benchmarks."""

    queued_jobs: int
    queued_images: int
    per_user: dict[str, int]  # queued images per user
    order: tuple[str, ...]  # queued job ids in pick order
    running_jobs: tuple[str, ...]
    running_images: int
    running_shape: Shape | None  # of the longest-running batch
    running_elapsed: float
    batches_run: int
    accepting: bool
    seconds_per_image: dict[Shape, float]
    executors: int = 1  # slots in rotation
    running_batches: int = 0
    retries: int = 0  # batches run again after an executor failed

    @classmethod
    def of(cls, queued: Iterable[Any], running: Sequence[Any], *, order: tuple[str, ...], batches_run: int,
           accepting: bool, seconds_per_image: dict[Shape, float], executors: int, retries: int) -> QueueSnapshot:
        """The snapshot of these ``queued`` jobs and ``running`` batches (RunningBatch)."""
        jobs = list(queued)
        per_user: dict[str, int] = {}
        for job in jobs:
            per_user[job.user] = per_user.get(job.user, 0) + job.images
        oldest = min(running, key=lambda r: r.started_at) if running else None
        return cls(
            queued_jobs=len(jobs),
            queued_images=sum(job.images for job in jobs),
            per_user=per_user,
            order=order,
            running_jobs=tuple(j.id for r in running for j in r.jobs),
            running_images=sum(len(r.batch.items) for r in running),
            running_shape=oldest.batch.shape if oldest else None,
            running_elapsed=oldest.elapsed if oldest else 0.0,
            batches_run=batches_run,
            accepting=accepting,
            seconds_per_image=seconds_per_image,
            executors=executors,
            running_batches=len(running),
            retries=retries,
        )
