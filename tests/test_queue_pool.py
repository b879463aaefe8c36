"""GenerationQueue over several executors: concurrency, fairness, positions/ETAs, cancel, retries.

Executors here run on a virtual clock: each batch takes exactly ``speed x pixels x steps x images``
virtual seconds, so ETAs can be compared with what happened without timing anything.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections import Counter

import pytest

from generation.core.batch import Batch
from generation.core.errors import GenerationFailed
from generation.scheduling.job import Done, Failed, Started
from generation.scheduling.queue import GenerationQueue, Job
from generation.core.request import GenerationRequest, ModelCaps
from generation.scheduling.worker import Worker
from tests.fakes import FakePipeline

TIMEOUT = 5.0


def req(user: str, prompt: str | None = None, *, size: int = 256, steps: int = 4, count: int = 1) -> GenerationRequest:
    return GenerationRequest(prompt=prompt or f"{user} prompt", width=size, height=size, steps=steps,
                             count=count, seed=7, user_id=user, platform="discord")


class VirtualClock:
    """Time that moves only when the test says so; executors sleep on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep_until(self, when: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._seq), future))
        await future

    async def settle(self) -> None:
        for _ in range(60):
            await asyncio.sleep(0)

    async def run(self, until: float = float("inf")) -> None:
        """Advance from one wake-up to the next until nobody sleeps (or ``until``)."""
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= until:
            when = self._sleepers[0][0]
            self.now = when
            while self._sleepers and self._sleepers[0][0] == when:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await self.settle()
        self.now = max(self.now, until) if until != float("inf") else self.now


