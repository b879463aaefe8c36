"""A fake ImagePipeline at the GPU seam: deterministic images, failures and slowness on demand."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image

from generation.core.batch import Batch, BatchInterrupted, BatchItem, StepCallback
from generation.model.pipeline import load_init_images
from generation.core.request import ModelCaps

__all__ = ["FakeCall", "FakePipeline", "fake_color", "fake_image"]


def fake_color(prompt: str, seed: int, init: Image.Image | None = None) -> tuple[int, int, int]:
    """The solid colour FakePipeline paints for (prompt, seed) or, img2img, (prompt, seed, init)."""
    key = f"{prompt}|{seed}".encode()
    if init is not None:
        key += b"|" + hashlib.sha256(init.convert("RGB").tobytes()).digest()
    digest = hashlib.sha256(key).digest()
    return digest[0], digest[1], digest[2]


def fake_image(item: BatchItem, width: int, height: int, init: Image.Image | None = None) -> Image.Image:
    """The image FakePipeline makes for ``item`` (from ``init`` for img2img), whatever batch it is in."""
    image = Image.new("RGB", (width, height), fake_color(item.prompt, item.seed, init))
    image.info["seed"] = item.seed
    image.info["prompt"] = item.prompt
    if item.init_image is not None:
        image.info["init_image"] = item.init_image
    return image


@dataclass
class FakeCall:
    """One generate() call as the fake saw it."""

    batch: Batch
    thread: threading.Thread
    steps_run: int = 0
    outcome: str = "running"  # "ok", "oom", "error", "interrupted", "rejected"

    @property
    def size(self) -> int:
        return len(self.batch.items)

    @property
    def prompts(self) -> list[str]:
        return [item.prompt for item in self.batch.items]


@dataclass
class FakePipeline:
    """Implements ImagePipeline without torch models; records every call."""

    step_seconds: float = 0.0
    oom_above: int | None = None  # raise OutOfMemoryError when a batch has more items than this
    fail_prompt: str | None = None  # raise RuntimeError when an item's prompt contains this
    fail_with: Callable[[Batch], BaseException | None] | None = None
    caps: ModelCaps = field(default_factory=lambda: ModelCaps(name="fake", base_resolution=256, steps=(1, 2, 4, 8)))
    model_id: str = "fake"
    calls: list[FakeCall] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    entered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def __post_init__(self) -> None:
        self.gate.set()

    def pause(self) -> None:
        """Block every step until resume() (the call has started: see wait_entered)."""
        self.gate.clear()

    def resume(self) -> None:
        self.gate.set()

    def wait_entered(self, timeout: float = 5.0) -> bool:
        """Block until a generate() call has started (use with asyncio.to_thread)."""
        return self.entered.acquire(timeout=timeout)

    @property
    def call_sizes(self) -> list[int]:
        return [call.size for call in self.calls]

    def generate(
        self,
        batch: Batch,
        on_step: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Image.Image]:
        call = FakeCall(batch, threading.current_thread())
        self.calls.append(call)
        self.entered.release()
        if self.fail_with is not None and (error := self.fail_with(batch)) is not None:
            call.outcome = "error"
            raise error
        if self.fail_prompt is not None and any(self.fail_prompt in i.prompt for i in batch.items):
            call.outcome = "error"
            raise RuntimeError(f"fake pipeline exploded at 0x{id(batch):x}")
        if self.oom_above is not None and len(batch.items) > self.oom_above:
            call.outcome = "oom"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        inits: list[Image.Image | None] = [None] * len(batch.items)
        if batch.kind == "img2img":
            try:
                inits = list(load_init_images(batch))  # the real loader: ItemsRejected for bad files
            except Exception:
                call.outcome = "rejected"
                raise
        steps = batch.denoising_steps
        for i in range(1, steps + 1):
            if not self.gate.wait(timeout=10):
                raise RuntimeError("FakePipeline was paused for more than 10 s")
            if should_stop is not None and should_stop():
                call.outcome = "interrupted"
                raise BatchInterrupted(f"stopped before step {i}")
            if self.step_seconds:
                time.sleep(self.step_seconds)
            call.steps_run = i
            if on_step is not None:
                on_step(i, steps)
        call.outcome = "ok"
        return [fake_image(item, batch.width, batch.height, init) for item, init in zip(batch.items, inits)]
