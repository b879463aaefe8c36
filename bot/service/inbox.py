"""The inbox: a platform request is stored before the platform hears "got it", and found again.

Front ends store each request that may make a job (``receive``) before acknowledging it to
their platform, close it once it is answered (``handled``; a job's acceptance closes it in the
same transaction, see :mod:`bot.service.jobs`), and after a restart process again what was
stored but never answered (``unhandled``). So a request is never lost between a platform's
acknowledgement and the job row.
"""

from __future__ import annotations

from typing import Any

from bot.service.context import ServiceContext
from storage import inbox
from storage.inbox import InboxItem

__all__ = ["InboxPart"]


class InboxPart(ServiceContext):
    """Acknowledge only what is stored: receive, handled, unhandled."""

    async def receive(self, platform: str, key: str | int, payload: dict[str, Any]) -> bool:
        """Store a platform request before acknowledging it; False if it was stored before."""
        return await inbox.receive(self.db, platform, key, payload, self.clock())

    async def handled(self, platform: str, key: str | int) -> bool:
        """Close a stored request whose outcome was not a job (a refusal sent, a button done)."""
        return await inbox.mark_handled(self.db, platform, key, self.clock())

    async def unhandled(self, platform: str) -> list[InboxItem]:
        """Requests stored but not handled before a crash, oldest first, to process again."""
        return await inbox.unhandled(self.db, platform)