class ClockExecutor:
    """A BatchExecutor whose batches take ``speed`` virtual seconds per 256² image-step-quarter."""

    model_id = "fake"

    def __init__(self, name: str, speed: float, clock: VirtualClock, steps: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        self.name, self.speed, self.clock = name, speed, clock
        self.caps = ModelCaps(name="fake", base_resolution=256, steps=steps)
        self.calls: list[dict] = []
        self.fail: int = 0  # the next this-many batches raise after their first step

    def seconds(self, batch: Batch) -> float:
        return self.speed * batch.width * batch.height / 256**2 * batch.steps / 4 * len(batch.items)

    async def run(self, batch, on_step=None, time_limit=None):
        call = {"batch": batch, "start": self.clock.now, "outcome": "running", "steps": 0}
        self.calls.append(call)
        start, total = self.clock.now, self.seconds(batch)
        try:
            for i in range(1, batch.steps + 1):
                await self.clock.sleep_until(start + total * i / batch.steps)
                call["steps"] = i
                if on_step is not None:
                    on_step(i, batch.steps)
                if self.fail:
                    self.fail -= 1
                    call["outcome"] = "crashed"
                    raise RuntimeError(f"{self.name} fell over")
        except asyncio.CancelledError:
            call["outcome"] = "interrupted"
            raise
        call["outcome"], call["end"] = "ok", self.clock.now
        return [f"{self.name}:{item.prompt}:{item.seed}" for item in batch.items]


@pytest.fixture
async def pool():
    """Factory: a queue over ClockExecutors of the given speeds; closed afterwards."""
    made: list[GenerationQueue] = []
    clock = VirtualClock()

    def factory(speeds=(1.0, 2.0, 3.0), *, start: bool = True, steps=None, **kwargs):
        executors = [ClockExecutor(f"gpu{i}", s, clock, steps[i] if steps else (1, 2, 4, 8))
                     for i, s in enumerate(speeds)]
        queue = GenerationQueue(executors, clock=clock, **kwargs)
        if start:
            queue.start()
        made.append(queue)
        return clock, executors, queue

    yield factory
    for queue in made:
        closing = asyncio.ensure_future(queue.close(drain=False))
        await clock.run()
        await asyncio.wait_for(closing, TIMEOUT)


def finals(jobs: list[Job], clock: VirtualClock) -> dict[str, list]:
    """Record each job's events with the virtual time they arrived."""
    seen: dict[str, list] = {j.id: [] for j in jobs}
    for job in jobs:
        job.subscribe(lambda e, j=job: seen[j.id].append((clock.now, e)), replay=False)
    return seen


def learn_speeds(queue: GenerationQueue, executors: list[ClockExecutor]) -> None:
    shape = ("txt2img", 256, 256, 4)
    for i, executor in enumerate(executors):
        queue.record_timing(shape, 1, executor.speed, slot=i)


# -- concurrency and caps ------------------------------------------------------------------------


async def test_batches_run_at_the_same_time_on_every_executor(pool) -> None:
    clock, executors, queue = pool(max_batch_images=2)
    jobs = [queue.submit(req(u)) for u in "abcdef"]
    await clock.settle()
    assert [len(e.calls) for e in executors] == [1, 1, 1]
    assert all(e.calls[0]["start"] == 0.0 for e in executors)
    snap = queue.snapshot()
    assert snap.running_batches == 3 and snap.running_images == 6 and snap.executors == 3
    await clock.run()
    assert all(j.status == "done" for j in jobs)
    assert clock.now == pytest.approx(executors[2].seconds(executors[2].calls[0]["batch"]))


async def test_real_workers_run_concurrently_one_thread_each() -> None:
    pipes = [FakePipeline(), FakePipeline()]
    workers = [Worker(p, name=f"gpu-{i}") for i, p in enumerate(pipes)]
    for worker in workers:
        worker.start()
    queue = GenerationQueue(workers, max_batch_images=1)
    queue.start()
    for pipe in pipes:
        pipe.pause()
    a, b = queue.submit(req("a")), queue.submit(req("b"))
    # both pipelines are inside generate() at once, each on its own worker thread
    assert all([await asyncio.to_thread(p.wait_entered, TIMEOUT) for p in pipes])
    assert pipes[0].calls[0].thread is not pipes[1].calls[0].thread
    for pipe in pipes:
        pipe.resume()
    ra, rb = await asyncio.wait_for(asyncio.gather(a.result(), b.result()), TIMEOUT)
    assert {ra.metadata["executor"], rb.metadata["executor"]} == {"gpu-0", "gpu-1"}
    await queue.close()
    for worker in workers:
        await worker.close()


async def test_a_batch_goes_only_to_an_executor_that_has_its_steps(pool) -> None:
    clock, executors, queue = pool((1.0, 1.0), steps=[(4,), (4, 8)], max_batch_images=1)
    assert queue.caps.steps == (4, 8)
    eights = [queue.submit(req(u, steps=8)) for u in "abc"]
    fours = [queue.submit(req(u, steps=4)) for u in "de"]
    await clock.run()
    assert all(j.status == "done" for j in eights + fours)
    assert {c["batch"].steps for c in executors[0].calls} == {4}
    assert [c["batch"].steps for c in executors[1].calls].count(8) == 3


def test_executors_must_serve_one_model() -> None:
    clock = VirtualClock()
    other = ClockExecutor("b", 1.0, clock)
    other.model_id = "another"
    with pytest.raises(ValueError, match="one model"):
        GenerationQueue([ClockExecutor("a", 1.0, clock), other])


async def test_queued_image_cap_scales_with_executors_when_asked(pool) -> None:
    _, _, fixed = pool(start=False, max_queued_images=2, max_queued_per_user=8)
    _, _, scaled = pool(start=False, max_queued_images=2, max_queued_per_user=8, scale_max_queued=True)
    assert (fixed.max_queued_images, scaled.max_queued_images) == (2, 6)
    for user in "abcdef":
        scaled.submit(req(user))
    with pytest.raises(Exception, match="queue is full"):
        scaled.submit(req("g"))


# -- fairness, positions, ETAs -------------------------------------------------------------------


async def test_no_user_waits_behind_another_users_backlog(pool) -> None:
    clock, executors, queue = pool(start=False, max_batch_images=1, max_queued_per_user=10)
    heavy = [queue.submit(req("a", f"a{i}")) for i in range(9)]
    light = [queue.submit(req(u, f"{u}0")) for u in "bcd"]
    queue.start()
    await clock.run()
    starts = sorted((c["start"], c["batch"].items[0].prompt) for e in executors for c in e.calls)
    first_four = {prompt for _, prompt in starts[:4]}
    assert first_four == {"a0", "b0", "c0", "d0"}
    assert all(j.status == "done" for j in heavy + light)


async def test_positions_and_etas_match_what_happens(pool) -> None:
    rng = random.Random(11)
    clock, executors, queue = pool(start=False, max_batch_images=4, max_queued_images=200, max_queued_per_user=40)
    learn_speeds(queue, executors)
    jobs = []
    for i in range(30):
        user = rng.choice("abcde")
        jobs.append(queue.submit(req(user, f"{user}{i}", size=rng.choice((256, 512)), steps=rng.choice((2, 4)),
                                     count=rng.randint(1, 3)), priority=rng.random() < 0.2))
    predicted_order = [j.id for j in sorted(jobs, key=lambda j: j.position)]
    predicted_eta = {j.id: j.eta for j in jobs}
    seen = finals(jobs, clock)
    queue.start()
    await clock.run()
    assert all(j.status == "done" for j in jobs)
    by_prompt = {j.request.prompt: j.id for j in jobs}
    calls = sorted(((c["start"], n, c) for n, e in enumerate(executors) for c in e.calls), key=lambda t: t[:2])
    started = [by_prompt[p] for _, _, c in calls for p in dict.fromkeys(i.prompt for i in c["batch"].items)]
    assert started == predicted_order
    for job in jobs:
        done_at = next(t for t, e in seen[job.id] if isinstance(e, Done))
        assert done_at == pytest.approx(predicted_eta[job.id], rel=1e-9)
    assert max(len(e.calls) for e in executors) > min(len(e.calls) for e in executors)  # the fast one did more


async def test_eta_of_a_queued_job_counts_down_with_the_batch_ahead(pool) -> None:
    clock, executors, queue = pool((2.0,), max_batch_images=1)
    learn_speeds(queue, executors)
    first, second = queue.submit(req("a")), queue.submit(req("b"))
    await clock.settle()
    assert (first.eta, second.eta) == (pytest.approx(2.0), pytest.approx(4.0))
    await clock.run(until=1.0)
    assert (first.eta, second.eta) == (pytest.approx(1.0), pytest.approx(3.0))
    await clock.run()


# -- cancel --------------------------------------------------------------------------------------


async def test_cancelling_a_running_batch_leaves_the_other_executors_alone(pool) -> None:
    clock, executors, queue = pool((1.0, 1.0, 1.0), max_batch_images=1)
    a, b, c = (queue.submit(req(u, steps=8)) for u in "abc")
    await clock.run(until=0.5)
    victim = next(n for n, e in enumerate(executors) if e.calls[0]["batch"].items[0].prompt == "b prompt")
    assert b.cancel() is True
    d = queue.submit(req("d"))
    await clock.run()
    assert (a.status, b.status, c.status, d.status) == ("done", "cancelled", "done", "done")
    assert executors[victim].calls[0]["outcome"] == "interrupted"
    assert executors[victim].calls[0]["steps"] < 8
    assert [e.calls[0]["outcome"] for n, e in enumerate(executors) if n != victim] == ["ok", "ok"]
    assert (await d.result()).metadata["executor"] == f"gpu{victim}"  # the freed slot took new work


# -- executor failures ---------------------------------------------------------------------------


async def test_a_batch_whose_executor_fails_runs_once_more_elsewhere(pool) -> None:
    clock, executors, queue = pool((1.0, 1.0, 1.0), max_batch_images=2)
    executors[1].fail = 1
    jobs = [queue.submit(req(u)) for u in "abcdef"]
    seen = finals(jobs, clock)
    await clock.run()
    assert all(j.status == "done" for j in jobs)
    lost = executors[1].calls[0]
    assert lost["outcome"] == "crashed"
    retried = {item.prompt for item in lost["batch"].items}
    for job in jobs:
        events = [e for _, e in seen[job.id]]
        assert sum(e.final for e in events) == 1
        result = await job.result()
        if job.request.prompt in retried:
            assert result.metadata["attempt"] == 2 and result.metadata["executor"] != "gpu1"
            assert sum(isinstance(e, Started) for e in events) == 2  # started again on the retry
        else:
            assert result.metadata["attempt"] == 1 and sum(isinstance(e, Started) for e in events) == 1
    assert queue.snapshot().retries == 1 and queue.executors == 3
    # each image made exactly once by a batch that succeeded
    made = Counter(item.prompt for e in executors for c in e.calls if c["outcome"] == "ok" for item in c["batch"].items)
    assert made == Counter({j.request.prompt: 1 for j in jobs})


async def test_a_second_failure_fails_the_jobs_once_with_a_message(pool) -> None:
    clock, executors, queue = pool((1.0, 1.0), max_batch_images=2)
    for executor in executors:
        executor.fail = 1
    a, b = queue.submit(req("a")), queue.submit(req("b"))
    seen = finals([a, b], clock)
    await clock.run()
    for job in (a, b):
        finals_of = [e for _, e in seen[job.id] if e.final]
        assert len(finals_of) == 1 and isinstance(finals_of[0], Failed)
        assert isinstance(finals_of[0].error, GenerationFailed) and "refunded" in str(finals_of[0].error)
    assert [c["outcome"] for e in executors for c in e.calls] == ["crashed", "crashed"]
    nxt = queue.submit(req("c"))  # the executors are healthy again
    await clock.run()
    assert nxt.status == "done"


async def test_an_executor_that_keeps_failing_leaves_the_rotation(pool, caplog) -> None:
    clock, executors, queue = pool((1.0, 1.0), max_batch_images=1, max_queued_per_user=20,
                                   max_executor_failures=2, scale_max_queued=True, max_queued_images=10)
    executors[0].fail = 10**6
    jobs = [queue.submit(req("a", f"a{i}")) for i in range(6)]
    await clock.run()
    assert all(j.status == "done" for j in jobs)
    assert queue.executors == 1 and queue.max_queued_images == 10
    assert len(executors[0].calls) == 2 and "taken out of rotation" in caplog.text
    # the last executor never leaves, even when it fails too
    executors[1].fail = 10**6
    job = queue.submit(req("b"))
    await clock.run()
    assert job.status == "failed" and queue.executors == 1
