"""Fair batching scheduler on the asyncio side: jobs in, one batch at a time to the executor.

The policy (who goes next, which jobs share a batch, the ETA estimate) is the pure code in
:mod:`generation.scheduling`; this module is the runtime around it: it keeps the queued and
running :class:`~generation.job.Job` objects, runs the picked batches on the executor, and
turns the executor's progress and outcomes into job events.

Cancelling: a queued job leaves at once; a running job is reported cancelled at once, and its
batch is interrupted at the next step (by cancelling the executor's ``run()``) only when every
job in that batch has been cancelled; otherwise the batch finishes and its images are dropped.

Back-pressure: ``submit`` raises QueueFull when the queued (not yet running) images would pass
``max_queued_images`` in all or ``max_queued_per_user`` for that user. Priority jobs skip both
caps: they are admins' or jobs re-enqueued after a restart, which were accepted once already.

Executor contract beyond :class:`~generation.batch.BatchExecutor`: cancelling the ``run()``
awaitable must stop the batch at the next step boundary (``Worker`` does). The queue measures
each successful batch's wall time itself to learn ETAs, so any executor works unchanged.

All methods are called on the event loop thread; progress from an executor's own thread is
moved onto the loop.

Shutdown: ``close(drain=True)`` stops taking work and runs everything queued;
``close(drain=False)`` stops taking work, lets the running batch finish, and ends the queued
jobs with :class:`ShuttingDown` (a ``JobCancelled``) and returns them, so the caller can keep
them ``queued`` in storage for the next start. The queue never closes the executor.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace

from generation.batch import Batch, BatchExecutor, BatchItem, ItemOutcome
from generation.errors import GenerationFailed, ImagineError, InvalidRequest, JobCancelled, QueueFull
from generation.job import (
    Cancelled,
    Done,
    EventCallback,
    Failed,
    Job,
    JobEvent,
    Queued,
    ShuttingDown,
    Started,
    Step,
)
from generation.request import GenerationRequest, GenerationResult, ModelCaps, Shape
from generation.scheduling import FairState, TimeEstimator, pick_batch, plan

__all__ = [
    "Cancelled",
    "Done",
    "EventCallback",
    "Failed",
    "FairState",
    "GenerationQueue",
    "Job",
    "JobEvent",
    "Queued",
    "QueueSnapshot",
    "RunningBatch",
    "ShuttingDown",
    "Started",
    "Step",
    "TimeEstimator",
    "pick_batch",
    "plan",
]

logger = logging.getLogger(__name__)

_INTERNAL_ERROR = "Image generation failed because of an internal error; it has been logged."
MIN_ETA = 0.1
_MAX_REMEMBERED_USERS = 10_000


@dataclass
class RunningBatch:
    """The batch on the executor now."""

    jobs: list[Job]
    batch: Batch
    started_at: float
    estimate: float
    task: asyncio.Task[list[ItemOutcome]] | None = None
    step: tuple[int, int] = (0, 0)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def remaining(self) -> float:
        return max(self.estimate - self.elapsed, 0.0)


@dataclass(frozen=True)
class QueueSnapshot:
    """The queue at one moment, for /status and benchmarks."""

    queued_jobs: int
    queued_images: int
    per_user: dict[str, int]  # queued images per user
    order: tuple[str, ...]  # queued job ids in pick order
    running_jobs: tuple[str, ...]
    running_images: int
    running_shape: Shape | None
    running_elapsed: float
    batches_run: int
    accepting: bool
    seconds_per_image: dict[Shape, float]


class GenerationQueue:
    """Fair, batching, cancellable queue in front of one BatchExecutor."""

    def __init__(
        self,
        executor: BatchExecutor,
        *,
        max_batch_images: int = 8,
        max_queued_images: int = 64,
        max_queued_per_user: int = 8,
        priority_burst: int = 3,
        batch_time_limit: float | None = None,
        estimator: TimeEstimator | None = None,
    ) -> None:
        for name, value in (("max_batch_images", max_batch_images), ("max_queued_images", max_queued_images),
                            ("max_queued_per_user", max_queued_per_user), ("priority_burst", priority_burst)):
            if value < 1:
                raise ValueError(f"`{name}` must be at least 1 but is {value}")
        if batch_time_limit is not None and batch_time_limit <= 0:
            raise ValueError(f"`batch_time_limit` must be positive or None but is {batch_time_limit}")
        self.executor = executor
        self.max_batch_images = max_batch_images
        self.max_queued_images = max_queued_images
        self.max_queued_per_user = max_queued_per_user
        self.priority_burst = priority_burst
        self.batch_time_limit = batch_time_limit
        self.estimator = estimator or TimeEstimator()
        self.batches_run = 0
        self._queued: dict[str, Job] = {}
        self._jobs: dict[str, Job] = {}  # queued and running, by id
        self._running: RunningBatch | None = None
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

        Returns the jobs that were not run. The running batch always finishes.
        """
        self._accepting = False
        left: list[Job] = []
        if not drain:
            left = list(self._queued.values())
            for job in left:
                self._remove_queued(job)
                job._finish("cancelled", Cancelled("shutdown"), error=ShuttingDown(
                    "The bot is shutting down; your request was not started and will run after "
                    "the restart if it was saved."))
            self._refresh()
        elif self._queued and self._task is None:
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
        if request.count > self.max_batch_images:
            raise InvalidRequest(
                "count", f"This bot makes at most {self.max_batch_images} images per request, "
                         f"not {request.count}.")
        job_id = job_id if job_id is not None else uuid.uuid4().hex[:12]
        if job_id in self._jobs:
            raise ValueError(f"job id {job_id!r} is already queued or running")
        user = f"{request.platform}:{request.user_id}"
        if not priority:
            self._check_caps(user, request.count)
        job = Job(self, job_id, request.with_seed(), priority, next(self._seq))
        self._queued[job.id] = job
        self._jobs[job.id] = job
        logger.debug("queued %r", job)
        self._refresh()
        self._wakeup.set()
        return job

    def _check_caps(self, user: str, count: int) -> None:
        mine = sum(j.images for j in self._queued.values() if j.user == user)
        if count > self.max_queued_per_user:
            raise InvalidRequest(
                "count", f"You can queue at most {self.max_queued_per_user} images at once; ask for fewer.")
        if mine + count > self.max_queued_per_user:
            raise QueueFull(
                f"You already have {mine} images queued (limit {self.max_queued_per_user}); "
                "wait for them or /cancel one.")
        total = self.queued_images
        if total + count > self.max_queued_images:
            raise QueueFull(f"The queue is full ({total} images waiting); try again in a minute.")

    # -- looking -------------------------------------------------------------------------------

    @property
    def caps(self) -> ModelCaps:
        """What the executor's model accepts (for parsing options against it)."""
        return self.executor.caps

    @property
    def model_id(self) -> str:
        return self.executor.model_id

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
        per_user: dict[str, int] = {}
        for job in self._queued.values():
            per_user[job.user] = per_user.get(job.user, 0) + job.images
        running = self._running
        return QueueSnapshot(
            queued_jobs=len(self._queued),
            queued_images=self.queued_images,
            per_user=per_user,
            order=self._order,
            running_jobs=tuple(j.id for j in running.jobs) if running else (),
            running_images=len(running.batch.items) if running else 0,
            running_shape=running.batch.shape if running else None,
            running_elapsed=running.elapsed if running else 0.0,
            batches_run=self.batches_run,
            accepting=self._accepting,
            seconds_per_image=self.estimator.learned(),
        )

    def record_timing(self, shape: Shape, images: int, seconds: float) -> None:
        """Teach the ETA estimate (the queue already learns from the batches it runs)."""
        self.estimator.observe(shape, images, seconds)

    # -- internals -----------------------------------------------------------------------------

    def _eta_for(self, job: Job) -> float:
        if job.finished:
            return 0.0
        remaining = self._running.remaining if self._running is not None else 0.0
        if job.status == "running":
            return max(remaining, MIN_ETA)
        return max(remaining + job._eta_queued, MIN_ETA)

    def _refresh(self) -> None:
        """Recompute places in line and ETAs; tell jobs whose place changed."""
        batches = plan(list(self._queued.values()), self._fair,
                       max_images=self.max_batch_images, priority_burst=self.priority_burst)
        order: list[str] = []
        ahead = 0.0
        for batch in batches:
            ahead += self.estimator.batch_seconds(batch[0].shape, sum(j.images for j in batch))
            for job in batch:
                order.append(job.id)
                job._eta_queued = ahead
                if job._position != len(order):
                    job._position = len(order)
                    job._emit(Queued(job._position, job.eta))
        self._order = tuple(order)

    def _remove_queued(self, job: Job) -> None:
        self._queued.pop(job.id, None)
        self._jobs.pop(job.id, None)

    def _cancel(self, job: Job) -> bool:
        if job.status == "queued":
            self._remove_queued(job)
            job._finish("cancelled", Cancelled("user"), error=JobCancelled("Your request was cancelled."))
            self._refresh()
            logger.debug("cancelled queued %r", job)
            return True
        if job.status != "running":
            return False
        self._jobs.pop(job.id, None)
        job._finish("cancelled", Cancelled("user"), error=JobCancelled("Your request was cancelled."))
        running = self._running
        if running is not None and job in running.jobs and all(j.status == "cancelled" for j in running.jobs):
            if running.task is not None:
                logger.debug("interrupting a batch whose jobs were all cancelled")
                running.task.cancel()
        return True

    def _on_step(self, running: RunningBatch, step: int, steps: int) -> None:
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            # an executor that reports progress from its own thread
            self._loop.call_soon_threadsafe(self._on_step, running, step, steps)
            return
        running.step = (step, steps)
        event = Step(step, steps)
        for job in running.jobs:
            if job.status == "running":
                job._emit(event)

    async def _serve(self) -> None:
        """The scheduler: one batch at a time until closed and empty."""
        while True:
            if not self._queued:
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            jobs, self._fair = pick_batch(list(self._queued.values()), self._fair,
                                          max_images=self.max_batch_images,
                                          priority_burst=self.priority_burst)
            self._forget_old_users()
            for job in jobs:
                self._queued.pop(job.id, None)
            try:
                await self._run(jobs)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("scheduler failed while running a batch of %d jobs", len(jobs))
                for job in jobs:
                    if not job.finished:
                        self._fail(job, GenerationFailed(_INTERNAL_ERROR))
            finally:
                self._running = None

    async def _run(self, jobs: list[Job]) -> None:
        """Run one picked batch through the executor and settle its jobs."""
        shape = jobs[0].shape
        items = tuple(
            BatchItem(*job.request.styled_prompts, seed=seed, init_image=job.request.init_image)
            for job in jobs for seed in job.request.seeds
        )
        batch = Batch.from_shape(shape, items)
        running = RunningBatch(jobs, batch, time.monotonic(), self.estimator.batch_seconds(shape, len(items)))
        self._running = running
        started = Started(len(items), len(jobs), running.estimate)
        for job in jobs:
            job._start(started)
        self._refresh()
        logger.debug("running %d images of %s for %d jobs", len(items), shape, len(jobs))
        running.task = asyncio.create_task(
            self.executor.run(batch, on_step=lambda i, n: self._on_step(running, i, n),
                              time_limit=self.batch_time_limit)
        )
        try:
            await asyncio.wait({running.task})
        except asyncio.CancelledError:
            running.task.cancel()
            raise
        seconds = running.elapsed
        self.batches_run += 1
        task = running.task
        if task.cancelled():
            for job in jobs:
                if not job.finished:
                    self._fail(job, GenerationFailed("Generation was interrupted; please try again."))
            return
        exc = task.exception()
        if exc is not None:
            if isinstance(exc, ImagineError):
                message = str(exc)
            else:
                logger.error("executor failed on %d images of %s", len(items), shape, exc_info=exc)
                message = _INTERNAL_ERROR
            for job in jobs:
                if not job.finished:
                    self._fail(job, GenerationFailed(message))
            return
        outcomes = task.result()
        if len(outcomes) != len(items):
            logger.error("executor returned %d outcomes for %d images", len(outcomes), len(items))
            for job in jobs:
                if not job.finished:
                    self._fail(job, GenerationFailed(_INTERNAL_ERROR))
            return
        if not any(isinstance(o, BaseException) for o in outcomes):
            self.estimator.observe(shape, len(items), seconds)
        start = 0
        for job in jobs:
            mine = outcomes[start:start + job.images]
            start += job.images
            if job.finished:  # cancelled while running: its images are dropped
                continue
            errors = [o for o in mine if isinstance(o, BaseException)]
            if errors:
                error = errors[0]
                self._fail(job, copy.copy(error) if isinstance(error, ImagineError)
                           else GenerationFailed(_INTERNAL_ERROR))
                continue
            self._jobs.pop(job.id, None)
            result = GenerationResult(
                request=job.request, images=tuple(mine), seeds=job.request.seeds,
                model=self.executor.model_id, seconds=seconds,
                metadata={"job_id": job.id, "batch_size": len(items), "batch_jobs": len(jobs),
                          "queued_seconds": (job.started_at or job.submitted_at) - job.submitted_at},
            )
            job._finish("done", Done(result), result=result)

    def _fail(self, job: Job, error: ImagineError) -> None:
        self._jobs.pop(job.id, None)
        job._finish("failed", Failed(error), error=error)

    def _forget_old_users(self) -> None:
        """Bound the fairness memory: drop the longest-idle users without queued work."""
        served = self._fair.last_served
        if len(served) <= _MAX_REMEMBERED_USERS:
            return
        waiting = {job.user for job in self._queued.values()}
        keep = sorted(served.items(), key=lambda kv: kv[1], reverse=True)[: _MAX_REMEMBERED_USERS // 2]
        kept = dict(keep) | {u: served[u] for u in waiting if u in served}
        self._fair = replace(self._fair, last_served=kept)
