"""Accounts: quota status, saved settings, direct-message state, /forget and /export.

The pure rules (which settings are valid, how an export zip looks) are in
:mod:`bot.service.accounts_rules`; this part reads and writes the rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from pathlib import Path
from typing import Any

from bot.service import accounts_rules
from bot.service.accounts_rules import QuotaStatus
from bot.service.context import ACTIVE, ServiceContext
from bot.service.tickets import ForgetOutcome, NotFound, Who
from generation.core.errors import InvalidRequest
from storage import jobs, privacy, quotas, users

__all__ = ["AccountsPart"]

logger = logging.getLogger(__name__)


class AccountsPart(ServiceContext):
    """A user's quota, settings, forget and export."""

    async def quota(self, who: Who) -> QuotaStatus:
        """(used, limit, remaining, resets_at) for the caller's current window."""
        user = await self._user(who)
        return await self._quota_status(user.id)

    async def settings(self, who: Who, **changes: Any) -> dict[str, Any]:
        """Validate and save ``changes`` (None resets a key); every setting's value after."""
        user = await self._user(who)
        clean = accounts_rules.validate_settings(changes, self.caps, self.catalogue)
        if clean.get("refine") and self.refiner is None:
            raise InvalidRequest("refine", "Prompt refinement is not set up on this bot (refine.model).")
        saved = user.settings
        if clean:
            saved = await users.update_settings(self.db, user.id, clean)
        return accounts_rules.effective_settings(saved, self.caps, self.catalogue)

    async def set_dm_closed(self, who: Who, closed: bool = True) -> None:
        """Remember that direct messages to ``who`` fail (or work again)."""
        user = await self._user(who)
        if user.dm_closed != closed:
            await users.set_dm_closed(self.db, user.id, closed)

    async def forget(self, who: Who) -> ForgetOutcome:
        """Cancel the caller's active jobs; delete their jobs, images, ratings, settings and exports;
        revoke their API keys and end their sessions (``session_enders``).

        Kept (see :data:`~bot.service.tickets.FORGET_KEEPS`): the block, strikes, cooldowns,
        the quota used in the current window and any per-user limit, all keyed by the platform
        identity, so forgetting never lifts a protection.
        """
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return ForgetOutcome(0, 0)
        active = await jobs.history(self.db, user.id, limit=10_000, statuses=ACTIVE)
        waiting = []
        for row in active.jobs:
            qjob = self.queue.job(row.id)
            if qjob is not None:
                qjob.cancel()
            if row.id in self._tasks:
                waiting.append(self._tasks[row.id])
        if waiting:
            await asyncio.wait(waiting, timeout=self.config.settle_timeout_s)
        window = quotas.window_start(self.clock(), self.config.quota_window)
        job_ids = await jobs.ids_of(self.db, user.id)
        orphans = await privacy.forget(self.db, user.id, keep_quota_from=window)  # API keys revoked too
        for end_sessions in self.session_enders:  # web sessions, when a front end keeps any
            await end_sessions(user.id)
        removed = await asyncio.to_thread(self.store.delete, orphans)
        removed += await asyncio.to_thread(_remove_tree, self._export_dir(who))
        logger.info("forgot %s: %d job(s) cancelled, %d file(s) deleted", who.key, len(active.jobs), removed)
        return ForgetOutcome(len(active.jobs), removed, tuple(job_ids))

    async def export(self, who: Who) -> Path:
        """A zip of everything stored about the caller: export.json, their images, and the
        pictures they sent to start from (``uploads/``)."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            raise NotFound("Nothing is stored about you.")
        data = await privacy.export(self.db, user.id)
        files: dict[str, Path] = {}
        for job in data["jobs"]:
            for image in job["images"]:
                name = f"images/{job['id']}-{image['idx'] + 1}.{image['path'].rsplit('.', 1)[-1]}"
                image["file"] = name
                files[name] = self.store.path_for(image["path"])
            if job.get("input"):  # the picture they sent to start from: theirs too
                name = f"uploads/{job['id']}.{job['input']['path'].rsplit('.', 1)[-1]}"
                job["input"]["file"] = name
                files[name] = self.store.path_for(job["input"]["path"])
        stamp = self.clock().strftime("%Y%m%dT%H%M%S")
        dest = self._export_dir(who) / f"export-{stamp}-{uuid.uuid4().hex[:6]}.zip"
        path = await asyncio.to_thread(accounts_rules.write_export_zip, data, files, dest)
        logger.info("exported %s to %s", who.key, path)
        return path.resolve()

    def _export_dir(self, who: Who) -> Path:
        digest = hashlib.sha256(who.key.encode("utf-8")).hexdigest()[:16]
        return self.config.data_dir / "exports" / digest


def _remove_tree(directory: Path) -> int:
    """Delete the files in ``directory`` and the directory; how many files."""
    if not directory.is_dir():
        return 0
    removed = 0
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
            removed += 1
    directory.rmdir()
    return removed
