"""One queued request as the queue's callers see it: status, place, ETA, events, result, cancel.

Events, in order: ``Queued`` (each time the place in line changes), ``Started``, ``Step`` per
denoising step, then exactly one final event: ``Done``, ``Failed`` or ``Cancelled``.
The :class:`~generation.scheduling.queue.GenerationQueue` drives the transitions; a :class:`Job` only
records them and fans them out to subscribers on the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Union

from generation.core.errors import ImagineError, JobCancelled
from generation.core.request import GenerationRequest, GenerationResult, Shape

if TYPE_CHECKING:
    from generation.scheduling.pool import RunningBatch, Slot
    from generation.scheduling.queue import GenerationQueue

__all__ = ["Cancelled", "Done", "EventCallback", "Failed", "Job", "JobEvent", "Queued", "ShuttingDown",
           "Started", "Step"]

logger = logging.getLogger(__name__)


class ShuttingDown(JobCancelled):
    """The queue closed without draining before this job ran; it was not generated."""


# -- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """Waiting: 1-based place in line and estimated seconds until done."""

    position: int
    eta: float
    final: ClassVar[bool] = False


@dataclass(frozen=True)
class Started:
    """The job's batch went to the GPU: images and jobs in the batch, estimated seconds."""

    batch_size: int
    batch_jobs: int
    eta: float
    final: ClassVar[bool] = False


@dataclass(frozen=True)
class Step:
    """Denoising step ``step`` of ``steps`` finished (restarts if the batch is split on OOM)."""

    step: int
    steps: int
    final: ClassVar[bool] = False


@dataclass(frozen=True)
class Done:
    """The images are ready."""

    result: GenerationResult
    final: ClassVar[bool] = True


@dataclass(frozen=True)
class Failed:
    """The job could not be made; ``str(error)`` is for the user."""

    error: ImagineError
    final: ClassVar[bool] = True


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled: ``reason`` is "user" or "shutdown"."""

    reason: str = "user"
    final: ClassVar[bool] = True


JobEvent = Union[Queued, Started, Step, Done, Failed, Cancelled]
EventCallback = Callable[[JobEvent], None]


# -- jobs ---------------------------------------------------------------------------------------


class Job:
    """One submitted request: status, place in line, ETA, result, events, cancel."""

    def __init__(
        self, queue: GenerationQueue, job_id: str, request: GenerationRequest, priority: bool, seq: int
    ) -> None:
        self._queue = queue
        self.id = job_id
        self.request = request
        self.priority = priority
        self.seq = seq
        self.user = f"{request.platform}:{request.user_id}"
        self.status = "queued"
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._position = 0
        self._eta_queued = 0.0  # seconds after its lane's running batch ends
        self._lane: Slot | None = None  # where the ETA simulation puts it
        self._running: RunningBatch | None = None  # its batch on a slot now
        self._started: Started | None = None
        self._last_step: Step | None = None
        self._final: JobEvent | None = None
        self._result: GenerationResult | None = None
        self._error: ImagineError | None = None
        self._finished = asyncio.Event()
        self._subscribers: list[EventCallback] = []

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.user} {self.status} x{self.images} {self.shape}>"

    @property
    def shape(self) -> Shape:
        return self.request.shape

    @property
    def images(self) -> int:
        return self.request.count

    @property
    def position(self) -> int:
        """1-based place in the scheduler's pick order; 0 once running or finished."""
        return self._position if self.status == "queued" else 0

    @property
    def eta(self) -> float:
        """Estimated seconds until this job is done (0 once finished)."""
        return self._queue._eta_for(self)

    @property
    def finished(self) -> bool:
        return self._final is not None

    async def result(self) -> GenerationResult:
        """The images; raises JobCancelled, GenerationFailed (or ShuttingDown)."""
        await self._finished.wait()
        if self._error is not None:
            raise copy.copy(self._error)
        assert self._result is not None
        return self._result

    def cancel(self) -> bool:
        """Cancel; False if the job had already finished."""
        return self._queue._cancel(self)

    def subscribe(self, callback: EventCallback, *, replay: bool = True) -> Callable[[], None]:
        """Call ``callback(event)`` on the loop for each event; returns an unsubscribe function.

        With ``replay`` the current state is delivered first (Queued, or Started and the last
        Step, or the final event), so a late subscriber misses nothing it needs.
        """
        if replay:
            for event in self._current_events():
                _deliver(callback, event)
        if self._final is None:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def events(self) -> AsyncIterator[JobEvent]:
        """Current state, then each event; ends after Done, Failed or Cancelled."""
        inbox: asyncio.Queue[JobEvent] = asyncio.Queue()
        unsubscribe = self.subscribe(inbox.put_nowait)
        try:
            while True:
                event = await inbox.get()
                yield event
                if event.final:
                    return
        finally:
            unsubscribe()

    # -- transitions (called by the queue) -----------------------------------------------------

    def _current_events(self) -> list[JobEvent]:
        if self._final is not None:
            return [self._final]
        if self.status == "queued":
            return [Queued(self.position, self.eta)]
        events: list[JobEvent] = [self._started] if self._started is not None else []
        return events + ([self._last_step] if self._last_step is not None else [])

    def _emit(self, event: JobEvent) -> None:
        if isinstance(event, Step):
            self._last_step = event
        for callback in list(self._subscribers):
            _deliver(callback, event)

    def _start(self, event: Started) -> None:
        self.status = "running"
        self.started_at = time.monotonic()
        self._started = event
        self._emit(event)

    def _finish(self, status: str, event: JobEvent, *, result: GenerationResult | None = None,
                error: ImagineError | None = None) -> None:
        self.status = status
        self.finished_at = time.monotonic()
        self._result, self._error, self._final = result, error, event
        self._finished.set()
        self._emit(event)
        self._subscribers.clear()


def _deliver(callback: EventCallback, event: JobEvent) -> None:
    try:
        callback(event)
    except Exception:
        logger.exception("job event subscriber %r failed on %r", callback, event)
