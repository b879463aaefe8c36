"""The executors behind the queue: one slot per batch that can run at the same time.

A slot is one place a batch runs: a local :class:`~generation.scheduling.worker.Worker` on one device, or
one lane into a Ray Serve deployment (an executor with ``slots = N`` gets N slots, all sharing
it; Serve's router spreads the N concurrent calls over its replicas). The queue keeps the one
fair policy; the pool only answers "who is free, who can run this shape, how fast is it".

Retry and rotation rules (applied by the queue, counted here):

- An executor whose ``run()`` raises something that is not an
  :class:`~generation.core.errors.ImagineError` (a crashed thread, a dead or silent replica) has
  failed the *batch*, not its jobs: the batch runs again once, on another slot when one can
  run it. A second failure fails its jobs.
- A slot that fails ``max_failures`` batches in a row leaves the rotation (logged), unless it is
  the last one in rotation. A success resets the count. Lanes into one shared executor (Ray)
  stay: Serve's health checks replace a replica that keeps failing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from generation.core.batch import Batch, BatchExecutor, ItemOutcome, shape_model
from generation.core.catalogue import Catalogue
from generation.core.request import ModelCaps, Shape
from generation.scheduling.policy import LaneView, TimeEstimator, assign

if TYPE_CHECKING:
    from generation.scheduling.job import Job

__all__ = ["ExecutorPool", "RetryBatch", "RunningBatch", "Slot", "caps_of", "model_id_of", "plan_resident"]

logger = logging.getLogger(__name__)


def caps_of(executor: BatchExecutor, model: str) -> ModelCaps | None:
    """What ``executor`` accepts for ``model`` ("" = its default); None when it lacks that model."""
    if not model:
        return executor.caps
    find = getattr(executor, "caps_for", None)
    return find(model) if callable(find) else None


def model_id_of(executor: BatchExecutor, model: str) -> str:
    """The model id ``executor`` runs ``model`` as."""
    find = getattr(executor, "model_id_for", None)
    return find(model) if callable(find) else executor.model_id


def plan_resident(executor: BatchExecutor) -> tuple[str, ...]:
    find = getattr(executor, "resident", None)
    return tuple(find()) if callable(find) else ()


@dataclass
class RunningBatch:
    """A batch on one slot now."""

    jobs: list[Job]
    batch: Batch
    slot: Slot
    started_at: float
    estimate: float
    attempt: int = 1
    clock: Callable[[], float] = time.monotonic
    task: asyncio.Task[list[ItemOutcome]] | None = None
    step: tuple[int, int] = (0, 0)
    switch: float = 0.0  # seconds of its estimate spent loading its model first (issue 25)

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started_at

    @property
    def remaining(self) -> float:
        return max(self.estimate - self.elapsed, 0.0)


@dataclass
class RetryBatch:
    """A batch whose executor failed, waiting for a slot to run it once more."""

    jobs: list[Job]
    batch: Batch
    failed_on: int  # slot index


@dataclass
class Slot:
    """One executor lane: at most one batch at a time; its own learned speed."""

    index: int
    executor: BatchExecutor
    name: str
    estimator: TimeEstimator = field(default_factory=TimeEstimator)
    running: RunningBatch | None = None
    failures: int = 0  # batches failed in a row
    in_rotation: bool = True

    def can_run(self, shape: Shape) -> bool:
        caps = caps_of(self.executor, shape_model(shape))
        return caps is not None and shape[3] in caps.steps

    def switch_seconds(self, model: str) -> float:
        """What a batch of ``model`` waits for its model to load here (0 when it is loaded)."""
        plan = getattr(self.executor, "plan_switch", None)
        return plan(model, plan_resident(self.executor))[0] if callable(plan) else 0.0

    @property
    def remaining(self) -> float:
        """Estimated seconds until the batch running here ends; 0 when idle."""
        return self.running.remaining if self.running is not None else 0.0

    @property
    def idle(self) -> bool:
        return self.in_rotation and self.running is None

    def seconds_per_image(self, shape: Shape, shared: TimeEstimator) -> float:
        """This slot's learned speed once it has run anything, the queue-wide one before."""
        own = self.estimator if self.estimator.learned() else shared
        return own.seconds_per_image(shape)

    def batch_seconds(self, shape: Shape, images: int, shared: TimeEstimator) -> float:
        """Seconds one batch of ``images`` of ``shape`` takes here (learned as seconds_per_image is)."""
        own = self.estimator if self.estimator.learned() else shared
        return own.batch_seconds(shape, images)


