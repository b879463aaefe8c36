"""GenerationQueue: batching, fairness, priority lane, positions/ETA, caps, cancel, shutdown."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generation.core.batch import Batch
from generation.core.errors import GenerationFailed, InvalidRequest, JobCancelled, QueueFull
from generation.scheduling.queue import (
    Cancelled,
    Done,
    Failed,
    GenerationQueue,
    Job,
    Queued,
    ShuttingDown,
    Started,
    TimeEstimator,
)
from generation.core.request import GenerationRequest, ModelCaps
from generation.scheduling.worker import Worker
from tests.fakes import FakePipeline, fake_color

TIMEOUT = 5.0
SHAPE_256 = ("txt2img", 256, 256, 4)


def req(user: str = "a", prompt: str | None = None, *, size: int = 256, steps: int = 4,
        count: int = 1, seed: int | None = 7) -> GenerationRequest:
    return GenerationRequest(prompt=prompt or f"{user} prompt", width=size, height=size, steps=steps,
                             count=count, seed=seed, user_id=user, platform="discord")


@pytest.fixture
async def make():
    """Factory for (pipe, queue) around a real Worker; everything is closed afterwards."""
    made: list[tuple[FakePipeline, Worker, GenerationQueue]] = []

    def factory(*, start: bool = True, **kwargs) -> tuple[FakePipeline, GenerationQueue]:
        pipe = FakePipeline()
        worker = Worker(pipe)
        worker.start()
        queue = GenerationQueue(worker, **kwargs)
        if start:
            queue.start()
        made.append((pipe, worker, queue))
        return pipe, queue

    yield factory
    for pipe, worker, queue in made:
        pipe.resume()
        await asyncio.wait_for(queue.close(drain=False), TIMEOUT)
        await asyncio.wait_for(worker.close(), TIMEOUT)


async def results(*jobs: Job) -> list:
    return await asyncio.wait_for(asyncio.gather(*(j.result() for j in jobs), return_exceptions=True), TIMEOUT)


def run_order(pipe: FakePipeline) -> list[str]:
    return [p for call in pipe.calls if call.outcome == "ok" for p in call.prompts]


async def entered(pipe: FakePipeline) -> None:
    assert await asyncio.to_thread(pipe.wait_entered, TIMEOUT)


# -- batching ------------------------------------------------------------------------------------


async def test_compatible_requests_share_one_call_and_results_are_in_seed_order(make) -> None:
    pipe, queue = make()
    jobs = [queue.submit(req(u, count=1 if u != "d" else 2, seed=10 * i)) for i, u in enumerate("abcd")]
    done = await results(*jobs)
    assert pipe.call_sizes == [5]
    for job, result in zip(jobs, done):
        assert job.status == "done" and job.position == 0 and job.eta == 0.0
        assert result.seeds == job.request.seeds and result.model == "fake"
        assert [im.info["seed"] for im in result.images] == list(job.request.seeds)
        assert [im.getpixel((0, 0)) for im in result.images] == [
            fake_color(job.request.prompt, s) for s in job.request.seeds]
        assert result.metadata["batch_size"] == 5 and result.seconds > 0


async def test_submit_resolves_missing_seed(make) -> None:
    _, queue = make(start=False)
    assert queue.caps.name == "fake" and queue.model_id == "fake"
    job = queue.submit(req("a", seed=None))
    assert job.request.seed is not None and len(job.request.seeds) == 1


async def test_incompatible_shapes_run_in_separate_batches(make) -> None:
    pipe, queue = make()
    jobs = [queue.submit(req("a", size=256)), queue.submit(req("b", size=512)),
            queue.submit(req("c", size=256, steps=2)), queue.submit(req("d", size=256))]
    await results(*jobs)
    assert all(j.status == "done" for j in jobs)
    shapes = [call.batch.shape for call in pipe.calls]
    assert sorted(shapes) == sorted({("txt2img", 256, 256, 4), ("txt2img", 512, 512, 4), ("txt2img", 256, 256, 2)})
    assert pipe.call_sizes[shapes.index(SHAPE_256)] == 2


async def test_image_budget_respected_and_jobs_never_split(make) -> None:
    pipe, queue = make(max_batch_images=4)
    jobs = [queue.submit(req(u, count=c)) for u, c in [("a", 2), ("b", 3), ("c", 2), ("d", 1)]]
    await results(*jobs)
    assert all(size <= 4 for size in pipe.call_sizes) and sum(pipe.call_sizes) == 8
    # a:2 leads; b:3 does not fit (b is done for this batch); c:2 fits; then b:3 + d:1
    assert [call.prompts for call in pipe.calls] == [
        ["a prompt"] * 2 + ["c prompt"] * 2, ["b prompt"] * 3 + ["d prompt"]]


async def test_request_larger_than_a_batch_is_refused(make) -> None:
    _, queue = make(start=False, max_batch_images=2)
    with pytest.raises(InvalidRequest, match="at most 2 images"):
        queue.submit(req("a", count=3))


# -- fairness ------------------------------------------------------------------------------------


async def test_heavy_user_does_not_fill_the_batch_when_others_wait(make) -> None:
    pipe, queue = make(start=False, max_batch_images=2, max_queued_per_user=10)
    a_jobs = [queue.submit(req("a", f"a{i}")) for i in range(10)]
    b, c = queue.submit(req("b", "b0")), queue.submit(req("c", "c0"))
    expected = ["a0", "b0", "c0", "a1"] + [f"a{i}" for i in range(2, 10)]
    by_position = sorted(a_jobs + [b, c], key=lambda j: j.position)
    assert [j.request.prompt for j in by_position] == expected
    assert [j.position for j in by_position] == list(range(1, 13))
    queue.start()
    await results(*a_jobs, b, c)
    assert [call.prompts for call in pipe.calls][:2] == [["a0", "b0"], ["c0", "a1"]]
    assert run_order(pipe) == expected


async def test_late_arrivals_join_the_next_batch(make) -> None:
    pipe, queue = make(max_queued_per_user=16)
    pipe.pause()
    a_jobs = [queue.submit(req("a", f"a{i}")) for i in range(12)]
    await entered(pipe)  # a0..a7 are running: A was alone
    b, c = queue.submit(req("b", "b0")), queue.submit(req("c", "c0"))
    assert (b.position, c.position) == (1, 2)
    pipe.resume()
    await results(*a_jobs, b, c)
    assert [call.prompts for call in pipe.calls] == [
        [f"a{i}" for i in range(8)], ["b0", "c0", "a8", "a9", "a10", "a11"]]


# -- priority lane -------------------------------------------------------------------------------


async def test_priority_lane_goes_first_but_cannot_starve_normal_work(make) -> None:
    pipe, queue = make(start=False, max_batch_images=1, priority_burst=2, max_queued_per_user=8)
    normal = [queue.submit(req("n", f"n{i}")) for i in range(4)]
    prio = [queue.submit(req("p", f"p{i}"), priority=True) for i in range(6)]
    expected = ["p0", "p1", "n0", "p2", "p3", "n1", "p4", "p5", "n2", "n3"]
    assert [j.request.prompt for j in sorted(normal + prio, key=lambda j: j.position)] == expected
    queue.start()
    await results(*normal, *prio)
    assert run_order(pipe) == expected


async def test_priority_batch_fills_spare_room_with_normal_work(make) -> None:
    pipe, queue = make(start=False, max_batch_images=4)
    n = queue.submit(req("n", "n0"))
    p = queue.submit(req("p", "p0", count=2), priority=True)
    other = queue.submit(req("m", "m0", size=512))
    assert (p.position, n.position, other.position) == (1, 2, 3)
    queue.start()
    await results(n, p, other)
    assert [call.prompts for call in pipe.calls] == [["p0", "p0", "n0"], ["m0"]]


# -- positions, events, ETA ----------------------------------------------------------------------


async def test_positions_exactly_match_the_run_order(make) -> None:
    rng = random.Random(1234)
    pipe, queue = make(start=False, max_batch_images=5, max_queued_images=200, max_queued_per_user=40)
    jobs = []
    for i in range(40):
        user = rng.choice("abcde")
        jobs.append(queue.submit(
            req(user, f"{user}{i}", size=rng.choice((256, 512)), steps=rng.choice((2, 4)),
                count=rng.randint(1, 3)),
            priority=rng.random() < 0.2))
    predicted = [j.request.prompt for j in sorted(jobs, key=lambda j: j.position)]
    assert sorted(j.position for j in jobs) == list(range(1, 41))
    assert queue.snapshot().order == tuple(j.id for j in sorted(jobs, key=lambda j: j.position))
    queue.start()
    await results(*jobs)
    actual = []
    for prompt in run_order(pipe):
        if not actual or actual[-1] != prompt:
            actual.append(prompt)
    assert actual == predicted
    assert all(size <= 5 for size in pipe.call_sizes)


async def test_events_report_position_changes_then_progress_then_done(make) -> None:
    pipe, queue = make()
    pipe.pause()
    first = queue.submit(req("x", "x0"))
    await entered(pipe)
    y = queue.submit(req("y", "y0", size=512))
    z = queue.submit(req("z", "z0", size=384))
    assert (first.position, y.position, z.position) == (0, 1, 2)
    assert first.status == "running" and y.status == "queued"
    seen: list = []
    collector = asyncio.create_task(_collect(z, seen))
    await asyncio.sleep(0)
    pipe.resume()
    await asyncio.wait_for(collector, TIMEOUT)
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ["Queued", "Queued", "Started", "Step", "Step", "Step", "Step", "Done"]
    assert [e.position for e in seen[:2]] == [2, 1]
    assert seen[2] == Started(batch_size=1, batch_jobs=1, eta=seen[2].eta)
    assert [(e.step, e.steps) for e in seen[3:7]] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert seen[-1].result.request.prompt == "z0"
    # a late subscriber gets the final event only, and the iterator ends
    assert [e async for e in z.events()] == [seen[-1]]


async def _collect(job: Job, into: list) -> None:
    async for event in job.events():
        into.append(event)


async def test_subscribe_callback_api(make) -> None:
    pipe, queue = make(start=False)
    job = queue.submit(req("a"))
    events: list = []
    unsubscribe = job.subscribe(events.append)
    assert events == [Queued(1, job.eta)]
    queue.start()
    await results(job)
    assert isinstance(events[-1], Done) and sum(e.final for e in events) == 1
    unsubscribe()


async def test_eta_is_positive_and_decreases_as_work_completes(make) -> None:
    estimator = TimeEstimator(alpha=0.0)  # keeps the seeded 0.2 s/image: no load-dependent drift
    estimator.observe(SHAPE_256, 1, 0.2)
    pipe, queue = make(start=False, max_batch_images=1, estimator=estimator)
    pipe.step_seconds = 0.05
    jobs = [queue.submit(req(u)) for u in "abc"]
    last = jobs[-1]
    eta0 = last.eta
    assert eta0 == pytest.approx(0.6, rel=0.01)
    assert jobs[0].eta < jobs[1].eta < eta0
    queue.start()
    await asyncio.sleep(0.1)
    eta1 = last.eta
    assert 0 < eta1 < eta0
    await results(jobs[0])
    eta2 = last.eta
    assert 0 < eta2 < eta1
    await results(*jobs)
    assert last.eta == 0.0
    assert queue.snapshot().seconds_per_image == {SHAPE_256: pytest.approx(0.2)}


async def test_queue_learns_seconds_per_image_from_batches_it_runs(make) -> None:
    pipe, queue = make(max_batch_images=2)
    pipe.step_seconds = 0.01
    await results(queue.submit(req("a")), queue.submit(req("b")))
    assert 0.01 < queue.snapshot().seconds_per_image[SHAPE_256] < 1.0


# -- back-pressure -------------------------------------------------------------------------------


async def test_per_user_and_global_caps_with_clear_messages(make) -> None:
    _, queue = make(start=False, max_queued_images=5, max_queued_per_user=3)
    queue.submit(req("a", count=2))
    with pytest.raises(QueueFull, match=r"^You already have 2 images queued \(limit 3\); wait for them or /cancel one\.$"):
        queue.submit(req("a", count=2))
    queue.submit(req("a", count=1))
    queue.submit(req("b", count=2))
    with pytest.raises(QueueFull, match=r"^The queue is full \(5 images waiting\); try again in a minute\.$"):
        queue.submit(req("c"))
    with pytest.raises(InvalidRequest, match="at most 3 images at once"):
        queue.submit(req("d", count=4))
    queue.submit(req("c"), priority=True)  # admins and re-enqueued jobs skip the caps
    snap = queue.snapshot()
    assert snap.queued_images == 6 and snap.per_user == {"discord:a": 3, "discord:b": 2, "discord:c": 1}


# -- cancel --------------------------------------------------------------------------------------


async def test_cancel_queued_removes_it_and_shifts_others(make) -> None:
    pipe, queue = make(start=False, max_batch_images=1, max_queued_per_user=1)
    a, b, c = queue.submit(req("a")), queue.submit(req("b")), queue.submit(req("c"))
    c_events: list = []
    c.subscribe(c_events.append)
    assert b.cancel() is True and b.cancel() is False
    assert b.status == "cancelled" and (a.position, b.position, c.position) == (1, 0, 2)
    assert c_events == [Queued(3, c_events[0].eta), Queued(2, c_events[1].eta)]
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(b.result(), TIMEOUT)
    assert [e async for e in b.events()] == [Cancelled("user")]
    b2 = queue.submit(req("b"))  # the cancelled images no longer count against b's cap
    queue.start()
    await results(a, c, b2)
    assert len(pipe.calls) == 3 and queue.job(b.id) is None


async def test_cancel_running_alone_interrupts_at_a_step_boundary(make) -> None:
    pipe, queue = make()
    pipe.pause()
    job = queue.submit(req("a", steps=8))
    await entered(pipe)
    assert job.status == "running"
    assert job.cancel() is True
    assert job.status == "cancelled"
    nxt = queue.submit(req("b"))
    await asyncio.sleep(0.02)  # the interrupt reaches the worker thread via the loop
    pipe.resume()
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(job.result(), TIMEOUT)
    (result,) = await results(nxt)
    assert result.images
    assert pipe.calls[0].outcome == "interrupted" and pipe.calls[0].steps_run == 0


async def test_cancel_running_shared_lets_others_finish(make) -> None:
    pipe, queue = make()
    pipe.pause()
    a, b = queue.submit(req("a", "a0")), queue.submit(req("b", "b0", count=2))
    await entered(pipe)
    assert a.cancel() is True
    pipe.resume()
    ra, rb = await results(a, b)
    assert isinstance(ra, JobCancelled)
    assert len(rb.images) == 2 and b.status == "done"
    assert pipe.calls[0].outcome == "ok" and pipe.calls[0].prompts == ["a0", "b0", "b0"]
    assert queue.job(a.id) is None and queue.job(b.id) is None


async def test_cancel_finished_job_is_false(make) -> None:
    _, queue = make()
    job = queue.submit(req("a"))
    await results(job)
    assert job.cancel() is False and job.status == "done"


# -- failures ------------------------------------------------------------------------------------


async def test_failing_job_does_not_affect_other_batches(make) -> None:
    pipe, queue = make()
    pipe.fail_prompt = "boom"
    bad = queue.submit(req("a", "boom", size=512))
    good = queue.submit(req("b", "fine"))
    rbad, rgood = await results(bad, good)
    assert isinstance(rbad, GenerationFailed) and "internal error" in str(rbad)
    assert bad.status == "failed" and good.status == "done" and len(rgood.images) == 1
    assert [e async for e in bad.events()] == [Failed(bad.error)]


async def test_out_of_memory_at_one_image_fails_that_job_with_a_clear_message(make) -> None:
    pipe, queue = make()
    pipe.oom_above = 0
    job = queue.submit(req("a", count=2))
    (error,) = await results(job)
    assert isinstance(error, GenerationFailed) and "Not enough GPU memory for one 256x256 image" in str(error)
    pipe.oom_above = None
    (ok,) = await results(queue.submit(req("a")))
    assert ok.images


async def test_batch_time_limit_fails_the_batch(make) -> None:
    pipe, queue = make(batch_time_limit=0.1)
    pipe.step_seconds = 0.05
    job = queue.submit(req("a", steps=8))
    (error,) = await results(job)
    assert isinstance(error, GenerationFailed) and "0.1 s limit" in str(error)


# -- shutdown ------------------------------------------------------------------------------------


async def test_close_drains_queued_work_and_refuses_new(make) -> None:
    pipe, queue = make()
    pipe.pause()
    jobs = [queue.submit(req("a", size=s)) for s in (256, 384, 512)]
    await entered(pipe)
    closing = asyncio.create_task(queue.close(drain=True))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull, match="shutting down"):
        queue.submit(req("b"))
    pipe.resume()
    assert await asyncio.wait_for(closing, TIMEOUT) == []
    assert [j.status for j in jobs] == ["done"] * 3 and len(pipe.calls) == 3


async def test_close_without_drain_finishes_running_and_returns_the_rest(make) -> None:
    pipe, queue = make()
    pipe.pause()
    jobs = [queue.submit(req("a", size=s)) for s in (256, 384, 512)]
    await entered(pipe)
    closing = asyncio.create_task(queue.close(drain=False))
    await asyncio.sleep(0.02)
    assert not closing.done()
    pipe.resume()
    left = await asyncio.wait_for(closing, TIMEOUT)
    assert left == jobs[1:]
    assert [j.status for j in jobs] == ["done", "cancelled", "cancelled"]
    outcome = await results(*jobs[1:])
    assert all(isinstance(e, ShuttingDown) and isinstance(e, JobCancelled) for e in outcome)
    assert len(pipe.calls) == 1


async def test_close_drain_starts_a_queue_that_was_never_started(make) -> None:
    pipe, queue = make(start=False)
    job = queue.submit(req("a"))
    await asyncio.wait_for(queue.close(), TIMEOUT)
    assert job.status == "done"


# -- randomized: every job ends exactly once; batches respect shape and budget ------------------


class AsyncFakeExecutor:
    """A thread-free executor: steps are loop yields; prompts containing "fail" fail."""

    caps = ModelCaps(name="fake", base_resolution=256, steps=(1, 2, 4, 8))
    model_id = "fake-async"

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.interrupted = 0

    async def run(self, batch, on_step=None, time_limit=None):
        self.batches.append(batch)
        try:
            for i in range(1, batch.steps + 1):
                await asyncio.sleep(0)
                if on_step is not None:
                    on_step(i, batch.steps)
        except asyncio.CancelledError:
            self.interrupted += 1
            raise
        return [GenerationFailed("nope") if "fail" in item.prompt else f"img-{item.seed}" for item in batch.items]


op = st.tuples(
    st.integers(0, 3),  # user
    st.sampled_from([(256, 4), (512, 4), (256, 2)]),  # shape
    st.integers(1, 4),  # count
    st.booleans(),  # priority
    st.integers(0, 3),  # loop yields before submitting
    st.one_of(st.none(), st.integers(0, 12)),  # cancel after this many yields
    st.integers(0, 9),  # == 0: this job's prompt fails
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=25), budget=st.integers(4, 8), drain=st.booleans())
def test_random_arrivals_every_job_ends_exactly_once(ops, budget, drain) -> None:
    asyncio.run(_scenario(ops, budget, drain))


async def _scenario(ops, budget: int, drain: bool) -> None:
    executor = AsyncFakeExecutor()
    queue = GenerationQueue(executor, max_batch_images=budget, max_queued_images=20,
                            max_queued_per_user=8, priority_burst=2)
    queue.start()
    jobs: list[Job] = []
    finals: Counter[str] = Counter()
    cancels: list[asyncio.Task] = []
    positions_ok = True

    async def cancel_later(job: Job, yields: int) -> None:
        for _ in range(yields):
            await asyncio.sleep(0)
        job.cancel()

    for n, (user, (size, steps), count, priority, waits, cancel_after, fail) in enumerate(ops):
        for _ in range(waits):
            await asyncio.sleep(0)
        prompt = f"job{n}" + (" fail" if fail == 0 else "")
        try:
            job = queue.submit(req(f"u{user}", prompt, size=size, steps=steps, count=count), priority=priority)
        except QueueFull:
            continue
        job.subscribe(lambda e, j=job: finals.update([j.id]) if e.final else None)
        jobs.append(job)
        if cancel_after is not None:
            cancels.append(asyncio.create_task(cancel_later(job, cancel_after)))
        queued = [j for j in jobs if j.status == "queued"]
        positions_ok &= sorted(j.position for j in queued) == list(range(1, len(queued) + 1))
    await asyncio.gather(*cancels)
    left = await asyncio.wait_for(queue.close(drain=drain), TIMEOUT)

    assert positions_ok
    assert all(j.finished and j.status in ("done", "failed", "cancelled") for j in jobs)
    assert all(finals[j.id] == 1 for j in jobs)
    assert all(j.status == "cancelled" for j in left)
    by_prompt = {j.request.prompt: j for j in jobs}
    ran: Counter[str] = Counter()
    for batch in executor.batches:
        assert 1 <= len(batch.items) <= budget
        prompts = [item.prompt for item in batch.items]
        for prompt in dict.fromkeys(prompts):
            job = by_prompt[prompt]
            assert job.shape == batch.shape
            assert prompts.count(prompt) == job.images
            ran[prompt] += 1
    for job in jobs:
        assert ran[job.request.prompt] <= 1
        if job.status == "done":
            assert ran[job.request.prompt] == 1 and "fail" not in job.request.prompt
            assert (await job.result()).images == tuple(f"img-{s}" for s in job.request.seeds)
        elif job.status == "failed":
            assert "fail" in job.request.prompt
        else:
            with pytest.raises(JobCancelled):
                await job.result()


class _HoldFirst:
    """A policy that picks like the fair one but holds an idle executor once, for ``seconds``."""

    name = "hold-first"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.asked: list[int] = []  # queued jobs each time hold() was asked

    def pick(self, queued, state, *, max_images, priority_burst):
        from generation.scheduling.policy import pick_batch

        return pick_batch(queued, state, max_images=max_images, priority_burst=priority_burst)

    def hold(self, batch, queued, *, now, max_images):
        self.asked.append(len(queued))
        return self.seconds if len(self.asked) == 1 else 0.0


async def test_a_policy_may_hold_an_idle_executor_and_is_asked_again_when_the_hold_ends(make) -> None:
    policy = _HoldFirst(0.3)
    pipe, queue = make(policy=policy)
    first = queue.submit(req("a"))
    await asyncio.sleep(0.05)  # held: nothing runs yet, and a second job arrives meanwhile
    assert pipe.calls == [] and first.status == "queued"
    second = queue.submit(req("b"))
    await asyncio.wait_for(asyncio.gather(first.result(), second.result()), TIMEOUT)
    assert pipe.call_sizes == [2]  # one batch: the job that came during the hold joined it
    assert policy.asked[0] == 1 and policy.asked[-1] == 2
    # positions were planned with the same policy, and the fairness state moved on once
    assert queue.policy is policy and queue.batches_run == 1
