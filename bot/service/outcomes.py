"""Outcomes: how a job ends besides its images, and what front ends record about showing it.

A front end calls :meth:`OutcomesPart.mark_delivered` after sending a result and
:meth:`OutcomesPart.mark_told` after showing a failure or cancellation: each outcome is shown
exactly once, and a restart hands back the ones never shown (``recover()``).
:meth:`OutcomesPart.cancel` ends a queued or running job at its owner's request, refunded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.service.context import ACTIVE, ServiceContext
from bot.service.tickets import CancelOutcome, NotAllowed, NotFound, Who
from storage import jobs, users

__all__ = ["OutcomesPart"]

logger = logging.getLogger("bot.service.jobs")  # cancellations log beside the jobs they end


class OutcomesPart(ServiceContext):
    """Delivery bookkeeping (delivered, told, the refs of sent messages) and cancelling."""

    async def mark_delivered(self, job_id: str) -> bool:
        """Record that a front end sent the images; False if it was already delivered."""
        now = self.clock()
        return await self.writes.run(lambda tx: jobs.mark_delivered(tx, job_id, now))

    async def mark_told(self, job_id: str) -> bool:
        """Record that a failed/cancelled job's message was shown; False if it was already."""
        return await jobs.mark_told(self.db, job_id)

    async def record_refs(self, job_id: str, refs: dict[str, Any]) -> dict[str, Any]:
        """Merge a front end's refs (e.g. sent message ids) into the job's target; the new target."""
        return await jobs.update_target(self.db, job_id, refs)

    async def cancel(self, who: Who, job_id: str | None = None) -> CancelOutcome:
        """Cancel one of the caller's queued/running jobs (latest when no id) and refund it."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            raise NotFound("You have no queued or running request to cancel.")
        if job_id is None:
            page = await jobs.history(self.db, user.id, limit=1, statuses=ACTIVE)
            if not page.jobs:
                raise NotFound("You have no queued or running request to cancel.")
            row = page.jobs[0]
        else:
            row = await jobs.get(self.db, job_id)
            if row is None or row.user_id != user.id:
                raise NotFound(f"You have no request {job_id}.")
            if row.status not in ACTIVE:
                raise NotAllowed(f"Request {job_id} is already {row.status}; it cannot be cancelled.")
        qjob = self.queue.job(row.id)
        task = self._tasks.get(row.id)
        if qjob is not None and qjob.cancel():
            if task is not None:
                await asyncio.wait({task}, timeout=self.config.settle_timeout_s)
        elif task is None:
            await self._settle_row(row.id, "cancelled")  # not followed by this process
        else:
            raise NotAllowed(f"Request {row.id} has just finished; it can no longer be cancelled.")
        after = await jobs.get(self.db, row.id)
        if after is None:  # forgotten meanwhile (a concurrent /forget deleted it)
            raise NotFound(f"Request {row.id} is gone: it was deleted while being cancelled.")
        await jobs.mark_told(self.db, row.id)  # the answer to /cancel is the message
        logger.info("job %s cancelled by %s", row.id, who.key)
        return CancelOutcome(row.id, self._text(row.request), after.status,
                             after.charged if after.refunded else 0)
