"""The seam between the queue and whatever runs the GPU: a batch in, images (or errors) out.

The queue builds a :class:`Batch` of same-shape images from one or more jobs and hands it to a
:class:`BatchExecutor`: a :class:`generation.scheduling.worker.Worker` (one thread owning one pipeline on
one device) or a :class:`generation.scheduling.ray_backend.RayExecutor` (replicas of a Ray Serve
deployment). The queue runs one batch per executor slot at a time (:mod:`generation.scheduling.pool`);
an executor may say it takes ``slots`` batches at once and give itself a ``name`` for logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Protocol, Union

from generation.core.errors import GenerationFailed
from generation.core.request import FROM_IMAGE, LoraSet, Shape, denoising_steps

if TYPE_CHECKING:
    from PIL.Image import Image

    from generation.core.request import ModelCaps

__all__ = [
    "Batch",
    "shape_model",
    "BatchExecutor",
    "BatchInterrupted",
    "BatchItem",
    "ImagePipeline",
    "ItemOutcome",
    "ItemsRejected",
    "Shape",
    "StepCallback",
]

StepCallback = Callable[..., None]
"""Called after each denoising step with (step, total_steps), 1-based, and on the steps that have
live previews (:mod:`generation.model.preview`) a third argument: ``{item index: small PIL image}``
for the batch's items. A callback that takes two arguments is called with two when there is none."""


@dataclass(frozen=True)
class BatchItem:
    """One image to make: the prompts the pipeline sees (style applied), its seed, and for
    img2img the absolute path of the image it starts from."""

    prompt: str
    negative_prompt: str
    seed: int
    init_image: str | None = None
    mode: str | None = None  # zoom ("1.5", "2") or pan ("left", …): what each item of the batch does


@dataclass(frozen=True)
class Batch:
    """Images of one shape, made by one pipeline call. img2img batches carry their strength."""

    kind: str
    width: int
    height: int
    steps: int
    items: tuple[BatchItem, ...]
    strength: float | None = None
    loras: LoraSet = ()  # ((name, weight), ...) sorted by name: the adapters of every item
    model: str = ""  # the catalogue name of the model that runs it; "" = the executor's default

    def __post_init__(self) -> None:
        img2img = self.kind in FROM_IMAGE  # img2img, upscale, zoom, pan: from an image at a strength
        if img2img != (self.strength is not None):
            raise ValueError(f"`strength` is required for batches from an image only, not {self.kind}")
        if any((item.init_image is not None) != img2img for item in self.items):
            raise ValueError(f"`init_image` is required for items from an image only, not {self.kind}")

    @classmethod
    def from_shape(cls, shape: Shape, items: Sequence[BatchItem]) -> Batch:
        """The batch of ``items`` for a request ``shape`` (see GenerationRequest.shape)."""
        kind, width, height, steps = shape[:4]
        strength = shape[4] if len(shape) > 4 else None  # type: ignore[misc]
        loras = shape[5] if len(shape) > 5 else ()  # type: ignore[misc]
        model = shape[6] if len(shape) > 6 else ""  # type: ignore[misc]
        return cls(kind, width, height, steps, tuple(items), strength, loras, model)

    @property
    def shape(self) -> Shape:
        if self.model:
            return (self.kind, self.width, self.height, self.steps, self.strength, self.loras, self.model)
        if self.loras:
            return (self.kind, self.width, self.height, self.steps, self.strength, self.loras)
        if self.strength is not None:
            return (self.kind, self.width, self.height, self.steps, self.strength)
        return (self.kind, self.width, self.height, self.steps)

    @property
    def denoising_steps(self) -> int:
        """Steps the pipeline really runs (img2img runs ``int(steps * strength)``)."""
        return denoising_steps(self.steps, self.strength)

    def subset(self, indices: Sequence[int]) -> Batch:
        """This batch with only the items at ``indices``, in that order."""
        return replace(self, items=tuple(self.items[i] for i in indices))

    def split(self) -> tuple[Batch, Batch]:
        """Two halves of this batch (for retrying after out-of-memory)."""
        half = (len(self.items) + 1) // 2
        return replace(self, items=self.items[:half]), replace(self, items=self.items[half:])


def shape_model(shape: Shape) -> str:
    """The model a shape names ("" = the default model)."""
    return shape[6] if len(shape) > 6 else ""  # type: ignore[misc]


class BatchInterrupted(Exception):
    """The pipeline stopped at a step boundary because ``should_stop`` returned True."""


class ItemsRejected(Exception):
    """Some items cannot be made at all (e.g. their init image is gone); nothing was run.

    ``errors`` maps item index -> the error for that item; the executor fails those items and
    runs the others without them.
    """

    def __init__(self, errors: Mapping[int, GenerationFailed]) -> None:
        super().__init__(f"{len(errors)} item(s) rejected: " + "; ".join(map(str, errors.values())))
        self.errors = dict(errors)


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
        """One image per item, in order. Raises BatchInterrupted, ItemsRejected, or torch's
        OutOfMemoryError."""
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
