"""Test wiring for the service: real SQLite, real queue and worker, the tiny pipeline or a fake."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from bot.safety import AllowAllImages, BlocklistChecker, ImageChecker, PromptChecker
from bot.service import ImagineService, ServiceSettings, Who
from generation.core.batch import Batch, ImagePipeline, StepCallback
from generation.scheduling.queue import GenerationQueue
from generation.scheduling.worker import Worker
from storage import Database, ImageStore

__all__ = ["ADA", "BOB", "ROOT", "Clock", "CountingPipeline", "Env", "T0", "service_env"]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
ADA = Who("telegram", "1001", "ada")
BOB = Who("discord", "2002", "bob")
ROOT = Who("console", "root", "root")
TIMEOUT = 30.0


class Clock:
    """A settable clock for the service (quota windows, timestamps)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class CountingPipeline:
    """Wraps an ImagePipeline and counts its generate() calls and images."""

    def __init__(self, inner: ImagePipeline) -> None:
        self.inner = inner
        self.calls = 0
        self.images = 0
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    @property
    def caps(self) -> Any:
        return self.inner.caps

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def __getattr__(self, name: str) -> Any:  # a ModelShelf's catalogue, caps_for, plan_switch, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def generate(self, batch: Batch, on_step: StepCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[Any]:
        with self._lock:
            self.calls += 1
            self.images += len(batch.items)
            self.prompts.extend(item.prompt for item in batch.items)
        return self.inner.generate(batch, on_step, should_stop)


@dataclass
class Env:
    """One wired service and its parts."""

    service: ImagineService
    db: Database
    store: ImageStore
    queue: GenerationQueue
    worker: Worker
    pipeline: Any
    clock: Clock
    root: Path


@asynccontextmanager
async def service_env(
    root: Path,
    pipeline: ImagePipeline,
    *,
    start_queue: bool = True,
    clock: Clock | None = None,
    prompt_checker: PromptChecker | None = None,
    image_checker: ImageChecker | None = None,
    queue_options: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[Env]:
    """A service on ``root/bot.db`` and ``root/images``; shuts everything down afterwards."""
    counting = pipeline if isinstance(pipeline, CountingPipeline) else CountingPipeline(pipeline)
    clock = clock or Clock()
    settings.setdefault("data_dir", root / "data")
    settings.setdefault("admins", frozenset({ROOT.key}))
    db = await Database.open(root / "bot.db")
    store = ImageStore(root / "images")
    worker = Worker(counting, name="test-gpu")
    queue = GenerationQueue(worker, **(queue_options or {}))
    if start_queue:
        worker.start()
        queue.start()
    service = ImagineService(
        db, store, queue, settings=ServiceSettings(**settings),
        prompt_checker=prompt_checker or BlocklistChecker.default(),
        image_checker=image_checker or AllowAllImages(), clock=clock,
    )
    try:
        yield Env(service, db, store, queue, worker, counting, clock, root)
    finally:
        if start_queue:
            await queue.close(drain=False)
        await service.close()
        await worker.close()
        await db.close()
