"""The policies ``bench/queue_bench.py`` compares the project's fair policy with.

Each plugs into the real :class:`~generation.scheduling.queue.GenerationQueue` through its
``policy`` argument (:class:`~generation.scheduling.policy.BatchPolicy`), so all of them run
on the same queue, pool, service and traces:

- :class:`FifoOne`: the oldest request alone, one at a time (what most community bots do);
- :class:`FifoGreedy`: the oldest request, joined by every later one of the same shape that
  fits (first come, first served, greedy same-shape batching);
- :class:`FixedWindow`: FifoGreedy's batch, but an idle GPU waits until the oldest request has
  waited ``delay`` seconds unless the batch is already full (Triton's dynamic batcher with
  ``max_queue_delay``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from generation.scheduling.policy import Candidate, FairState

__all__ = ["FifoGreedy", "FifoOne", "FixedWindow"]

C = TypeVar("C", bound=Candidate)


class FifoOne:
    """One request per batch, oldest first."""

    name = "fifo-one"

    def pick(self, queued: Sequence[C], state: FairState, *, max_images: int,
             priority_burst: int) -> tuple[list[C], FairState]:
        if not queued:
            return [], state
        return [min(queued, key=lambda j: j.seq)], state

    def hold(self, batch: Sequence[C], queued: Sequence[C], *, now: float, max_images: int) -> float:
        return 0.0


class FifoGreedy(FifoOne):
    """The oldest request and every later one of its shape that still fits, in arrival order."""

    name = "fifo-greedy"

    def pick(self, queued: Sequence[C], state: FairState, *, max_images: int,
             priority_burst: int) -> tuple[list[C], FairState]:
        ordered = sorted(queued, key=lambda j: j.seq)
        if not ordered:
            return [], state
        head = ordered[0]
        batch, room = [head], max_images - head.images
        for job in ordered[1:]:
            if job.shape == head.shape and job.images <= room:
                batch.append(job)
                room -= job.images
        return batch, state


class FixedWindow(FifoGreedy):
    """FifoGreedy, holding an idle GPU up to ``delay`` seconds after the oldest arrival."""

    def __init__(self, delay: float) -> None:
        if delay < 0:
            raise ValueError(f"`delay` must be >= 0 but is {delay}")
        self.delay = delay
        self.name = f"fixed-window-{round(delay * 1000)}ms"

    def hold(self, batch: Sequence[C], queued: Sequence[C], *, now: float, max_images: int) -> float:
        if not batch or sum(j.images for j in batch) >= max_images:
            return 0.0
        oldest = min(j.submitted_at for j in batch)
        return max(0.0, oldest + self.delay - now)
