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

Two variants of the fair policy that issue #29 suggested trying (``--variants``; neither was
adopted, ``docs/queue-bench.md`` has the figures):

- :class:`RateHold`: the fair batch, but an idle GPU holding a batch that is not full waits up to
  ``max_hold`` after its oldest request when the measured arrival rate of that shape makes another
  request of it likely within that time (at least ``expect`` expected);
- :class:`FullestFirst`: the fair policy, but among the users served equally long ago (e.g. every
  newcomer) the head is the job whose shape has the most images waiting: fuller batches first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from generation.scheduling.policy import Candidate, FairPolicy, FairState, pick_batch

__all__ = ["FifoGreedy", "FifoOne", "FixedWindow", "FullestFirst", "RateHold"]

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


class RateHold(FairPolicy):
    """The fair policy, holding an idle GPU for a fuller batch when the shape's arrival rate says so."""

    def __init__(self, max_hold: float, *, expect: float = 0.5, window: float = 30.0) -> None:
        super().__init__(name=f"fair-rate-hold-{round(max_hold * 1000)}ms")
        self.max_hold, self.expect, self.window = max_hold, expect, window
        self._seen: dict[int, tuple[float, object]] = {}  # seq -> (submitted, shape), the last `window` s

    def hold(self, batch: Sequence[C], queued: Sequence[C], *, now: float, max_images: int) -> float:
        for job in queued:
            self._seen.setdefault(job.seq, (job.submitted_at, job.shape))
        self._seen = {k: v for k, v in self._seen.items() if v[0] > now - self.window}
        if not batch or sum(j.images for j in batch) >= max_images:
            return 0.0
        first = min(t for t, _ in self._seen.values())
        rate = sum(1 for _, shape in self._seen.values() if shape == batch[0].shape) / max(now - first, 1e-3)
        if rate * self.max_hold < self.expect:
            return 0.0
        return max(0.0, min(j.submitted_at for j in batch) + self.max_hold - now)


class _Led:
    """A candidate seen with another ``seq`` (only for choosing the head)."""

    __slots__ = ("job", "seq")

    def __init__(self, job: Candidate, seq: int) -> None:
        self.job, self.seq = job, seq

    def __getattr__(self, name: str) -> object:
        return getattr(self.job, name)


class FullestFirst(FairPolicy):
    """The fair policy; among the users served equally long ago, the fullest shape leads."""

    def __init__(self) -> None:
        super().__init__(name="fair-fullest-first")

    def pick(self, queued: Sequence[C], state: FairState, *, max_images: int,
             priority_burst: int) -> tuple[list[C], FairState]:
        normal = [j for j in queued if not j.priority]
        if not normal or len(normal) != len(queued):
            return super().pick(queued, state, max_images=max_images, priority_burst=priority_burst)
        waiting: dict[object, int] = {}
        for job in normal:
            waiting[job.shape] = waiting.get(job.shape, 0) + job.images
        least = min(state.last_served.get(j.user, -1) for j in normal)
        tied = [j for j in normal if state.last_served.get(j.user, -1) == least]
        head = max(tied, key=lambda j: (min(waiting[j.shape], max_images), -j.seq))
        led = [_Led(j, -1 if j is head else j.seq) for j in queued]
        batch, after = pick_batch(led, state, max_images=max_images, priority_burst=priority_burst,  # type: ignore[type-var]
                                  patience=self.patience)
        return [w.job for w in batch], after  # type: ignore[misc]
