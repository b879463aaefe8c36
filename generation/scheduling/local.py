"""Local executors: one pipeline and one worker thread per device, all in the bot's process.

``devices`` empty means the one device of ``[model]`` (the default, unchanged); ``["auto"]``
means every CUDA GPU torch sees; otherwise a list such as ``["cuda:0", "cuda:1"]``. Each
pipeline is loaded with the current CUDA device set to its GPU, and each of its batches runs
with that device current on its worker thread, so nothing lands on ``cuda:0`` by accident.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from generation.core.batch import Batch, ImagePipeline, StepCallback
from generation.model.pipeline import DEVICES, ModelConfig, load_pipeline, resolve_device
from generation.scheduling.worker import Worker

if TYPE_CHECKING:
    from PIL.Image import Image

    from generation.core.request import ModelCaps

__all__ = ["OnDevice", "resolve_devices", "start_workers"]

logger = logging.getLogger(__name__)


def resolve_devices(devices: Sequence[str], default: str) -> list[str]:
    """The devices to run on: ``default`` when none are named, every CUDA GPU for ``["auto"]``."""
    devices = list(devices)
    if not devices:
        return [default]
    if devices == ["auto"]:
        found = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if not found:
            logger.warning("generation.devices is \"auto\" but torch sees no CUDA GPU; using %s", default)
        return found or [default]
    for device in devices:
        kind, _, index = device.partition(":")
        if kind not in DEVICES or kind == "auto" or (index and (kind != "cuda" or not index.isdigit())):
            raise ValueError(
                f"generation.devices: {device!r} is not a device; use names like \"cuda:0\", \"cuda\", \"cpu\"")
    if len(set(devices)) != len(devices) and any(d.startswith("cuda") for d in devices):
        raise ValueError(f"generation.devices names a GPU twice: {devices}")
    return devices


class OnDevice:
    """An ImagePipeline that runs its batches with one CUDA device current (for ``cuda:N``)."""

    def __init__(self, pipeline: ImagePipeline, index: int) -> None:
        self.pipeline = pipeline
        self.index = index

    @property
    def caps(self) -> ModelCaps:
        return self.pipeline.caps

    @property
    def model_id(self) -> str:
        return self.pipeline.model_id

    def __getattr__(self, name: str) -> Any:  # a ModelShelf's catalogue, caps_for, plan_switch, ...
        if name == "pipeline":
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def generate(
        self, batch: Batch, on_step: StepCallback | None = None, should_stop: Callable[[], bool] | None = None
    ) -> list[Image]:
        with torch.cuda.device(self.index):
            return self.pipeline.generate(batch, on_step, should_stop)


def _load_on(model: ModelConfig, device: str, loader: Callable[[ModelConfig], Any]) -> ImagePipeline:
    kind, _, index = device.partition(":")
    if not index:
        return loader(replace(model, device=device))
    with torch.cuda.device(int(index)):  # "cuda" below means this GPU
        return OnDevice(loader(replace(model, device=kind)), int(index))


def start_workers(
    model: ModelConfig,
    devices: Sequence[str],
    *,
    loader: Callable[[ModelConfig], Any] = load_pipeline,
) -> list[Worker]:
    """Load one pipeline per device and start one worker thread for each."""
    devices = resolve_devices(devices, model.device)
    workers: list[Worker] = []
    for n, device in enumerate(devices):
        pipeline = _load_on(model, device, loader)
        name = "gpu-worker" if len(devices) == 1 else f"gpu-worker-{n}"
        worker = Worker(pipeline, name=name)
        worker.start()
        workers.append(worker)
        logger.info("model %s loaded on %s (steps %s)", pipeline.model_id, _where(pipeline, device),
                    ", ".join(map(str, pipeline.caps.steps)))
    return workers


def _where(pipeline: Any, device: str) -> str:
    """The device ``pipeline`` was actually loaded on (``auto`` resolved), with the GPU's name."""
    if ":" in device:  # cuda:N: the pipeline itself says only "cuda"
        actual = torch.device(device)
    else:
        actual = getattr(pipeline, "device", None)
        if not isinstance(actual, torch.device):
            actual = resolve_device(device)
    if actual.type == "cuda":
        return f"{actual} ({torch.cuda.get_device_name(actual)})"
    return str(actual)
