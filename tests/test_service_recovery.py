"""Restart recovery: every accepted job is delivered once or refunded once, never charged twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage import jobs, quotas, users
from tests.fakes import FakePipeline
from tests.service_support import ADA, BOB, Clock, CountingPipeline, service_env

TIMEOUT = 30.0


async def _used(env, who) -> int:
    return (await env.service.quota(who)).used


async def test_restart_runs_unfinished_jobs_once_and_redelivers_done_ones(tmp_path: Path, tiny) -> None:
    clock = Clock()
    # 1. A first process finishes one job but dies before delivering it.
    async with service_env(tmp_path, tiny, clock=clock) as first:
        done = await asyncio.wait_for(
            (await first.service.imagine(ADA, "done before the crash --steps 1", target={"chat": 1})).delivery(),
            TIMEOUT)
    # 2. A second process accepts two jobs; its queue never runs them (it "dies" at once).
    async with service_env(tmp_path, tiny, clock=clock, start_queue=False) as second:
        queued = await second.service.imagine(ADA, "queued at the crash --n 2 --steps 1", target={"chat": 2})
        running = await second.service.imagine(BOB, "running at the crash --steps 1", target={"chat": 3})
        assert await jobs.mark_running(second.db, running.job_id)
        before = (await _used(second, ADA), await _used(second, BOB))
    assert before == (3, 1)

    # 3. The restarted process recovers on the same database file.
    counting = CountingPipeline(tiny)
    async with service_env(tmp_path, counting, clock=clock) as third:
        recovered = await third.service.recover()
        assert [d.job_id for d in recovered.deliveries] == [done.job_id]
        redelivery = recovered.deliveries[0]
        assert redelivery.target == {"chat": 1} and redelivery.text == done.text
        assert [i.sha256 for i in redelivery.images] == [i.sha256 for i in done.images]
        assert all(i.path.is_file() for i in redelivery.images)

        assert sorted(t.job_id for t in recovered.tickets) == sorted([queued.job_id, running.job_id])
        deliveries = await asyncio.wait_for(
            asyncio.gather(*(t.delivery() for t in recovered.tickets)), TIMEOUT)
        by_id = {d.job_id: d for d in deliveries}
        assert len(by_id[queued.job_id].images) == 2 and by_id[queued.job_id].target == {"chat": 2}
        assert by_id[running.job_id].request.seed == running.request.seed  # same stored request
        assert counting.images == 3  # each unfinished job ran once
        assert (await _used(third, ADA), await _used(third, BOB)) == before  # nothing charged again

        for job_id in (done.job_id, queued.job_id, running.job_id):
            assert await third.service.mark_delivered(job_id)
        again = await third.service.recover()
        assert again.tickets == () and again.deliveries == ()
        assert counting.images == 3


async def test_shutdown_without_drain_keeps_queued_rows_for_the_next_start(tmp_path: Path) -> None:
    fake = FakePipeline()
    fake.pause()
    async with service_env(tmp_path, fake) as env:
        busy = await env.service.imagine(ADA, "keeps the gpu busy")
        assert await asyncio.to_thread(fake.wait_entered)
        waiting = await env.service.imagine(ADA, "waits in line")
        closing = asyncio.create_task(env.queue.close(drain=False))
        with pytest.raises(Exception, match="shutting down"):
            await asyncio.wait_for(waiting.delivery(), TIMEOUT)
        fake.resume()
        await asyncio.wait_for(closing, TIMEOUT)
        await asyncio.wait_for(busy.delivery(), TIMEOUT)
        row = await jobs.get(env.db, waiting.job_id)
        assert row.status == "queued" and not row.refunded  # runs after the restart
        assert await _used(env, ADA) == 2


async def test_unrunnable_recovered_job_is_refunded(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        user = await users.get_or_create(env.db, ADA.platform, ADA.user_id)
        window = quotas.window_start(env.clock(), "daily")
        await quotas.consume(env.db, user.id, 1, 50, window)
        bad = await jobs.create(env.db, user_id=user.id, request={"prompt": "x", "steps": 3, "seed": 1},
                                model_id="fake", charged=1, quota_window=window)
        recovered = await env.service.recover()
        assert recovered.tickets == ()
        row = await jobs.get(env.db, bad.id)
        assert row.status == "failed" and row.refunded and "Steps" in row.error
        assert await _used(env, ADA) == 0
