"""Accepting a request: check it, charge it, store its job row and queue it (or serve a stored result).

The step every kind of request goes through (/imagine, reroll, variation, the toolbox, edits)::

    _submit   prompt check → an explicit seed already made? serve the stored images (free)
    _accept   quota + job row (+ input image, + inbox "handled") in one transaction → queue.submit
              → follow the job (JobsPart._follow)

The transaction is shared with the other requests accepted at the same moment (the service's
GroupWriter): under load one commit serves many. ``_accept`` runs shielded: a caller cancelled
while its charge is committing (a client that went away) still gets the job queued and followed,
so nothing charged is left behind; a crash leaves the row for ``recover()`` as before.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from PIL import Image as PILImage

from bot.service.context import Origin, ServiceContext
from bot.service.tickets import AlreadyAccepted, Finished, QuotaExceeded, Ticket, Who
from bot.service.uploads import StoredUpload
from generation.core.errors import ImagineError
from generation.core.request import GenerationRequest
from storage import images, inbox, inputs, jobs, quotas
from storage.db import Transaction
from storage.files import png_with_metadata, read_metadata
from storage.records import Job as JobRow
from storage.records import Image, User

if TYPE_CHECKING:
    from generation.scheduling.job import Job as QueueJob

__all__ = ["AcceptingPart"]

logger = logging.getLogger(__name__)


class AcceptingPart(ServiceContext):
    """Check, charge, store and queue one request (JobsPart follows it from there)."""

    if TYPE_CHECKING:  # JobsPart's (MetricsPart counts it), through ImagineService
        def _follow(self, job_id: str, request: GenerationRequest, qjob: QueueJob,
                    target: dict[str, Any]) -> Ticket: ...

    async def _submit(self, who: Who, user: User, request: GenerationRequest, *,
                      target: dict[str, Any] | None, dedupe: bool, origin: Origin | None = None,
                      upload: StoredUpload | None = None, cost: int | None = None) -> Ticket:
        """Check, charge, store and enqueue ``request``."""
        # 1. Prompt safety: nothing is charged or written for a refused prompt
        await self.moderation.check_prompt(who, request.prompt, request.negative_prompt, target)
        request = request.with_seed()
        key = jobs.request_key(request.to_dict(), self.model_id_for(request.model),
                               self.checkpoint_hash_for(request.model))
        now = self.clock()

        # 2. An identical request with an explicit seed already made: serve the stored images
        if dedupe:
            ticket = await self._serve_cached(user, request, key, target, now, origin)
            if ticket is not None:
                return ticket

        # 3 and 4 go on even if the caller is cancelled meanwhile: the charge may already sit in
        # a shared transaction (self.writes), and what was charged must be queued and followed
        accepting = asyncio.ensure_future(self._accept(who, user, request, key, target, now, origin, upload, cost))
        accepting.add_done_callback(_retrieve)
        return await asyncio.shield(accepting)

    async def _accept(self, who: Who, user: User, request: GenerationRequest, key: str,
                      target: dict[str, Any] | None, now: datetime, origin: Origin | None,
                      upload: StoredUpload | None, cost: int | None) -> Ticket:
        # 3. Quota and job row in one transaction
        window = quotas.window_start(now, self.config.quota_window)
        priority = self.config.admin_priority and self.is_admin(who)
        origin_key = _origin_key(origin)
        try:
            job = await self._charge_and_store(user, request, key, target, now, window, priority, origin,
                                               upload, cost)
        except sqlite3.IntegrityError:
            found = await jobs.find_by_origin(self.db, origin_key) if origin_key else None
            if found is None:
                raise
            raise AlreadyAccepted(found.id) from None

        # 4. Only now into the queue; a refusal gives the quota back
        try:
            qjob = self.queue.submit(request, priority=priority, job_id=job.id)
        except ImagineError:
            # refused at once (queue full, shutting down): no job after all. Refund, drop the row
            # and reopen the platform request together; the refusal is told and closed like any
            # other, and a crash before that runs the request again instead of losing it.
            await jobs.withdraw(self.db, job.id, origin)
            raise
        logger.info("job %s accepted for %s (%d image(s))", job.id, who.key, request.count)
        return self._follow(job.id, request, qjob, job.target)

    async def _charge_and_store(self, user: User, request: GenerationRequest, key: str,
                                target: dict[str, Any] | None, now: datetime, window: str,
                                priority: bool, origin: Origin | None,
                                upload: StoredUpload | None = None, cost: int | None = None) -> JobRow:
        """One transaction: consume quota, insert the job row (and its input image), close its inbox request.

        Requests accepted at the same moment share the transaction (``self.writes``: one commit
        for all of them under load). A quota refusal is returned by the write, not raised in it,
        so it never rolls back the others; a duplicate ``origin`` raises IntegrityError for its
        own caller only (the group is retried one by one).
        """
        cost = request.count if cost is None else cost  # an upscale costs quota.upscale_cost

        async def write(tx: Transaction) -> tuple[JobRow | None, int, int]:
            if await quotas.consume_with_override(tx, user.id, cost, self.config.daily_quota, window) is None:
                limit = await quotas.effective_limit(tx, user.id, self.config.daily_quota)
                return None, await quotas.used(tx, user.id, window), limit
            job = await jobs.create(
                tx, user_id=user.id, request=request.to_dict(), model_id=self.model_id_for(request.model),
                charged=cost, quota_window=window, priority=int(priority),
                target=target, key=key, checkpoint_hash=self.checkpoint_hash_for(request.model),
                job_id=uuid.uuid4().hex[:12], now=now, origin=_origin_key(origin),
            )
            if upload is not None:
                await inputs.add(tx, job.id, upload.path, upload.sha256, upload.width, upload.height,
                                 upload.bytes, source=upload.source, now=now)
            if origin is not None:
                await inbox.mark_handled(tx, origin[0], origin[1], now)
            return job, 0, 0

        job, used, limit = await self.writes.run(write)
        if job is None:
            raise QuotaExceeded(self._quota_message(cost, used, limit, now))
        return job

    async def _serve_cached(self, user: User, request: GenerationRequest, key: str,
                            target: dict[str, Any] | None, now: datetime,
                            origin: Origin | None = None) -> Ticket | None:
        """A done Ticket from stored images of an identical request, or None.

        Per account: the caller's own earlier result, or one whose images are all publicly shared;
        never another account's private result (that would give it away, and tell that it exists).
        Another account's images are stored again with this job's metadata (the PNG names its job:
        the author's job id never reaches the caller).
        """
        found = await jobs.find_by_request_key(self.db, key, user.id)
        if found is None:
            return None
        source = await images.images_for_job(self.db, found.id)
        if len(source) != request.count or not all(self.store.exists(i.path) for i in source):
            return None
        if any(i.safety != "ok" for i in source):  # spoilered for another scope: check again here
            return None
        job_id = uuid.uuid4().hex[:12]
        files = [(i.path, i.sha256, i.width, i.height, i.bytes) for i in source]
        if found.user_id != user.id:  # another account's shared images: the same pixels, this job's label
            files = [await asyncio.to_thread(self._relabelled, i, request, job_id) for i in source]
        async with self.db.transaction() as tx:
            job = await jobs.create(
                tx, user_id=user.id, request=request.to_dict(), model_id=found.model_id, charged=0,
                target=target, key=key, checkpoint_hash=found.checkpoint_hash,
                job_id=job_id, now=now, origin=_origin_key(origin),
            )
            if origin is not None:
                await inbox.mark_handled(tx, origin[0], origin[1], now)
            rows = [
                await images.add_image(tx, job.id, i.idx, i.seed, path, sha, width, height, size, i.safety, now)
                for i, (path, sha, width, height, size) in zip(source, files)
            ]
            await jobs.mark_done(tx, job.id, found.checkpoint_hash, now)
        logger.info("job %s served from job %s's images", job.id, found.id)
        delivery = self._delivery(job.id, request, rows, cached=True, target=job.target)
        ticket = Ticket(job.id, request, target=job.target)
        ticket.settle(Finished(delivery))
        return ticket

    def _relabelled(self, source: Image, request: GenerationRequest, job_id: str) -> tuple[str, str, int, int, int]:
        """``source``'s pixels stored as image ``source.idx`` of ``job_id`` (blocking: a thread)."""
        data = self.store.open(source.path)
        with PILImage.open(io.BytesIO(data)) as opened:
            picture = opened.copy()
        model = str(read_metadata(data).get("model") or request.model or "")
        relabelled = png_with_metadata(picture, self._png_params(request, job_id, source.idx, source.seed, model))
        path, sha = self.store.put(relabelled, "png")
        return path, sha, source.width, source.height, len(relabelled)


def _origin_key(origin: Origin | None) -> str | None:
    return None if origin is None else f"{origin[0]}:{origin[1]}"


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Read a shielded acceptance's outcome, so one whose caller went away logs nothing spurious."""
    if not task.cancelled():
        task.exception()
