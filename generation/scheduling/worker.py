"""The one thread that owns the image pipeline; the asyncio side talks to it through futures.

Shape borrowed from aiosqlite's ``core.py``: :meth:`Worker.run` puts ``(future, function)`` on a
``queue.Queue``; the worker thread runs the function and resolves the asyncio future with
``loop.call_soon_threadsafe``. Only that thread ever calls the pipeline, so CUDA state and the
diffusers pipeline object are never touched from two threads.

What happens to one batch on the thread:

1. ``pipeline.generate(batch, on_step, should_stop)``; ``should_stop`` is true once the caller
   cancelled :meth:`Worker.run` (the queue's "interrupt this batch") or once ``time_limit``
   seconds have passed since the batch started, so the pipeline stops at a step boundary.
2. Items the pipeline rejects up front (:class:`~generation.core.batch.ItemsRejected`, e.g. an
   img2img source image that was deleted) fail with its message; the rest run without them.
3. Out of memory (``torch.OutOfMemoryError``): free the CUDA cache, split the batch in halves
   and retry each half, recursively down to one image; an image that still does not fit
   becomes :class:`~generation.core.errors.GenerationFailed` with a message for the user.
4. Any other pipeline error is logged with its traceback; the items of that (sub-)batch become
   ``GenerationFailed`` with a short message that leaks no internals.

Before the first batch the thread calls the pipeline's ``warm_up()`` when it has one (compiling
the configured shapes; CUDA graphs belong to the thread that captured them), so the first
batch waits for it instead of a user paying for compilation in the middle of the queue.

Progress (``on_step``, with the live previews of the steps that have them) and timings
(``on_timing``) are delivered on the event loop thread; a preview names its item's place in the
batch the caller handed over, also after a split or without rejected items.
Cancelling the ``run()`` awaitable interrupts the batch and waits for the thread to reach the
step boundary before the cancellation propagates, so the GPU is free when it does.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable

import torch

from generation.core.batch import (
    Batch,
    BatchInterrupted,
    ImagePipeline,
    ItemOutcome,
    ItemsRejected,
    Shape,
    StepCallback,
)
from generation.core.errors import GenerationFailed

if TYPE_CHECKING:
    from generation.core.catalogue import Catalogue
    from generation.core.request import ModelCaps

__all__ = ["TimingCallback", "Worker", "WorkerClosed"]

logger = logging.getLogger(__name__)

TimingCallback = Callable[[Shape, int, float], None]
"""Called with (shape, n_images, seconds) after each successful pipeline call."""

_INTERNAL_ERROR = "Image generation failed because of an internal error; it has been logged."


class WorkerClosed(GenerationFailed):
    """The worker is shutting down and takes no new batches."""


class Worker:
    """Runs batches on one dedicated thread that owns the pipeline (a ``BatchExecutor``)."""

    def __init__(
        self,
        pipeline: ImagePipeline,
        *,
        name: str = "gpu-worker",
        on_timing: TimingCallback | None = None,
    ) -> None:
        self._pipeline = pipeline
        self.name = name
        self.on_timing = on_timing
        self._tx: queue.Queue[tuple[asyncio.Future[Any], Callable[[], Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def caps(self) -> ModelCaps:
        return self._pipeline.caps

    @property
    def model_id(self) -> str:
        return self._pipeline.model_id

    # -- several models (issue 25): what the pipeline says when it is a ModelShelf ----------------

    @property
    def catalogue(self) -> Catalogue | None:
        """The models this worker serves (None: one model, the pipeline's)."""
        return getattr(self._pipeline, "catalogue", None)

    @property
    def checkpoint_hash(self) -> str | None:
        return getattr(self._pipeline, "checkpoint_hash", None)

    def model_id_for(self, name: str) -> str:
        find = getattr(self._pipeline, "model_id_for", None)
        return find(name) if callable(find) else self.model_id

    def checkpoint_hash_for(self, name: str) -> str | None:
        find = getattr(self._pipeline, "checkpoint_hash_for", None)
        return find(name) if callable(find) else self.checkpoint_hash

    def caps_for(self, name: str) -> ModelCaps | None:
        """The caps of model ``name`` ("" = the default); None when this worker lacks it."""
        if not name:
            return self.caps
        catalogue = self.catalogue
        if catalogue is None or name not in catalogue:
            return None
        return self._pipeline.caps_for(name)  # type: ignore[attr-defined]

    def resident(self) -> tuple[str, ...]:
        find = getattr(self._pipeline, "resident", None)
        return tuple(find()) if callable(find) else ()

    def plan_switch(self, name: str, resident: tuple[str, ...]) -> tuple[float, tuple[str, ...]]:
        """(seconds, resident after) of a batch of model ``name``: 0 for a one-model worker."""
        plan = getattr(self._pipeline, "plan_switch", None)
        return plan(name, resident) if callable(plan) else (0.0, resident)

    @property
    def thread(self) -> threading.Thread | None:
        """The worker thread once started (tests and diagnostics)."""
        return self._thread

    # -- lifetime ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        if self._closed:
            raise WorkerClosed("The image worker has been shut down and cannot be restarted.")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()

    async def close(self) -> None:
        """Finish the work already handed over, refuse new work, and join the thread."""
        if self._closed and self._thread is None:
            return
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._tx.put(None)
            await asyncio.to_thread(thread.join)

    async def __aenter__(self) -> Worker:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the asyncio side ----------------------------------------------------------------------

    async def run(
        self, batch: Batch, on_step: StepCallback | None = None, time_limit: float | None = None
    ) -> list[ItemOutcome]:
        """One outcome per item of ``batch``: an image, or the GenerationFailed it ended with."""
        if self._closed:
            raise WorkerClosed("The image worker is shutting down and takes no new images.")
        if self._thread is None:
            raise RuntimeError("Worker.start() must be called before run()")
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def step(i: int, n: int, previews: dict[int, Any] | None = None) -> None:
            if on_step is not None:
                _call_soon(loop, on_step, i, n, *([previews] if previews else []))

        def timing(shape: Shape, n_images: int, seconds: float) -> None:
            callback = self.on_timing
            if callback is not None:
                _call_soon(loop, callback, shape, n_images, seconds)

        def job() -> list[ItemOutcome]:
            deadline = None if time_limit is None else time.monotonic() + time_limit

            def should_stop() -> bool:
                return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

            return self._run_batch(batch, step, should_stop, stop, time_limit, timing)

        future: asyncio.Future[list[ItemOutcome]] = loop.create_future()
        self._tx.put((future, job))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # Interrupt at the next step boundary and wait until the GPU is free again.
            stop.set()
            try:
                await future
            except Exception:  # the outcome of an interrupted batch is of no interest
                pass
            raise

    async def call(self, function: Callable[[], Any]) -> Any:
        """``function()`` run on the worker thread, in turn with the batches (benchmarks, checks).

        Code timed against the batches should run here: on CPU, torch's OpenMP runtime (libgomp)
        gives each thread that runs torch its own team of helper threads and, while more than one
        team exists, stops spin-waiting between parallel regions for the whole process, so code
        timed on another thread may run in a different regime (docs/benchmarks.md).
        """
        if self._closed:
            raise WorkerClosed("The image worker is shutting down and takes no new work.")
        if self._thread is None:
            raise RuntimeError("Worker.start() must be called before call()")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._tx.put((future, function))
        return await future

    # -- the worker thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        """Thread body: warm the pipeline up, then run functions from the queue until the sentinel."""
        warm_up = getattr(self._pipeline, "warm_up", None)
        if callable(warm_up):
            try:
                warm_up()
            except Exception:  # the batches will fail and say so; the bot keeps running
                logger.exception("pipeline warm-up failed")
        while True:
            item = self._tx.get()
            if item is None:
                return
            future, function = item
            try:
                result = function()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                _call_soon(future.get_loop(), _set_exception, future, exc)
            else:
                _call_soon(future.get_loop(), _set_result, future, result)

    def _run_batch(
        self,
        batch: Batch,
        on_step: StepCallback,
        should_stop: Callable[[], bool],
        stop: threading.Event,
        time_limit: float | None,
        timing: TimingCallback,
    ) -> list[ItemOutcome]:
        """Generate ``batch``, halving it on out-of-memory; runs on the worker thread."""
        started = time.perf_counter()
        try:
            images = self._pipeline.generate(batch, on_step, should_stop)
        except torch.OutOfMemoryError:
            pass  # free memory below, once the exception's frames are gone
        except ItemsRejected as err:
            return self._run_without(batch, err.errors, on_step, should_stop, stop, time_limit, timing)
        except BatchInterrupted:
            if stop.is_set():
                raise
            if time_limit is None:
                logger.error("pipeline interrupted a batch of %d without being asked", len(batch.items))
                return _failed(batch, _INTERNAL_ERROR)
            return _failed(
                batch,
                f"Generation took longer than the {time_limit:g} s limit and was stopped; "
                "try fewer images or fewer steps.",
            )
        except Exception:
            logger.exception(
                "pipeline failed on a batch of %d %dx%d images (%d steps)",
                len(batch.items), batch.width, batch.height, batch.steps,
            )
            return _failed(batch, _INTERNAL_ERROR)
        else:
            if len(images) != len(batch.items):
                logger.error("pipeline returned %d images for %d items", len(images), len(batch.items))
                return _failed(batch, _INTERNAL_ERROR)
            timing(batch.shape, len(batch.items), time.perf_counter() - started)
            return list(images)

        _free_gpu_memory()  # only an out-of-memory error gets here (the others returned above)
        if len(batch.items) == 1:
            logger.warning("out of memory on a single %dx%d image", batch.width, batch.height)
            return _failed(
                batch,
                f"Not enough GPU memory for one {batch.width}x{batch.height} image right now; "
                "try a smaller aspect ratio or try again later.",
            )
        first, second = batch.split()
        logger.info("out of memory on %d images; retrying as %d + %d",
                    len(batch.items), len(first.items), len(second.items))
        outcomes = self._run_batch(first, on_step, should_stop, stop, time_limit, timing)
        later = _mapped(on_step, range(len(first.items), len(batch.items)))  # previews name the whole batch's items
        return outcomes + self._run_batch(second, later, should_stop, stop, time_limit, timing)

    def _run_without(
        self,
        batch: Batch,
        rejected: dict[int, GenerationFailed],
        on_step: StepCallback,
        should_stop: Callable[[], bool],
        stop: threading.Event,
        time_limit: float | None,
        timing: TimingCallback,
    ) -> list[ItemOutcome]:
        """Fail the items the pipeline rejected and run the rest of ``batch`` without them."""
        if not rejected or not all(0 <= i < len(batch.items) for i in rejected):
            logger.error("pipeline rejected items %s of a batch of %d", sorted(rejected), len(batch.items))
            return _failed(batch, _INTERNAL_ERROR)
        logger.info("pipeline rejected %d of %d items: %s", len(rejected), len(batch.items),
                    "; ".join(map(str, rejected.values())))
        outcomes: list[ItemOutcome | None] = [rejected.get(i) for i in range(len(batch.items))]
        keep = [i for i in range(len(batch.items)) if i not in rejected]
        if keep:
            rest = self._run_batch(batch.subset(keep), _mapped(on_step, keep), should_stop, stop, time_limit, timing)
            for i, outcome in zip(keep, rest):
                outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]


def _mapped(on_step: StepCallback, positions: Sequence[int]) -> StepCallback:
    """``on_step`` for a part of a batch: its previews' item ``k`` is the batch's ``positions[k]``."""

    def step(i: int, n: int, previews: dict[int, Any] | None = None) -> None:
        if previews:
            on_step(i, n, {positions[k]: image for k, image in previews.items()})
        else:
            on_step(i, n)

    return step


def _failed(batch: Batch, message: str) -> list[ItemOutcome]:
    return [GenerationFailed(message) for _ in batch.items]


def _free_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> None:
    """Schedule ``callback`` on ``loop`` from any thread; a closed loop means nobody is waiting."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        logger.debug("event loop closed; dropped %r", callback)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
