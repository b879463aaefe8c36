"""Composition root: config -> pipeline -> worker -> queue (front ends and storage plug in here)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from bot.config import Config
from generation.pipeline import load_pipeline
from generation.queue import GenerationQueue
from generation.worker import Worker

__all__ = ["engine"]

log = logging.getLogger(__name__)


@asynccontextmanager
async def engine(config: Config, *, model: str | None = None) -> AsyncIterator[GenerationQueue]:
    """Load the model, start the worker thread and the queue; drain and stop them on exit."""
    model_config = replace(config.model, name=model) if model else config.model
    pipeline = load_pipeline(model_config)
    log.info("model %s loaded (%s)", pipeline.model_id, ", ".join(map(str, pipeline.caps.steps)))
    worker = Worker(pipeline)
    worker.start()
    q = config.queue
    queue = GenerationQueue(
        worker,
        max_batch_images=q.max_batch_images,
        max_queued_images=q.max_queued_images,
        max_queued_per_user=q.max_queued_per_user,
        priority_burst=q.priority_burst,
        batch_time_limit=q.batch_time_limit_s,
    )
    queue.start()
    try:
        yield queue
    finally:
        await queue.close(drain=True)
        await worker.close()
