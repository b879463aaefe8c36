"""Maintenance jobs on a real SQLite file: stuck sweep, retention purge, quota pruning, backup."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.maintenance import Maintenance, MaintenanceSettings
from storage import Database, ImageStore, images, jobs, quotas, users

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


class Live:
    """The queue's view: ids of jobs still held in memory."""

    def __init__(self, *ids: str) -> None:
        self.ids = set(ids)

    def job(self, job_id: str) -> object | None:
        return object() if job_id in self.ids else None


async def charged_job(db: Database, user_id: int, n: int, created: datetime, status: str = "queued") -> str:
    window = quotas.window_start(created)
    async with db.transaction() as tx:
        assert await quotas.consume(tx, user_id, n, 100, window) is not None
        job = await jobs.create(
            tx, user_id=user_id, request={"prompt": "a fox", "count": n}, model_id="tiny",
            charged=n, quota_window=window, now=created,
        )
    if status in ("running", "done", "delivered"):
        assert await jobs.mark_running(db, job.id, now=created)
    if status in ("done", "delivered"):
        assert await jobs.mark_done(db, job.id, now=created)
    if status == "delivered":
        assert await jobs.mark_delivered(db, job.id, now=created)
    return job.id


@pytest.fixture
async def env(tmp_path: Path):
    async with Database.open(tmp_path / "bot.db") as db:
        user = await users.get_or_create(db, "cli", "ada", "Ada")
        yield db, ImageStore(tmp_path / "images"), user.id, tmp_path


async def test_sweeper_fails_and_refunds_only_stuck_jobs_nobody_holds(env) -> None:
    db, store, uid, _ = env
    old = NOW - timedelta(hours=2)
    stuck = await charged_job(db, uid, 2, old, "running")
    held = await charged_job(db, uid, 1, old, "queued")
    fresh = await charged_job(db, uid, 1, NOW - timedelta(minutes=1))
    maintenance = Maintenance(db, store, Live(held), MaintenanceSettings(stuck_after_minutes=30))

    assert await maintenance.sweep_stuck(now=NOW) == [stuck]
    job = await jobs.get(db, stuck)
    assert job.status == "failed" and "refunded" in job.error
    assert await quotas.used(db, uid, quotas.window_start(old)) == 2  # 2+1+1 charged today, 2 refunded
    assert (await jobs.get(db, held)).status == "queued"
    assert (await jobs.get(db, fresh)).status == "queued"
    assert await maintenance.sweep_stuck(now=NOW) == []  # once only


async def test_retention_purges_old_images_and_their_files(env) -> None:
    db, store, uid, _ = env
    old_job = await charged_job(db, uid, 1, NOW - timedelta(days=40), "delivered")
    new_job = await charged_job(db, uid, 1, NOW - timedelta(days=1), "delivered")
    paths = {}
    for job_id, payload in ((old_job, b"old image"), (new_job, b"new image")):
        path, sha = await asyncio.to_thread(store.put, payload)
        await images.add_image(db, job_id, 0, 1, path, sha, 64, 64, len(payload))
        paths[job_id] = path

    off = Maintenance(db, store, Live(), MaintenanceSettings(retention_days=0))
    assert await off.purge_old_images(now=NOW) == 0
    assert store.exists(paths[old_job])

    on = Maintenance(db, store, Live(), MaintenanceSettings(retention_days=30))
    assert await on.purge_old_images(now=NOW) == 1
    assert await images.images_for_job(db, old_job) == []
    assert not store.exists(paths[old_job])
    assert store.exists(paths[new_job]) and len(await images.images_for_job(db, new_job)) == 1
    assert (await jobs.get(db, old_job)).status == "delivered"  # history keeps the job


async def test_quota_rows_of_old_windows_are_pruned(env) -> None:
    db, store, uid, _ = env
    await charged_job(db, uid, 1, NOW - timedelta(days=20))
    await charged_job(db, uid, 1, NOW)
    maintenance = Maintenance(db, store, Live(), MaintenanceSettings(quota_keep_days=8))
    assert await maintenance.prune_quota_rows(now=NOW) == 1
    assert await quotas.used(db, uid, quotas.window_start(NOW)) == 1


async def test_backup_is_readable_and_rotated(env) -> None:
    db, store, uid, tmp_path = env
    await charged_job(db, uid, 1, NOW)
    settings = MaintenanceSettings(backup_dir=tmp_path / "backups", backup_keep=2)
    maintenance = Maintenance(db, store, Live(), settings)
    made = [await maintenance.backup(now=NOW + timedelta(days=i)) for i in range(3)]
    remaining = sorted((tmp_path / "backups").glob("imagine-*.db"))
    assert remaining == sorted(made[1:])
    with sqlite3.connect(made[-1]) as copy:
        assert copy.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1


async def test_scheduler_registers_every_job(env) -> None:
    db, store, _, tmp_path = env
    maintenance = Maintenance(db, store, Live(), MaintenanceSettings(backup_dir=tmp_path / "b"))
    scheduler = maintenance.start()
    try:
        assert {job.id for job in scheduler.get_jobs()} == {"sweep", "purge", "quota", "backup"}
    finally:
        maintenance.stop()
    assert maintenance.scheduler is None
