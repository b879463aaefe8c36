"""Issue #22, item 3: a failure and its refund commit together, older failed-but-charged rows are
repaired, and a failure is told exactly once, like a result (real SQLite, real queue and worker)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bot.maintenance import Maintenance, MaintenanceSettings
from bot.service import Failed
from storage import jobs, quotas, users
from tests.fakes import FakePipeline
from tests.service_support import ADA, service_env


async def _used(env, who) -> int:  # type: ignore[no-untyped-def]
    user = await users.get_by_platform(env.db, who.platform, who.user_id)
    return await quotas.used(env.db, user.id, quotas.window_start(env.clock(), "daily"))


async def test_failure_and_refund_are_one_transaction(tmp_path: Path) -> None:
    """A crash inside the refund (a trigger aborts it) leaves the job unfailed and charged, never
    failed and charged; once the refund can run, the next start settles it."""
    async with service_env(tmp_path, FakePipeline(fail_prompt="explode")) as env:
        await env.db.execute("CREATE TRIGGER no_refund BEFORE UPDATE OF refunded ON jobs"
                             " BEGIN SELECT RAISE(ABORT, 'killed before the refund'); END")
        ticket = await env.service.imagine(ADA, "explode now --n 2")
        await ticket.updates().__anext__()
        async for _ in ticket.updates():
            pass
        row = await jobs.get(env.db, ticket.job_id)
        assert row is not None
        assert row.status != "failed", "failed but still charged: the failure committed without its refund"
        assert row.charged == 2 and not row.refunded and await _used(env, ADA) == 2
        await env.db.execute("DROP TRIGGER no_refund")
        recovered = await env.service.recover()  # runs it again: it fails again, settled this time
        await recovered.tickets[0].updates().__anext__()
        async for _ in recovered.tickets[0].updates():
            pass
        row = await jobs.get(env.db, ticket.job_id)
        assert row is not None and (row.status, row.refunded) == ("failed", True)
        assert await _used(env, ADA) == 0


async def _charged_job(env, who, count: int, status: str) -> str:  # type: ignore[no-untyped-def]
    """What an older version's crash left: the job failed/cancelled, the refund never ran."""
    user = await users.get_or_create(env.db, who.platform, who.user_id, who.display_name)
    window = quotas.window_start(env.clock(), "daily")
    async with env.db.transaction() as tx:
        assert await quotas.consume_with_override(tx, user.id, count, 50, window) is not None
        job = await jobs.create(tx, user_id=user.id, request={"prompt": "a kite", "count": count},
                                model_id="fake", charged=count, quota_window=window, now=env.clock())
    if status == "failed":
        await jobs.mark_failed(env.db, job.id, "boom", env.clock())
    else:
        await jobs.mark_cancelled(env.db, job.id, env.clock())
    return job.id


async def test_start_and_sweeper_repair_failed_but_charged_rows(tmp_path: Path) -> None:
    """Rows an older version left failed (or cancelled) and charged are refunded, once."""
    async with service_env(tmp_path, FakePipeline(), start_queue=False) as env:
        failed = await _charged_job(env, ADA, 3, "failed")
        assert await _used(env, ADA) == 3
        await env.service.recover()  # the start-up pass
        assert (await jobs.get(env.db, failed)).refunded  # type: ignore[union-attr]
        assert await _used(env, ADA) == 0

        cancelled = await _charged_job(env, ADA, 2, "cancelled")
        sweeper = Maintenance(env.db, env.store, env.queue, MaintenanceSettings())
        await sweeper.sweep_stuck(env.clock() + timedelta(minutes=1))  # the sweeper's pass
        assert (await jobs.get(env.db, cancelled)).refunded  # type: ignore[union-attr]
        assert await _used(env, ADA) == 0
        await _charged_job(env, ADA, 1, "failed")
        await sweeper.sweep_stuck(env.clock() + timedelta(minutes=2))
        await env.service.recover()
        assert await _used(env, ADA) == 0  # each refunded once, never below what was charged


async def test_a_failure_never_told_is_told_after_a_restart_once(tmp_path: Path) -> None:
    """The job records whether its message was shown; recover() hands back the ones never told."""
    async with service_env(tmp_path, FakePipeline(fail_prompt="explode")) as env:
        told = await env.service.imagine(ADA, "explode one")
        untold = await env.service.imagine(ADA, "explode two")
        for ticket in (told, untold):
            updates = [u async for u in ticket.updates()]
            assert isinstance(updates[-1], Failed)
        assert await env.service.mark_told(told.job_id)
        assert not await env.service.mark_told(told.job_id)  # once

        recovered = await env.service.recover()  # "after the restart": the second was never shown
        assert [u.job_id for u in recovered.untold] == [untold.job_id]
        item = recovered.untold[0]
        assert "internal error" in item.message and not item.cancelled and "explode two" in item.text
        assert item.target == dict(untold.target)
        assert await env.service.mark_told(item.job_id)
        assert (await env.service.recover()).untold == ()


async def test_a_delivered_result_counts_as_told(tmp_path: Path) -> None:
    async with service_env(tmp_path, FakePipeline()) as env:
        ticket = await env.service.imagine(ADA, "a calm lake")
        await ticket.delivery()
        assert not (await jobs.get(env.db, ticket.job_id)).told  # type: ignore[union-attr]
        assert await env.service.mark_delivered(ticket.job_id)
        assert (await jobs.get(env.db, ticket.job_id)).told  # type: ignore[union-attr]
        assert not await env.service.mark_told(ticket.job_id)  # not a failure
