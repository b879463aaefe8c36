"""Maintenance on a schedule (apscheduler): stuck-job sweep, retention purge, quota pruning, backups.

Quota windows roll over lazily (usage rows are keyed by window start), so no job is needed at
the window boundary; old usage rows are pruned once a day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from storage import Database, ImageStore, inbox, jobs, quotas, retention

__all__ = ["Maintenance", "MaintenanceSettings"]

log = logging.getLogger(__name__)


class LiveJobs(Protocol):
    """What the sweeper asks the queue: is this job still alive in memory?"""

    def job(self, job_id: str) -> object | None: ...


@dataclass(frozen=True)
class MaintenanceSettings:
    """[maintenance] in config."""

    stuck_after_minutes: float = 30.0
    sweep_every_minutes: float = 5.0
    retention_days: float = 0.0  # 0 keeps images forever
    backups: bool = True
    backup_dir: Path | None = None  # None: <storage.data_dir>/backups (set by the composition root)
    backup_hour_utc: int = 4
    backup_keep: int = 7
    quota_keep_days: int = 8


class Maintenance:
    """The periodic jobs; each is a plain coroutine method so it can be run and tested directly."""

    def __init__(
        self,
        db: Database,
        store: ImageStore,
        live: LiveJobs,
        settings: MaintenanceSettings,
        *,
        window: str = "daily",
    ) -> None:
        self.db = db
        self.store = store
        self.live = live
        self.settings = settings
        self.window = window
        self.scheduler: AsyncIOScheduler | None = None

    async def sweep_stuck(self, now: datetime | None = None) -> list[str]:
        """Fail and refund queued/running jobs past the limit that no worker holds; their ids.

        Also refunds failed/cancelled jobs still charged (:func:`storage.jobs.repair_unrefunded`).
        """
        limit = timedelta(minutes=self.settings.stuck_after_minutes)
        swept = []
        for job in await jobs.stuck(self.db, limit, now=now):
            if self.live.job(job.id) is not None:
                continue
            message = (
                f"This job was stuck for over {self.settings.stuck_after_minutes:g} minutes and "
                "was stopped; your quota was refunded. Please try again."
            )
            moved, _ = await jobs.settle(self.db, job.id, "failed", message, now)  # one transaction
            if moved:
                swept.append(job.id)
        if swept:
            log.warning("sweeper failed and refunded %d stuck job(s)", len(swept))
        await jobs.repair_unrefunded(self.db)  # failed but still charged (an older version's crash)
        return swept

    async def purge_old_images(self, now: datetime | None = None) -> int:
        """Delete images of finished jobs older than retention_days (off when 0); how many."""
        if self.settings.retention_days <= 0:
            return 0
        count = await retention.purge_images(
            self.db, timedelta(days=self.settings.retention_days), now=now
        )
        await self.store.delete_unreferenced(self.db, grace=timedelta(0) if count else timedelta(hours=1))
        return count

    async def prune_quota_rows(self, now: datetime | None = None) -> int:
        """Forget quota usage of windows older than quota_keep_days."""
        moment = (now or datetime.now(timezone.utc)) - timedelta(days=self.settings.quota_keep_days)
        removed = await retention.prune_quota_usage(
            self.db, quotas.window_start(moment, window=self.window)
        )
        # handled inbox requests are only needed to recognise a platform's re-send: a day is plenty
        await inbox.prune(self.db, (now or datetime.now(timezone.utc)) - timedelta(days=1))
        return removed

    async def backup(self, now: datetime | None = None) -> Path | None:
        """Online backup of the database to backup_dir; keeps the newest backup_keep files."""
        if not self.settings.backups or self.settings.backup_dir is None:
            return None
        directory = Path(self.settings.backup_dir)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
        path = await self.db.backup(directory / f"imagine-{stamp}.db")
        old = sorted(directory.glob("imagine-*.db"))[: -self.settings.backup_keep or None]
        for stale in old:
            stale.unlink(missing_ok=True)
        log.info("database backed up to %s", path)
        return path

    def start(self) -> AsyncIOScheduler:
        """Register every job on an AsyncIOScheduler in the running loop and start it."""
        scheduler = AsyncIOScheduler(timezone=timezone.utc)
        s = self.settings
        options = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600}
        scheduler.add_job(self.sweep_stuck, "interval", minutes=s.sweep_every_minutes, id="sweep", **options)
        scheduler.add_job(self.purge_old_images, "cron", hour=(s.backup_hour_utc + 1) % 24, id="purge", **options)
        scheduler.add_job(self.prune_quota_rows, "cron", hour=(s.backup_hour_utc + 2) % 24, id="quota", **options)
        if s.backups and s.backup_dir is not None:
            scheduler.add_job(self.backup, "cron", hour=s.backup_hour_utc, id="backup", **options)
        scheduler.start()
        self.scheduler = scheduler
        return scheduler

    def stop(self) -> None:
        """Stop the scheduler without waiting for running jobs."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.scheduler = None
