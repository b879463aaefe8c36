"""The seam between the queue and whatever runs the GPU: a batch in, images (or errors) out.

The queue builds a :class:`Batch` of same-shape images from one or more jobs and hands it to a
:class:`BatchExecutor`. Today that is :class:`generation.worker.Worker` (one thread owning one
pipeline); a pool of remote GPU replicas can implement the same protocol later without touching
the queue's fairness or the service's bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Union

if TYPE_CHECKING:
    from PIL.Image import Image

    from generation.errors import GenerationFailed
    from generation.request import ModelCaps

__all__ = [
    "Batch",
    "BatchExecutor",
    "BatchInterrupted",
    "BatchItem",
    "ImagePipeline",
    "ItemOutcome",
    "StepCallback",
]

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (step, total_steps), 1-based."""


@dataclass(frozen=True)
class BatchItem:
    """One image to make: the prompts the pipeline sees (style applied) and its seed."""

    prompt: str
    negative_prompt: str
    seed: int


@dataclass(frozen=True)
class Batch:
    """Images of one shape, made by one pipeline call."""

    kind: str
    width: int
    height: int
    steps: int
    items: tuple[BatchItem, ...]

    @property
    def shape(self) -> tuple[str, int, int, int]:
        return (self.kind, self.width, self.height, self.steps)

    def split(self) -> tuple[Batch, Batch]:
        """Two halves of this batch (for retrying after out-of-memory)."""
        half = (len(self.items) + 1) // 2
        return (
            Batch(self.kind, self.width, self.height, self.steps, self.items[:half]),
            Batch(self.kind, self.width, self.height, self.steps, self.items[half:]),
        )


class BatchInterrupted(Exception):
    """The pipeline stopped at a step boundary because ``should_stop`` returned True."""


class ImagePipeline(Protocol):
    """Runs one batch synchronously on the calling thread (the worker's)."""

    caps: ModelCaps
    model_id: str

    def generate(
        self,
        batch: Batch,
        on_step: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Image]:
        """One image per item, in order. Raises BatchInterrupted, or torch's OutOfMemoryError."""
        ...


ItemOutcome = Union["Image", "GenerationFailed"]


class BatchExecutor(Protocol):
    """Asynchronous side of the seam, used by the queue."""

    caps: ModelCaps
    model_id: str

    async def run(
        self, batch: Batch, on_step: StepCallback | None = None, time_limit: float | None = None
    ) -> list[ItemOutcome]:
        """One outcome per item, in order: an image, or the error that item ended with.

        Cancelling the awaiting task asks the executor to stop the batch at the next step
        boundary; the cancellation propagates only once the GPU is free for the next batch.
        """
        ...
