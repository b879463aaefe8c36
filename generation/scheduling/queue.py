"""Fair batching scheduler on the asyncio side: jobs in, one batch per executor at a time.

The policy (who goes next, which jobs share a batch, the ETA estimate) is the pure code in
:mod:`generation.scheduling.policy`; this module is the runtime around it: it keeps the queued and
running :class:`~generation.scheduling.job.Job` objects, runs the picked batches on a pool of executors
(:mod:`generation.scheduling.pool`: one slot per GPU, local thread or Ray Serve lane), and turns the
executors' progress and outcomes (:mod:`generation.scheduling.outcomes`) into job events; a
step's live previews go to the jobs whose images they are, one small JPEG each.

One class holds the runtime's whole state machine (submit, dispatch, settle, retry, cancel,
shutdown), which reads best in one place; what is not that state machine lives beside it: the
back-pressure rules (:mod:`generation.scheduling.admission`), the /status snapshot
(:mod:`generation.scheduling.snapshot`), the plan (:mod:`generation.scheduling.planning`).

Several executors: an idle slot gets the next batch the ``policy`` (default: the fair one,
:data:`~generation.scheduling.policy.FAIR`) picks among the queued jobs it can run, so fairness is
one policy whatever the number of GPUs; a policy may hold an idle slot for a fuller batch.
Positions are the pick order; ETAs place the planned batches on the slots as they free up
(:func:`~generation.scheduling.policy.assign`).

Cancelling: a queued job leaves at once; a running job is reported cancelled at once, and its
batch is interrupted at the next step (by cancelling the executor's ``run()``) only when every
job in that batch has been cancelled; otherwise the batch finishes and its images are dropped.
Other slots' batches are never touched.

Retries (rules in :mod:`generation.scheduling.pool`): a lost batch runs once more, before new work; its
jobs stay ``running`` and get a second ``Started``; only one final event is ever sent.

Back-pressure: ``submit`` raises QueueFull when the queued (not yet running) images would pass
``max_queued_images`` (times the executors in rotation with ``scale_max_queued``) in all or
``max_queued_per_user`` for that user. Priority jobs skip both caps: they are admins' or jobs
re-enqueued after a restart, which were accepted once already.

Executor contract beyond :class:`~generation.core.batch.BatchExecutor`: cancelling ``run()`` stops
the batch at the next step boundary (``Worker`` does); the queue times batches itself. All
methods run on the event loop thread; progress from an executor's thread is moved onto it.

Shutdown: ``close(drain=True)`` stops taking work and runs everything queued;
``close(drain=False)`` stops taking work, lets the running batches finish, and ends the queued
jobs (and those waiting for a retry) with :class:`ShuttingDown` (a ``JobCancelled``) and
returns them, so the caller can keep them in storage for the next start. The queue never
closes its executors.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from generation.core.batch import Batch, BatchExecutor, BatchItem
from generation.core.catalogue import Catalogue
from generation.core.errors import GenerationFailed, ImagineError, QueueFull
from generation.core.request import GenerationRequest, ModelCaps, Shape
from generation.model.preview import preview_jpeg
from generation.scheduling.events import (Cancelled, Done, EventCallback, Failed, JobEvent, Queued, ShuttingDown,
                                          Started, Step)
from generation.scheduling.admission import check_caps, check_count
from generation.scheduling.job import Job
from generation.scheduling.outcomes import INTERNAL_ERROR, settle
from generation.scheduling.policy import FAIR, BatchPolicy, FairState, TimeEstimator, pick_batch, plan
from generation.scheduling.pool import ExecutorPool, RetryBatch, RunningBatch, Slot, model_id_of
from generation.scheduling.snapshot import QueueSnapshot

__all__ = ["Cancelled", "Done", "EventCallback", "Failed", "FairState", "GenerationQueue", "Job", "JobEvent",
           "Queued", "QueueSnapshot", "RunningBatch", "ShuttingDown", "Started", "Step", "TimeEstimator",
           "pick_batch", "plan"]

logger = logging.getLogger(__name__)

_MAX_REMEMBERED_USERS = 10_000


class GenerationQueue:
    """Fair, batching, cancellable queue in front of one or more BatchExecutors."""

    def __init__(
        self,
        executor: BatchExecutor | Sequence[BatchExecutor],
        *,
        max_batch_images: int = 8,
        max_queued_images: int = 64,
        max_queued_per_user: int = 8,
        priority_burst: int = 3,
        batch_time_limit: float | None = None,
        estimator: TimeEstimator | None = None,
        scale_max_queued: bool = False,
        max_executor_failures: int = 3,
        clock: Callable[[], float] = time.monotonic,
        policy: BatchPolicy = FAIR,
    ) -> None:
        for name, value in (("max_batch_images", max_batch_images), ("max_queued_images", max_queued_images),
                            ("max_queued_per_user", max_queued_per_user), ("priority_burst", priority_burst)):
            if value < 1:
                raise ValueError(f"`{name}` must be at least 1 but is {value}")
        if batch_time_limit is not None and batch_time_limit <= 0:
            raise ValueError(f"`batch_time_limit` must be positive or None but is {batch_time_limit}")
        self.pool = ExecutorPool(executor, max_failures=max_executor_failures, estimator=estimator)
        self.executor = self.pool.executors[0]
        self.max_batch_images = max_batch_images
        self._max_queued_images = max_queued_images
        self.scale_max_queued = scale_max_queued
        self.max_queued_per_user = max_queued_per_user
        self.priority_burst = priority_burst
        self.batch_time_limit = batch_time_limit
        self.estimator = estimator or TimeEstimator()
        self.clock = clock
        self.policy = policy
        self.batches_run = 0
        self.retries = 0
        self._queued: dict[str, Job] = {}
        self._jobs: dict[str, Job] = {}  # queued and running, by id
        self._retry: deque[RetryBatch] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._fair = FairState()
        self._order: tuple[str, ...] = ()
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # -- lifetime ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler task on the running loop (idempotent)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            self._task = self._loop.create_task(self._serve(), name="generation-queue")

    async def close(self, drain: bool = True) -> list[Job]:
        """Stop taking work; run the queued jobs (drain) or end them with ShuttingDown.

        Returns the jobs that were not run. The running batches always finish.
        """
        self._accepting = False
        left: list[Job] = []
        if not drain:
            left = list(self._queued.values())
            for retry in self._retry:
                left.extend(j for j in retry.jobs if not j.finished)
            self._retry.clear()
            for job in left:
                self._remove_queued(job)
                job.settle(Cancelled("shutdown"))
            self._refresh()
        elif (self._queued or self._retry) and self._task is None:
            self.start()
        self._wakeup.set()
        if self._task is not None:
            await self._task
        return left

    async def __aenter__(self) -> GenerationQueue:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self, request: GenerationRequest, *, priority: bool = False, job_id: str | None = None
    ) -> Job:
        """Queue ``request`` (seed resolved here). Priority jobs skip the caps on queued images.

        Raises QueueFull (caps, or shutting down) and InvalidRequest (more images than a batch).
        """
        if not self._accepting:
            raise QueueFull("The bot is shutting down and is not taking new images; try again in a minute.")
        check_count(request.count, self.max_batch_images)
        job_id = job_id if job_id is not None else uuid.uuid4().hex[:12]
        if job_id in self._jobs:
            raise ValueError(f"job id {job_id!r} is already queued or running")
        user = f"{request.platform}:{request.user_id}"
        if not priority:
            check_caps(self._queued.values(), user, request.count, per_user=self.max_queued_per_user,
                       total=self.max_queued_images)
        job = Job(self, job_id, request.with_seed(), priority, next(self._seq), clock=self.clock)
        self._queued[job.id] = job
        self._jobs[job.id] = job
        logger.debug("queued %r", job)
        self._refresh()
        self._wakeup.set()
        return job

    # -- looking -------------------------------------------------------------------------------

    @property
    def caps(self) -> ModelCaps:
        """What the executors' model accepts (for parsing options against it)."""
        return self.pool.caps

    @property
    def eta_measured(self) -> bool:
        """Whether ETAs rest on a timed batch yet (see :attr:`TimeEstimator.measured`)."""
        return self.estimator.measured

    @property
    def model_id(self) -> str:
        return self.pool.model_id

    @property
    def catalogue(self) -> Catalogue:
        """The models this queue's executors serve (issue 25)."""
        return self.pool.catalogue

    def caps_for(self, model: str) -> ModelCaps:
        return self.pool.caps_for(model)

    def model_id_for(self, model: str) -> str:
        return model_id_of(self.pool.executors[0], model)

    def checkpoint_hash_for(self, model: str) -> str | None:
        find = getattr(self.pool.executors[0], "checkpoint_hash_for", None)
        return find(model) if callable(find) else getattr(self.pool.executors[0], "checkpoint_hash", None)

    @property
    def executors(self) -> int:
        """Batches that can run at the same time (slots in rotation)."""
        return len(self.pool.in_rotation)

    @property
    def max_queued_images(self) -> int:
        """The cap on queued images, scaled by the executors in rotation when configured."""
        return self._max_queued_images * (self.executors if self.scale_max_queued else 1)

    @property
    def queued_images(self) -> int:
        return sum(job.images for job in self._queued.values())

    @property
    def accepting(self) -> bool:
        return self._accepting

    def job(self, job_id: str) -> Job | None:
        """A queued or running job by id."""
        return self._jobs.get(job_id)

    def snapshot(self) -> QueueSnapshot:
        return QueueSnapshot.of(self._queued.values(), self.pool.running(), order=self._order,
                                batches_run=self.batches_run, accepting=self._accepting,
                                seconds_per_image=self.estimator.learned(), executors=self.executors,
                                retries=self.retries)

    def record_timing(self, shape: Shape, images: int, seconds: float, *, slot: int | None = None) -> None:
        """Teach the ETA estimate (queue-wide, or one slot's); the queue also learns by itself."""
        (self.estimator if slot is None else self.pool.slots[slot].estimator).observe(shape, images, seconds)

    # -- positions and ETAs --------------------------------------------------------------------

    def _refresh(self) -> None:
        """Recompute places in line and ETAs; tell jobs whose place changed."""
        retries = [[j for j in r.jobs if not j.finished] for r in self._retry]
        batches = plan(list(self._queued.values()), self._fair, max_images=self.max_batch_images,
                       priority_burst=self.priority_burst, policy=self.policy)
        self.pool.place(retries + batches, self.estimator)
        order = [job for batch in batches for job in batch]
        for place, job in enumerate(order, 1):
            job.place(place, self.estimator.measured)
        self._order = tuple(job.id for job in order)

    # -- cancelling ----------------------------------------------------------------------------

    def _remove_queued(self, job: Job) -> None:
        self._queued.pop(job.id, None)
        self._jobs.pop(job.id, None)

    def cancel(self, job: Job) -> bool:
        """End ``job`` as cancelled (what :meth:`Job.cancel` asks); False if it had finished."""
        if job.status == "queued":
            self._remove_queued(job)
            job.settle(Cancelled("user"))
            self._refresh()
            logger.debug("cancelled queued %r", job)
            return True
        if job.status != "running":
            return False
        self._jobs.pop(job.id, None)
        job.settle(Cancelled("user"))
        running = next((r for r in self.pool.running() if job in r.jobs), None)
        if running is not None and all(j.finished for j in running.jobs):
            if running.task is not None:
                logger.debug("interrupting a batch on %s whose jobs were all cancelled", running.slot.name)
                running.task.cancel()
        for retry in list(self._retry):
            if job in retry.jobs and all(j.finished for j in retry.jobs):
                self._retry.remove(retry)
                self._refresh()
        return True

    # -- running -------------------------------------------------------------------------------

    def _on_step(self, running: RunningBatch, step: int, steps: int, previews: dict[int, Any] | None = None) -> None:
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            # an executor that reports progress from its own thread
            self._loop.call_soon_threadsafe(self._on_step, running, step, steps, previews)
            return
        running.step = (step, steps)
        event = Step(step, steps)
        start = 0
        for job in running.jobs:  # the batch's items are its jobs' images, in order
            end = start + len(job.request.seeds)
            own = [previews[i] for i in range(start, end) if i in previews] if previews else []
            job.step(running, replace(event, preview=preview_jpeg(own)) if own else event)
            start = end

    async def _serve(self) -> None:
        """The scheduler: fill idle slots until closed and empty."""
        try:
            while True:
                self._wakeup.clear()
                self._dispatch()
                if not (self._queued or self._retry or self._tasks):
                    if not self._accepting:
                        return
                await self._wakeup.wait()
        finally:
            if self._tasks:  # cancelled: the running batches go too
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _dispatch(self) -> None:
        """Give each idle slot a retry it may run, or the next fair batch it can run."""
        self._fail_unrunnable()
        for slot in self.pool.idle():
            retry = self.pool.retry_for(slot, self._retry)
            if retry is not None:
                self._retry.remove(retry)
                self._begin(slot, [j for j in retry.jobs if not j.finished], attempt=2)
                continue
            runnable = [j for j in self._queued.values() if slot.can_run(j.shape)]
            if not runnable:
                continue
            jobs, fair = self.policy.pick(runnable, self._fair, max_images=self.max_batch_images,
                                          priority_burst=self.priority_burst)
            wait = self.policy.hold(jobs, runnable, now=self.clock(), max_images=self.max_batch_images)
            if wait > 0 and self._accepting:  # a fuller batch is expected: look again then
                asyncio.get_running_loop().call_later(wait, self._wakeup.set)
                break
            self._fair = fair
            self._forget_old_users()
            for job in jobs:
                self._queued.pop(job.id, None)
            self._begin(slot, jobs, attempt=1)

    def _fail_unrunnable(self) -> None:
        """End the jobs no executor left in rotation can run (e.g. its only 8-step GPU left)."""
        stuck = [j for j in self._queued.values() if not self.pool.can_run(j.shape)]
        stuck += [j for r in self._retry if not self.pool.can_run(r.batch.shape) for j in r.jobs if not j.finished]
        if not stuck:
            return
        self._retry = deque(r for r in self._retry if self.pool.can_run(r.batch.shape))
        for job in stuck:
            self._queued.pop(job.id, None)
            model = job.shape[6] if len(job.shape) > 6 else ""  # type: ignore[misc]
            self._fail(job, GenerationFailed(
                f"No GPU that serves the model {model} with {job.shape[3]} steps is available right now; try "
                f"another model or other steps." if model else
                f"No GPU that can make {job.shape[3]}-step images is available right now; try other steps."))
        self._refresh()

    def _begin(self, slot: Slot, jobs: list[Job], *, attempt: int) -> None:
        """Start ``jobs`` as one batch on ``slot``."""
        shape = jobs[0].shape
        items = tuple(
            BatchItem(*job.request.styled_prompts, seed=seed, init_image=job.request.init_image,
                      mode=job.request.mode)
            for job in jobs for seed in job.request.seeds
        )
        batch = Batch.from_shape(shape, items)
        switch = slot.switch_seconds(batch.model)  # its model's load first, when not resident
        estimate = slot.batch_seconds(shape, len(items), self.estimator) + switch
        running = RunningBatch(jobs, batch, slot, self.clock(), estimate, attempt, self.clock, switch=switch)
        slot.running = running
        started = Started(len(items), len(jobs), estimate)
        for job in jobs:
            job.start(running, started)
        self._refresh()
        logger.debug("running %d images of %s for %d jobs on %s (attempt %d)",
                     len(items), shape, len(jobs), slot.name, attempt)
        running.task = asyncio.ensure_future(slot.executor.run(
            batch, on_step=lambda i, n, previews=None: self._on_step(running, i, n, previews),
            time_limit=self.batch_time_limit))
        self._tasks.add(asyncio.create_task(self._settle(running), name=f"batch-{slot.name}"))

    async def _settle(self, running: RunningBatch) -> None:
        """Wait for one batch and turn its outcome into job events, a retry, or failures."""
        slot, jobs = running.slot, running.jobs
        if running.task is None:
            raise RuntimeError("a batch is settled only after it was started")
        try:
            await asyncio.wait({running.task})
            self.batches_run += 1
            verdict = settle(running, model_id=model_id_of(slot.executor, running.batch.model), fail=self._fail,
                             done=self._done)
            retry = self.pool.count(running, verdict, self.estimator)
            if retry is not None:
                self.retries += 1
                self._retry.append(retry)
            elif verdict == "lost":
                for job in jobs:
                    if not job.finished:
                        self._fail(job, GenerationFailed(
                            "The image server failed twice while making your images; please try "
                            "again later. Your quota was refunded."))
        except asyncio.CancelledError:
            running.task.cancel()
            raise
        except Exception:
            logger.exception("scheduler failed while settling a batch of %d jobs", len(jobs))
            for job in jobs:
                if not job.finished:
                    self._fail(job, GenerationFailed(INTERNAL_ERROR))
        finally:
            for job in jobs:
                job.leave(running)
            slot.running = None
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._refresh()
            self._wakeup.set()

    def _done(self, job: Job, event: Done) -> None:
        self._jobs.pop(job.id, None)
        job.settle(event)

    def _fail(self, job: Job, error: ImagineError) -> None:
        self._jobs.pop(job.id, None)
        job.settle(Failed(error))

    def _forget_old_users(self) -> None:
        """Bound the fairness memory: drop the longest-idle users without queued work."""
        served = self._fair.last_served
        if len(served) <= _MAX_REMEMBERED_USERS:
            return
        waiting = {job.user for job in self._queued.values()}
        keep = sorted(served.items(), key=lambda kv: kv[1], reverse=True)[: _MAX_REMEMBERED_USERS // 2]
        kept = dict(keep) | {u: served[u] for u in waiting if u in served}
        self._fair = replace(self._fair, last_served=kept)
