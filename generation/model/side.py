"""A small model beside the image model: its own thread, loaded on first use, a time limit per call.

The prompt refiner (:mod:`generation.prompts.refine`), the captioner of ``/describe``
(:mod:`generation.prompts.describe`) and the mask model of edits (:mod:`generation.model.segment`)
share this shape; each says how to build its model (``_build``) and what its calls do.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from generation.core.errors import GenerationFailed

__all__ = ["SideModel"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SideModel:
    """One model and its processor (or tokenizer) on one background thread, never the GPU worker's.

    Subclasses set ``what`` (for logs), ``key`` (the config key naming the model) and
    ``thread_name``, and implement :meth:`_build`; ``settings`` has ``device`` and ``timeout_s``.
    """

    what = "model"
    key = "model"
    thread_name = "side-model"

    def __init__(self, settings: Any, name: str | None, *, model: Any = None, processor: Any = None) -> None:
        self.settings = settings
        self.name = name  # the checkpoint (a Hub id, a folder, or "tiny"); None: not configured
        self._model, self._processor = model, processor
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)
        self._load_lock = threading.Lock()
        self.calls = 0  # model runs

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the model's thread; asyncio.TimeoutError past ``timeout_s``."""
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._thread, function, *args),
                                      timeout=self.settings.timeout_s)

    async def _answer(self, function: Callable[..., T], *args: Any, late: str, failed: str) -> T:
        """``function(*args)`` on the model's thread; GenerationFailed(``late``) past the time limit,
        GenerationFailed(``failed``) when the model raises (logged with its traceback)."""
        try:
            return await self._call(function, *args)
        except asyncio.TimeoutError:
            logger.warning("the %s took longer than %.1f s", self.what, self.settings.timeout_s)
            raise GenerationFailed(late) from None
        except Exception as err:
            logger.warning("the %s failed: %s", self.what, err, exc_info=True)
            raise GenerationFailed(failed) from None

    def warm(self) -> None:
        """Load the model now (blocking) instead of on the first request."""
        self._load()

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> tuple[Any, Any]:
        """The model and its processor, built once (on the model's thread, or by :meth:`warm`)."""
        with self._load_lock:
            if self._model is None:
                if self.name is None:
                    raise RuntimeError(f"{self.key} is not set")
                self._model, self._processor = self._build(self.name)
                logger.info("%s %s loaded on %s", self.what, self.name, self.settings.device)
            return self._model, self._processor

    def _build(self, name: str) -> tuple[Any, Any]:
        """The model named ``name`` and its processor (blocking)."""
        raise NotImplementedError
