"""One queued request as the queue's callers see it: status, place, ETA, events, result, cancel.

The events are those of :mod:`generation.scheduling.events`. The queue drives the transitions
through the methods under "transitions" (:meth:`Job.place`, :meth:`Job.start`, :meth:`Job.settle`
…); a :class:`Job` records them, fans them out to subscribers on the event loop, and asks its
queue for one thing only, through :class:`JobHost`: to cancel it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from generation.core.errors import GenerationFailed, ImagineError
from generation.core.request import GenerationRequest, GenerationResult, Shape
from generation.scheduling.events import (Cancelled, Done, EventCallback, Failed, JobEvent, Queued, ShuttingDown,
                                          Started, Step)

__all__ = ["Cancelled", "Countdown", "Done", "EventCallback", "Failed", "Job", "JobEvent", "JobHost", "MIN_ETA",
           "Queued", "ShuttingDown", "Started", "Step"]

logger = logging.getLogger(__name__)

MIN_ETA = 0.1  # an ETA never reads 0 before the job is done


class JobHost(Protocol):
    """What a job needs from the queue that holds it."""

    def cancel(self, job: Job) -> bool:
        """End ``job`` as cancelled; False if it had already finished."""


class Countdown(Protocol):
    """Something with an estimated end: a running batch, or the executor lane a job waits for."""

    @property
    def remaining(self) -> float:
        """Estimated seconds left (0 when it is over or idle)."""


class Job:
    """One submitted request: status, place in line, ETA, result, events, cancel."""

    def __init__(self, host: JobHost, job_id: str, request: GenerationRequest, priority: bool, seq: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._host = host
        self.id = job_id
        self.request = request
        self.priority = priority
        self.seq = seq
        self.user = f"{request.platform}:{request.user_id}"
        self._shape = request.shape  # asked on every pick and ETA refresh; the request never changes
        self.status = "queued"
        self._clock = clock  # submitted/started/finished times on the queue's clock
        self.submitted_at = clock()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._position = 0
        self._measured = True  # the queue says at each place() whether its ETAs rest on a timed batch
        self._lane: Countdown | None = None  # where the ETA plan puts it
        self._after_lane = 0.0  # seconds after its lane's running batch ends
        self._running: Countdown | None = None  # its batch on a slot now
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
        return self._shape

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
        if self.finished:
            return 0.0
        if self._running is not None:
            return max(self._running.remaining, MIN_ETA)
        ahead = self._lane.remaining if self._lane is not None else 0.0
        return max(ahead + self._after_lane, MIN_ETA)

    @property
    def finished(self) -> bool:
        return self._final is not None

    @property
    def error(self) -> ImagineError | None:
        """What the job failed or was cancelled with (None while it runs, or when it is done)."""
        return self._error

    async def result(self) -> GenerationResult:
        """The images; raises JobCancelled, GenerationFailed (or ShuttingDown)."""
        await self._finished.wait()
        if self._error is not None:
            raise copy.copy(self._error)
        if self._result is None:  # pragma: no cover - finished means a result or an error
            raise GenerationFailed("The request ended without a result.")
        return self._result

    def cancel(self) -> bool:
        """Cancel; False if the job had already finished."""
        return self._host.cancel(self)

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

    # -- transitions (the queue calls these) ---------------------------------------------------

    def plan(self, lane: Countdown | None, after: float) -> None:
        """Expect to be done ``after`` seconds after ``lane`` (None: no lane) ends what it runs."""
        self._lane, self._after_lane = lane, after

    def place(self, position: int, measured: bool = True) -> None:
        """A new place in line: subscribers hear ``Queued`` when it changed (with ``measured``:
        whether the ETA rests on a timed batch by then)."""
        self._measured = measured
        if position != self._position:
            self._position = position
            self._emit(Queued(position, self.eta, measured))

    def start(self, running: Countdown, event: Started) -> None:
        """The job's batch ``running`` went to an executor (again, on a retry)."""
        self.status = "running"
        self.started_at = self._clock()
        self._running, self._started = running, event
        self._emit(event)

    def step(self, running: Countdown, event: Step) -> None:
        """Progress of the batch ``running``: passed on while the job still runs in it."""
        if self.status == "running" and self._running is running:
            self._last_step = event
            self._emit(event)

    def leave(self, running: Countdown) -> None:
        """The batch ``running`` is over (the job settles, or waits to run again)."""
        if self._running is running:
            self._running = None

    def settle(self, event: Done | Failed | Cancelled) -> None:
        """The one final event: done, failed or cancelled."""
        if isinstance(event, Done):
            self.status, self._result = "done", event.result
        else:
            self.status, self._error = ("failed" if isinstance(event, Failed) else "cancelled"), event.error
        self.finished_at = self._clock()
        self._final = event
        self._finished.set()
        self._emit(event)
        self._subscribers.clear()

    def _current_events(self) -> list[JobEvent]:
        if self._final is not None:
            return [self._final]
        if self.status == "queued":
            return [Queued(self.position, self.eta, self._measured)]
        events: list[JobEvent] = [self._started] if self._started is not None else []
        return events + ([self._last_step] if self._last_step is not None else [])

    def _emit(self, event: JobEvent) -> None:
        for callback in list(self._subscribers):
            _deliver(callback, event)


def _deliver(callback: EventCallback, event: JobEvent) -> None:
    try:
        callback(event)
    except Exception:
        logger.exception("job event subscriber %r failed on %r", callback, event)
