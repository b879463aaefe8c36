"""Outcomes: what front ends record about showing a job, and the inbox of platform requests.

A front end calls :meth:`OutcomesPart.mark_delivered` after sending a result and
:meth:`OutcomesPart.mark_told` after showing a failure or cancellation: each outcome is shown
exactly once, and a restart hands back the ones never shown (``recover()``). The inbox methods
keep the rule "acknowledge only what is stored" (``storage.inbox``).
"""

from __future__ import annotations

from typing import Any

from bot.service.context import ServiceContext
from storage import inbox, jobs
from storage.inbox import InboxItem

__all__ = ["OutcomesPart"]


class OutcomesPart(ServiceContext):
    """Delivery bookkeeping and the inbox."""

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

    # -- the inbox: acknowledge only what is stored ------------------------------------------------

    async def receive(self, platform: str, key: str | int, payload: dict[str, Any]) -> bool:
        """Store a platform request before acknowledging it; False if it was stored before."""
        return await inbox.receive(self.db, platform, key, payload, self.clock())

    async def handled(self, platform: str, key: str | int) -> bool:
        """Close a stored request whose outcome was not a job (a refusal sent, a button done)."""
        return await inbox.mark_handled(self.db, platform, key, self.clock())

    async def unhandled(self, platform: str) -> list[InboxItem]:
        """Requests stored but not handled before a crash, oldest first, to process again."""
        return await inbox.unhandled(self.db, platform)