class ExecutorPool:
    """The slots, their merged caps and their failure counts."""

    def __init__(self, executors: BatchExecutor | Sequence[BatchExecutor], *, max_failures: int = 3,
                 estimator: TimeEstimator | None = None) -> None:
        """``estimator``: the queue's; each slot learns its own speed with the same settings."""
        if max_failures < 1:
            raise ValueError(f"`max_failures` must be at least 1 but is {max_failures}")
        executors = list(executors) if isinstance(executors, Sequence) else [executors]
        if not executors:
            raise ValueError("`executors` must name at least one executor")
        first = executors[0]
        for other in executors[1:]:
            if (other.model_id, other.caps.base_resolution) != (first.model_id, first.caps.base_resolution):
                raise ValueError(
                    f"all executors must serve one model: {first.model_id!r} at {first.caps.base_resolution}px "
                    f"vs {other.model_id!r} at {other.caps.base_resolution}px")
        self.executors = tuple(executors)
        self.max_failures = max_failures
        self.slots: list[Slot] = []
        for n, executor in enumerate(executors):
            lanes = int(getattr(executor, "slots", 1))
            if lanes < 1:
                raise ValueError(f"executor {n} has `slots` = {lanes}; it must be at least 1")
            label = getattr(executor, "name", None) or f"executor-{n}"
            for lane in range(lanes):
                name = label if lanes == 1 else f"{label}/{lane}"
                self.slots.append(Slot(len(self.slots), executor, name,
                                       estimator=(estimator or TimeEstimator()).fresh()))

    @property
    def caps(self) -> ModelCaps:
        """What any executor accepts: the model's resolution, every step count loaded anywhere,
        the LoRAs every executor has (one scanned folder: normally all of them)."""
        first = self.executors[0].caps
        steps = sorted({s for e in self.executors for s in e.caps.steps})
        loras = tuple(lora for lora in first.loras if all(lora in e.caps.loras for e in self.executors))
        return ModelCaps(name=first.name, base_resolution=first.base_resolution, steps=tuple(steps), loras=loras)

    @property
    def model_id(self) -> str:
        return self.executors[0].model_id

    @property
    def catalogue(self) -> Catalogue:
        """The models the executors serve (each serves the same catalogue); one model: its own."""
        found = getattr(self.executors[0], "catalogue", None)
        return found if found is not None else Catalogue.single(self.caps, self.model_id)

    def caps_for(self, name: str) -> ModelCaps:
        """What model ``name`` accepts ("" = the default): the merged caps for the default."""
        if not name:
            return self.caps
        caps = caps_of(self.executors[0], name)
        return caps if caps is not None else self.catalogue.caps_for(name)

    @property
    def in_rotation(self) -> list[Slot]:
        return [s for s in self.slots if s.in_rotation]

    def idle(self) -> list[Slot]:
        return [s for s in self.slots if s.idle]

    def running(self) -> list[RunningBatch]:
        return [s.running for s in self.slots if s.running is not None]

    def can_run(self, shape: Shape) -> bool:
        """Some slot in rotation can run ``shape``."""
        return any(s.can_run(shape) for s in self.in_rotation)

    def lanes(self, shared: TimeEstimator) -> list[LaneView]:
        """The slots in rotation as the ETA simulation sees them (same order as ``in_rotation``)."""
        return [
            LaneView(
                free_in=s.running.remaining if s.running is not None else 0.0,
                steps=tuple(s.executor.caps.steps),
                seconds_per_image=lambda shape, s=s: s.seconds_per_image(shape, shared),
                batch_seconds=lambda shape, images, s=s: s.batch_seconds(shape, images, shared),
                runs=s.can_run,
                resident=tuple(plan_resident(s.executor)),
                switch=getattr(s.executor, "plan_switch", None),
            )
            for s in self.in_rotation
        ]

    def retry_for(self, slot: Slot, retries: Iterable[RetryBatch]) -> RetryBatch | None:
        """The first waiting retry ``slot`` may run: not on the slot that lost it, unless no
        other slot in rotation can run its shape."""
        for retry in retries:
            if not slot.can_run(retry.batch.shape):
                continue
            others = [s for s in self.in_rotation if s.index != retry.failed_on and s.can_run(retry.batch.shape)]
            if slot.index != retry.failed_on or not others:
                return retry
        return None

    def place(self, batches: Sequence[Sequence[Job]], shared: TimeEstimator) -> None:
        """Plan each job's ETA: its lane and offset for ``batches`` (in the order they will start)."""
        batches = [b for b in batches if b]
        slots, lanes = self.in_rotation, self.lanes(shared)
        placed = assign([(b[0].shape, sum(j.images for j in b)) for b in batches], lanes)
        for batch, (lane, ends) in zip(batches, placed):
            for job in batch:
                if lane < 0:  # no slot can run it (it is about to fail)
                    job.plan(None, shared.batch_seconds(job.shape, job.images))
                else:  # ETA = what the lane's running batch has left + this offset
                    job.plan(slots[lane], ends - lanes[lane].free_in)

    def count(self, running: RunningBatch, verdict: str, shared: TimeEstimator) -> RetryBatch | None:
        """Count how ``running`` ended (a verdict of :func:`~generation.scheduling.outcomes.settle`):
        an "ok" batch teaches the timings and resets its slot's failures; a "lost" one counts a
        failure and, on its first attempt, comes back as the batch of its unfinished jobs to run
        once more."""
        slot, batch = running.slot, running.batch
        if verdict == "ok":
            slot.failures = 0
            for estimator in (shared, slot.estimator):  # the model's load is not the shape's speed
                estimator.observe(batch.shape, len(batch.items), max(running.elapsed - running.switch, 1e-6))
        if verdict != "lost":
            return None
        self.failed(slot)
        unfinished = [j for j in running.jobs if not j.finished]
        if running.attempt > 1 or not unfinished:
            return None
        logger.warning("%s lost a batch of %d images; running it once more", slot.name, len(batch.items))
        return RetryBatch(unfinished, batch, slot.index)

    def failed(self, slot: Slot) -> None:
        """Count a failed batch; take the slot out of rotation when it keeps failing."""
        slot.failures += 1
        if slot.failures >= self.max_failures and slot.in_rotation:
            if int(getattr(slot.executor, "slots", 1)) > 1:
                logger.error("%s failed %d batches in a row; its executor replaces bad replicas itself",
                             slot.name, slot.failures)
                return
            if len(self.in_rotation) == 1:
                logger.error("%s failed %d batches in a row; it is the last executor, so it stays",
                             slot.name, slot.failures)
                return
            slot.in_rotation = False
            logger.error("%s failed %d batches in a row and is taken out of rotation; %d left",
                         slot.name, slot.failures, len(self.in_rotation))
