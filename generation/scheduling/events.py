"""What happens to a queued job, as events: the one vocabulary of progress in the bot.

In order: ``Queued`` (each time the place in line changes), ``Started``, ``Step`` per denoising
step (some with a live preview), then exactly one final event: ``Done``, ``Failed`` or ``Cancelled``. The queue's
:class:`~generation.scheduling.job.Job` sends them; the service's tickets pass ``Queued``,
``Step``, ``Failed`` and ``Cancelled`` on to the front ends as they are, and put ``Finished``
(the stored images) where the queue says ``Done`` (:mod:`bot.service.tickets`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Union

from generation.core.errors import ImagineError, JobCancelled
from generation.core.request import GenerationResult

__all__ = ["CANCELLED", "SHUTTING_DOWN", "Cancelled", "Done", "EventCallback", "Failed", "JobEvent", "Queued",
           "ShuttingDown", "Started", "Step"]

CANCELLED = "Your request was cancelled."
SHUTTING_DOWN = ("The bot is shutting down; your request was not started and will run after the restart "
                 "if it was saved.")


class ShuttingDown(JobCancelled):
    """The queue closed without draining before this job ran; it was not generated."""


@dataclass(frozen=True)
class Queued:
    """Waiting: 1-based place in line and estimated seconds until done."""

    position: int
    eta: float
    # False: no batch was timed yet, so ``eta`` is a rough guess (how it is said, not what it is:
    # left out of ==, like the exact eta is of no test of the place in line)
    measured: bool = field(default=True, compare=False)
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
    """Denoising step ``step`` of ``steps`` finished (0 right after starting; restarts if the
    batch is split on OOM or run again). ``preview``: on the steps that have a live preview
    (``[preview]``), a small JPEG of this job's images as they are forming (a 2-column grid of
    several); None on the others."""

    step: int
    steps: int
    preview: bytes | None = field(default=None, compare=False, repr=False)
    final: ClassVar[bool] = False


@dataclass(frozen=True)
class Done:
    """The images are ready."""

    result: GenerationResult
    final: ClassVar[bool] = True


@dataclass(frozen=True)
class Failed:
    """The job could not be made (nothing is charged for it); ``message`` is for the user."""

    error: ImagineError
    final: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return str(self.error)


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled: ``reason`` is "user" or "shutdown"; ``message`` is for the user."""

    reason: str = "user"
    final: ClassVar[bool] = True

    @property
    def message(self) -> str:
        return SHUTTING_DOWN if self.reason == "shutdown" else CANCELLED

    @property
    def error(self) -> JobCancelled:
        """What waiting for the job's result raises."""
        return ShuttingDown(SHUTTING_DOWN) if self.reason == "shutdown" else JobCancelled(CANCELLED)


JobEvent = Union[Queued, Started, Step, Done, Failed, Cancelled]
EventCallback = Callable[[JobEvent], None]
