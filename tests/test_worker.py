"""Worker: one thread owns the pipeline; progress on the loop; OOM split; time limit; close."""

from __future__ import annotations

import asyncio
import threading

import pytest
from PIL import Image

from generation.core.batch import Batch, BatchItem
from generation.core.errors import GenerationFailed
from generation.scheduling.worker import Worker, WorkerClosed
from tests.fakes import FakePipeline, fake_color

TIMEOUT = 5.0


def make_batch(n: int, *, steps: int = 4, size: int = 256, prompt: str = "a fox") -> Batch:
    items = tuple(BatchItem(f"{prompt} {i}", "", seed=100 + i) for i in range(n))
    return Batch("txt2img", size, size, steps, items)


@pytest.fixture
async def pipe_worker():
    pipe = FakePipeline()
    worker = Worker(pipe, name="test-gpu")
    worker.start()
    yield pipe, worker
    pipe.resume()
    await asyncio.wait_for(worker.close(), TIMEOUT)


async def test_runs_batch_on_its_own_thread_and_reports_progress_on_loop(pipe_worker) -> None:
    pipe, worker = pipe_worker
    steps: list[tuple[int, int, int]] = []
    timings: list[tuple[tuple[str, int, int, int], int, float]] = []
    worker.on_timing = lambda shape, n, s: timings.append((shape, n, s))
    outcomes = await asyncio.wait_for(
        worker.run(make_batch(3), on_step=lambda i, n: steps.append((i, n, threading.get_ident()))),
        TIMEOUT,
    )
    assert [o.getpixel((0, 0)) for o in outcomes] == [fake_color(f"a fox {i}", 100 + i) for i in range(3)]
    assert all(isinstance(o, Image.Image) for o in outcomes)
    assert pipe.calls[0].thread.name == "test-gpu"
    assert pipe.calls[0].thread.ident != threading.get_ident()
    assert [(i, n) for i, n, _ in steps] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {ident for _, _, ident in steps} == {threading.get_ident()}
    assert len(timings) == 1 and timings[0][:2] == (("txt2img", 256, 256, 4), 3)
    assert worker.caps.name == "fake" and worker.model_id == "fake"


async def test_oom_splits_down_until_it_fits(pipe_worker) -> None:
    pipe, worker = pipe_worker
    pipe.oom_above = 2
    timings: list[int] = []
    worker.on_timing = lambda shape, n, s: timings.append(n)
    outcomes = await asyncio.wait_for(worker.run(make_batch(8)), TIMEOUT)
    assert all(isinstance(o, Image.Image) for o in outcomes)
    assert [o.info["seed"] for o in outcomes] == list(range(100, 108))
    assert pipe.call_sizes == [8, 4, 2, 2, 4, 2, 2]
    assert [c.outcome for c in pipe.calls] == ["oom", "oom", "ok", "ok", "oom", "ok", "ok"]
    assert timings == [2, 2, 2, 2]


async def test_odd_batch_splits_unevenly(pipe_worker) -> None:
    pipe, worker = pipe_worker
    pipe.oom_above = 1
    outcomes = await asyncio.wait_for(worker.run(make_batch(3)), TIMEOUT)
    assert all(isinstance(o, Image.Image) for o in outcomes)
    assert pipe.call_sizes == [3, 2, 1, 1, 1]


async def test_oom_at_one_image_fails_each_item_with_clear_message(pipe_worker) -> None:
    pipe, worker = pipe_worker
    pipe.oom_above = 0
    outcomes = await asyncio.wait_for(worker.run(make_batch(2, size=512)), TIMEOUT)
    assert pipe.call_sizes == [2, 1, 1]
    assert all(isinstance(o, GenerationFailed) for o in outcomes)
    assert "Not enough GPU memory for one 512x512 image" in str(outcomes[0])
    # the worker is still healthy for work that fits
    pipe.oom_above = None
    outcomes = await asyncio.wait_for(worker.run(make_batch(2)), TIMEOUT)
    assert all(isinstance(o, Image.Image) for o in outcomes)


async def test_pipeline_error_fails_items_without_leaking_internals(pipe_worker, caplog) -> None:
    pipe, worker = pipe_worker
    pipe.fail_prompt = "boom"
    outcomes = await asyncio.wait_for(worker.run(make_batch(2, prompt="boom")), TIMEOUT)
    assert all(isinstance(o, GenerationFailed) for o in outcomes)
    assert "0x" not in str(outcomes[0]) and "internal error" in str(outcomes[0])
    assert any("pipeline failed" in r.message and r.exc_info for r in caplog.records)
    outcomes = await asyncio.wait_for(worker.run(make_batch(1)), TIMEOUT)
    assert isinstance(outcomes[0], Image.Image)


async def test_time_limit_stops_at_a_step_boundary(pipe_worker) -> None:
    pipe, worker = pipe_worker
    pipe.step_seconds = 0.05
    outcomes = await asyncio.wait_for(worker.run(make_batch(2, steps=8), time_limit=0.12), TIMEOUT)
    assert all(isinstance(o, GenerationFailed) for o in outcomes)
    assert "longer than the 0.12 s limit" in str(outcomes[0])
    call = pipe.calls[0]
    assert call.outcome == "interrupted" and 1 <= call.steps_run < 8


async def test_cancelling_run_interrupts_at_next_step_and_waits_for_it(pipe_worker) -> None:
    pipe, worker = pipe_worker
    pipe.pause()
    steps: list[int] = []
    task = asyncio.create_task(worker.run(make_batch(1, steps=8), on_step=lambda i, n: steps.append(i)))
    assert await asyncio.to_thread(pipe.wait_entered)
    task.cancel()
    await asyncio.sleep(0.02)
    assert not task.done()  # still waiting for the step boundary
    pipe.resume()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert pipe.calls[0].outcome == "interrupted" and pipe.calls[0].steps_run == 0
    outcomes = await asyncio.wait_for(worker.run(make_batch(1)), TIMEOUT)
    assert isinstance(outcomes[0], Image.Image)


async def test_close_finishes_running_batch_and_refuses_new_work() -> None:
    pipe = FakePipeline()
    worker = Worker(pipe)
    worker.start()
    pipe.pause()
    running = asyncio.create_task(worker.run(make_batch(2)))
    assert await asyncio.to_thread(pipe.wait_entered)
    closing = asyncio.create_task(worker.close())
    await asyncio.sleep(0.02)
    assert not closing.done()
    with pytest.raises(WorkerClosed, match="shutting down"):
        await worker.run(make_batch(1))
    pipe.resume()
    outcomes = await asyncio.wait_for(running, TIMEOUT)
    assert all(isinstance(o, Image.Image) for o in outcomes)
    await asyncio.wait_for(closing, TIMEOUT)
    thread = pipe.calls[0].thread
    assert not thread.is_alive()
    await worker.close()  # idempotent


async def test_run_before_start_is_a_programming_error() -> None:
    worker = Worker(FakePipeline())
    with pytest.raises(RuntimeError, match="start"):
        await worker.run(make_batch(1))


async def test_async_context_manager() -> None:
    async with Worker(FakePipeline()) as worker:
        outcomes = await asyncio.wait_for(worker.run(make_batch(1)), TIMEOUT)
    assert isinstance(outcomes[0], Image.Image)
    assert worker.thread is None
