"""Outcomes: what front ends record about showing a job.

A front end calls :meth:`OutcomesPart.mark_delivered` after sending a result and
:meth:`OutcomesPart.mark_told` after showing a failure or cancellation: each outcome is shown
exactly once, and a restart hands back the ones never shown (``recover()``).
"""

from __future__ import annotations

from typing import Any

from bot.service.context import ServiceContext
from storage import jobs

__all__ = ["OutcomesPart"]


class OutcomesPart(ServiceContext):
    """Delivery bookkeeping: delivered, told, the refs of sent messages."""

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
