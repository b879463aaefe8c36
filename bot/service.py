"""ImagineService: the one place where quota, safety, jobs, the queue and storage meet.

Front ends (console, Discord, Telegram) parse nothing and store nothing: they call the service
with a :class:`Who` and an opaque delivery ``target`` and show what comes back (the types in
:mod:`bot.tickets`, re-exported here).

The life of one accepted request::

    imagine()  user row → blocked? → parse with saved defaults → prompt check → dedupe hit?
               → BEGIN: consume quota + insert job (queued, charged) COMMIT → queue.submit
    consumer   Started → mark_running; Done → image check → PNGs into the store → image rows
               + mark_done (one transaction) → Finished(delivery)
               Failed / blocked image → mark_failed + refund;  Cancelled → mark_cancelled + refund
    front end  sends the images → mark_delivered() (False: already delivered, skip)
    restart    recover(): queued/running rows run again (priority, not charged again);
               done-but-undelivered rows come back as Deliveries to send

Errors shown to users as they are (all :class:`~generation.errors.ImagineError`)::

    ImagineError
    ├── InvalidRequest, QueueFull, JobCancelled, GenerationFailed   (generation.errors)
    ├── BlockedPrompt          (bot.safety) the prompt check refused; names the category
    ├── Restricted             (bot.safety) blocked after strikes, on a cooldown, or too soon again
    ├── QuotaExceeded          no images left in this window; says how many and when it resets
    ├── NotAllowed             blocked user, non-admin calling an admin command, too late to cancel
    └── NotFound               no such job or image (or not yours)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bot import accounts
from bot.accounts import QuotaStatus
from bot.options import parse_imagine, render
from bot.safety import AllowAllImages, BlocklistChecker, ImageChecker, Moderation, PromptChecker, VerdictClassifier
from bot.tickets import (
    CancelOutcome,
    Cancelled,
    Delivery,
    Failed,
    Finished,
    ForgetOutcome,
    HistoryEntry,
    HistoryImage,
    HistoryView,
    NotAllowed,
    NotFound,
    QuotaExceeded,
    Queued,
    Recovered,
    Running,
    StoredImage,
    Ticket,
    Update,
    Who,
)
from generation import queue as gq
from generation.errors import ImagineError, InvalidRequest, JobCancelled
from generation.queue import GenerationQueue, ShuttingDown
from generation.request import GenerationRequest, GenerationResult, ModelCaps, random_seed
from storage import Database, ImageStore, images, jobs, model_versions, privacy, quotas, ratings, users
from storage.clock import utcnow
from storage.files import png_with_metadata
from storage.records import RATING_SOURCES, Image, Job, Rating, User


__all__ = [
    "Cancelled",
    "CancelOutcome",
    "Delivery",
    "Failed",
    "Finished",
    "ForgetOutcome",
    "HistoryEntry",
    "HistoryImage",
    "HistoryView",
    "ImagineService",
    "NotAllowed",
    "NotFound",
    "QuotaExceeded",
    "QuotaStatus",
    "Queued",
    "Recovered",
    "Running",
    "ServiceSettings",
    "StoredImage",
    "Ticket",
    "Update",
    "Who",
]

logger = logging.getLogger(__name__)

_ACTIVE = ("queued", "running")
_BLOCKED_IMAGE = (
    "An image was blocked by the image safety filter, so nothing was sent. "
    "Your quota was refunded; try a different prompt."
)
_INTERNAL = "Something went wrong while saving your images (reference {ref}); your quota was refunded."


@dataclass(frozen=True)
class ServiceSettings:
    """What the operator configures for the service."""

    daily_quota: int = 50  # images per quota window
    quota_window: str = "daily"  # one of storage.quotas.WINDOWS
    admins: frozenset[str] = frozenset()  # "platform:user_id"
    data_dir: Path = Path("data")  # exports go to data_dir/exports
    default_model: str = "sdxl-lightning"
    checkpoint_hash: str | None = None  # recorded with each job when the executor has none
    variation_strength: float = 0.6
    admin_priority: bool = True  # admins' jobs use the queue's priority lane
    settle_timeout_s: float = 30.0  # how long cancel/forget wait for a job to settle

    def __post_init__(self) -> None:
        if self.quota_window not in quotas.WINDOWS:
            raise ValueError(f"`quota_window` must be one of {', '.join(quotas.WINDOWS)}, not {self.quota_window!r}")
        if self.daily_quota < 0:
            raise ValueError(f"`daily_quota` must be 0 or more, not {self.daily_quota}")
        object.__setattr__(self, "admins", frozenset(self.admins))
        object.__setattr__(self, "data_dir", Path(self.data_dir))


class ImagineService:
    """Quota, safety, jobs, queue and storage behind one API for every front end."""

    def __init__(
        self,
        db: Database,
        store: ImageStore,
        queue: GenerationQueue,
        *,
        settings: ServiceSettings | None = None,
        prompt_checker: PromptChecker | None = None,
        image_checker: ImageChecker | None = None,
        moderation: Moderation | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.store = store
        self.queue = queue
        self.config = settings or ServiceSettings()
        self.prompt_checker: PromptChecker = prompt_checker or BlocklistChecker.default()
        self.image_checker: ImageChecker = image_checker or AllowAllImages()
        # strikes, cooldowns, per-scope image policy (bot.safety.moderation); without one, the
        # checkers above with no request spacing
        self.moderation = moderation or Moderation.permissive(
            db, prompt_checker=self.prompt_checker, image_classifier=VerdictClassifier(self.image_checker),
            admins=self.config.admins, clock=clock)
        self.clock = clock
        self._tickets: dict[str, Ticket] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    # -- properties ----------------------------------------------------------------------------

    @property
    def caps(self) -> ModelCaps:
        return self.queue.caps

    @property
    def model_id(self) -> str:
        return self.queue.model_id

    @property
    def checkpoint_hash(self) -> str | None:
        return getattr(self.queue.executor, "checkpoint_hash", None) or self.config.checkpoint_hash

    def is_admin(self, who: Who) -> bool:
        return who.key in self.config.admins

    def ticket(self, job_id: str) -> Ticket | None:
        """The ticket of a job this process is still following."""
        return self._tickets.get(job_id)

    async def close(self, timeout: float | None = None) -> None:
        """Let followers of finished queue jobs store their results, then stop following.

        Call after the queue is closed: the running batch's images are stored; jobs that never
        ran stay ``queued`` for the next start. Followers still busy after ``timeout``
        (default ``settle_timeout_s``) are cancelled; their rows stay as they are.
        """
        tasks = list(self._tasks.values())
        # a job the queue no longer holds has its outcome: let its follower record it
        settling = [task for job_id, task in self._tasks.items() if self.queue.job(job_id) is None]
        if settling:
            await asyncio.wait(settling, timeout=timeout or self.config.settle_timeout_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- /imagine ------------------------------------------------------------------------------

    async def imagine(self, who: Who, text: str, *, target: dict[str, Any] | None = None,
                      **options: Any) -> Ticket:
        """Accept ``/imagine text`` (plus typed options): charged, stored, queued; or raise."""
        user = await self._active_user(who)
        request = parse_imagine(
            text, caps=self.caps, defaults=accounts.defaults_from(user.settings),
            user_id=who.user_id, platform=who.platform, **options,
        )
        return await self._submit(who, user, request, target=target, dedupe=request.seed is not None)

    async def reroll(self, who: Who, job_id: str, *, target: dict[str, Any] | None = None) -> Ticket:
        """The same request as job ``job_id`` with a new seed, charged to ``who``."""
        user = await self._active_user(who)
        source = await self._job(job_id)
        base = self._request_from(source.request)
        seed = random_seed()
        while seed == base.seed:
            seed = random_seed()
        request = replace(base, seed=seed, user_id=who.user_id, platform=who.platform)
        return await self._submit(who, user, request, target=target, dedupe=False)

    async def variation(self, who: Who, job_id: str, index: int, *,
                        target: dict[str, Any] | None = None) -> Ticket:
        """Variations of image ``index`` (0-based) of job ``job_id`` (img2img), charged to ``who``."""
        user = await self._active_user(who)
        source = await self._job(job_id)
        found = [i for i in await images.images_for_job(self.db, job_id) if i.idx == index]
        if not found:
            raise NotFound(f"Request {job_id} has no image {index + 1}.")
        base = self._request_from(source.request)
        strength = self.config.variation_strength
        # img2img runs int(steps * strength) steps: take more steps when that would be none
        steps = next((s for s in sorted(self.caps.steps) if s >= base.steps and int(s * strength) >= 1),
                     base.steps)
        try:
            request = replace(
                base, kind="img2img", init_image=str(self.store.path_for(found[0].path).resolve()),
                strength=strength, steps=steps, seed=random_seed(),
                user_id=who.user_id, platform=who.platform,
            )
        except TypeError:
            raise NotAllowed("Variations are not available on this bot yet.") from None
        return await self._submit(who, user, self.caps.check(request), target=target, dedupe=False)

    async def _submit(self, who: Who, user: User, request: GenerationRequest, *,
                      target: dict[str, Any] | None, dedupe: bool) -> Ticket:
        """Check, charge, store and enqueue ``request``."""
        # 1. Prompt safety: nothing is charged or written for a refused prompt
        await self.moderation.check_prompt(who, request.prompt, request.negative_prompt, target)
        request = request.with_seed()
        key = jobs.request_key(request.to_dict(), self.model_id, self.checkpoint_hash)
        now = self.clock()

        # 2. An identical request with an explicit seed already made: serve the stored images
        if dedupe:
            ticket = await self._serve_cached(user, request, key, target, now)
            if ticket is not None:
                return ticket

        # 3. Quota and job row in one transaction
        window = quotas.window_start(now, self.config.quota_window)
        priority = self.config.admin_priority and self.is_admin(who)
        async with self.db.transaction() as tx:
            limit = await quotas.effective_limit(tx, user.id, self.config.daily_quota)
            if await quotas.consume(tx, user.id, request.count, limit, window) is None:
                used = await quotas.used(tx, user.id, window)
                raise QuotaExceeded(self._quota_message(request.count, used, limit, now))
            job = await jobs.create(
                tx, user_id=user.id, request=request.to_dict(), model_id=self.model_id,
                charged=request.count, quota_window=window, priority=int(priority),
                target=target, key=key, checkpoint_hash=self.checkpoint_hash,
                job_id=uuid.uuid4().hex[:12], now=now,
            )

        # 4. Only now into the queue; a refusal gives the quota back
        try:
            qjob = self.queue.submit(request, priority=priority, job_id=job.id)
        except ImagineError as err:
            await self._settle_row(job.id, "failed", str(err))
            raise
        logger.info("job %s accepted for %s (%d image(s))", job.id, who.key, request.count)
        return self._follow(job.id, request, qjob, job.target)

    async def _serve_cached(self, user: User, request: GenerationRequest, key: str,
                            target: dict[str, Any] | None, now: datetime) -> Ticket | None:
        """A done Ticket from stored images of an identical request, or None."""
        found = await jobs.find_by_request_key(self.db, key)
        if found is None:
            return None
        source = await images.images_for_job(self.db, found.id)
        if len(source) != request.count or not all(self.store.exists(i.path) for i in source):
            return None
        if any(i.safety != "ok" for i in source):  # spoilered for another scope: check again here
            return None
        async with self.db.transaction() as tx:
            job = await jobs.create(
                tx, user_id=user.id, request=request.to_dict(), model_id=self.model_id, charged=0,
                target=target, key=key, checkpoint_hash=found.checkpoint_hash,
                job_id=uuid.uuid4().hex[:12], now=now,
            )
            rows = [
                await images.add_image(tx, job.id, i.idx, i.seed, i.path, i.sha256, i.width,
                                       i.height, i.bytes, i.safety, now)
                for i in source
            ]
            await jobs.mark_done(tx, job.id, found.checkpoint_hash, now)
        logger.info("job %s served from job %s's images", job.id, found.id)
        delivery = self._delivery(job.id, request, rows, cached=True, target=job.target)
        ticket = Ticket(job.id, request, target=job.target)
        ticket._settle(Finished(delivery), delivery=delivery)
        return ticket

    # -- following a job -----------------------------------------------------------------------

    def _follow(self, job_id: str, request: GenerationRequest, qjob: gq.Job,
                target: dict[str, Any]) -> Ticket:
        ticket = Ticket(job_id, request, target=target, position=qjob.position, eta=qjob.eta)
        self._tickets[job_id] = ticket
        self._tasks[job_id] = asyncio.create_task(self._consume(ticket, qjob), name=f"job-{job_id}")
        return ticket

    async def _consume(self, ticket: Ticket, qjob: gq.Job) -> None:
        """Turn the queue's events into storage transitions and ticket updates."""
        job_id = ticket.job_id
        try:
            async for event in qjob.events():
                if isinstance(event, gq.Queued):
                    ticket._push(Queued(event.position, event.eta))
                elif isinstance(event, gq.Started):
                    await jobs.mark_running(self.db, job_id, self.clock())
                    ticket._push(Running(0, ticket.request.steps))
                elif isinstance(event, gq.Step):
                    ticket._push(Running(event.step, event.steps))
                elif isinstance(event, gq.Done):
                    await self._store_result(ticket, event.result)
                elif isinstance(event, gq.Cancelled):
                    await self._on_cancelled(ticket, qjob, event)
                elif isinstance(event, gq.Failed):
                    await self._settle_row(job_id, "failed", str(event.error))
                    ticket._settle(Failed(str(event.error)), error=event.error)
        except asyncio.CancelledError:
            raise  # shutting down: the row stays queued/running for recover()
        except Exception:
            ref = uuid.uuid4().hex[:8]
            logger.exception("job %s: settling failed (reference %s)", job_id, ref)
            message = _INTERNAL.format(ref=ref)
            try:
                await self._settle_row(job_id, "failed", message)
            except Exception:
                logger.exception("job %s: could not mark failed; recover() will retry it", job_id)
            ticket._settle(Failed(message), error=ImagineError(message))
        finally:
            self._tasks.pop(job_id, None)
            self._tickets.pop(job_id, None)

    async def _on_cancelled(self, ticket: Ticket, qjob: gq.Job, event: gq.Cancelled) -> None:
        try:
            await qjob.result()
        except JobCancelled as err:
            error: JobCancelled = err
        else:  # pragma: no cover - a cancelled job has no result
            error = JobCancelled("Your request was cancelled.")
        if isinstance(error, ShuttingDown) or event.reason == "shutdown":
            # Not run and not refunded: the row stays queued and runs after the restart.
            ticket._settle(Failed(str(error)), error=error)
            return
        await self._settle_row(ticket.job_id, "cancelled")
        ticket._settle(Cancelled(str(error)), error=error)

    async def _store_result(self, ticket: Ticket, result: GenerationResult) -> None:
        """Check the images, store them with their rows, mark done; or fail and refund."""
        job_id = ticket.job_id
        verdicts = await self.moderation.check_images(f"{result.request.platform}:{result.request.user_id}",
                                                      ticket.target, result.images, job_id=job_id)
        if "blocked" in verdicts:
            logger.warning("job %s: %d image(s) blocked by the image checker", job_id, verdicts.count("blocked"))
            await self._settle_row(job_id, "failed", _BLOCKED_IMAGE)
            ticket._settle(Failed(_BLOCKED_IMAGE), error=ImagineError(_BLOCKED_IMAGE))
            return
        request = result.request
        files = []
        for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
            params = {**request.to_dict(), "seed": seed, "index": index, "job_id": job_id,
                      "model": result.model, "first_seed": request.seed}
            params.pop("user_id", None)
            params.pop("platform", None)
            files.append(await asyncio.to_thread(self._put_png, image, params))
        now = self.clock()
        checkpoint = self.checkpoint_hash
        async with self.db.transaction() as tx:
            row = await jobs.get(tx, job_id)
            if row is None or row.status not in _ACTIVE:
                logger.info("job %s became %s while storing; images dropped", job_id,
                            row.status if row else "deleted")
                stored_rows: list[Image] | None = None
            else:
                stored_rows = [
                    await images.add_image(tx, job_id, index, seed, path, sha, width, height, size,
                                           verdict, now)
                    for index, (seed, verdict, (path, sha, width, height, size))
                    in enumerate(zip(result.seeds, verdicts, files))
                ]
                await jobs.mark_done(tx, job_id, checkpoint, now)
                await model_versions.record_seen(tx, result.model, checkpoint or "unknown", now)
        if stored_rows is None:
            ticket._settle(Cancelled(), error=JobCancelled("Your request was cancelled."))
            return
        delivery = self._delivery(job_id, request, stored_rows, cached=False, target=ticket.target)
        ticket._settle(Finished(delivery), delivery=delivery)

    def _put_png(self, image: Any, params: dict[str, Any]) -> tuple[str, str, int, int, int]:
        """Encode and store one image (worker thread): (path, sha256, width, height, bytes)."""
        data = png_with_metadata(image, params)
        path, sha = self.store.put(data, "png")
        return path, sha, image.width, image.height, len(data)

    async def _settle_row(self, job_id: str, status: str, error: str = "") -> int:
        """Mark the row failed/cancelled and refund it (once); the images refunded."""
        now = self.clock()
        if status == "failed":
            await jobs.mark_failed(self.db, job_id, error, now)
        else:
            await jobs.mark_cancelled(self.db, job_id, now)
        return await quotas.refund(self.db, job_id)

    async def mark_delivered(self, job_id: str) -> bool:
        """Record that a front end sent the images; False if it was already delivered."""
        return await jobs.mark_delivered(self.db, job_id, self.clock())

    # -- delivery refs (front ends find a job again by a message they sent) --------------------

    async def record_refs(self, job_id: str, refs: dict[str, Any]) -> dict[str, Any]:
        """Merge a front end's refs (e.g. sent message ids) into the job's target; the new target."""
        return await jobs.update_target(self.db, job_id, refs)

    async def find_by_ref(self, name: str, value: Any) -> Delivery | None:
        """The newest job whose target has ``target[name] == value``, with its stored images."""
        row = await jobs.find_by_target(self.db, name, value)
        return None if row is None else await self._delivery_of(row)

    async def job_delivery(self, job_id: str) -> Delivery:
        """A job's stored images, canonical text and target (NotFound when there is no such job)."""
        return await self._delivery_of(await self._job(job_id))

    async def _delivery_of(self, row: Job) -> Delivery:
        rows = await images.images_for_job(self.db, row.id)
        return self._delivery(row.id, GenerationRequest.from_dict(row.request), rows, cached=False,
                              target=row.target)

    # -- messages that show a job (reactions rate what a message shows) ---------------------------

    async def remember_message(self, job_id: str, message_id: str | int, *, index: int | None = None,
                               **refs: Any) -> dict[str, Any]:
        """Record that message ``message_id`` shows image ``index`` of a job (None: all of them)."""
        changes = {"messages": {str(int(message_id)): -1 if index is None else int(index)}, **refs}
        return await jobs.update_target(self.db, job_id, changes)

    async def find_message(self, platform: str, message_id: str | int) -> tuple[str, int | None] | None:
        """(job id, image index or None for all) of a message recorded by ``remember_message``."""
        found = await jobs.find_by_message(self.db, platform, message_id)
        if found is None:
            return None
        job_id, index = found
        return job_id, None if index < 0 else index

    async def rate_message(self, who: Who, message_id: str | int, stars: int,
                           source: str = "reaction") -> list[Rating]:
        """Rate the image(s) a recorded message of ``who``'s platform shows; [] for other messages."""
        images_shown = await self._message_images(who.platform, message_id)
        return [await self.rate(who, image.id, stars, source) for image in images_shown]

    async def unrate_message(self, who: Who, message_id: str | int, stars: int | None = None,
                             source: str = "reaction") -> int:
        """Remove ``who``'s ratings of what a message shows (only those of ``stars``, when given)."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return 0
        removed = 0
        for image in await self._message_images(who.platform, message_id):
            current = await ratings.get(self.db, image.id, user.id)
            if current is None or (stars is not None and current.stars != stars):
                continue
            removed += await ratings.delete(self.db, image.id, user.id, source)
        return removed

    async def _message_images(self, platform: str, message_id: str | int) -> list[Image]:
        found = await self.find_message(platform, message_id)
        if found is None:
            return []
        job_id, index = found
        return [i for i in await images.images_for_job(self.db, job_id) if index is None or i.idx == index]

    async def owns(self, who: Who, job_id: str) -> bool:
        """Whether job ``job_id`` was asked for by ``who`` (admins own every job)."""
        if self.is_admin(who):
            return True
        row = await jobs.get(self.db, job_id)
        user = await users.get(self.db, row.user_id) if row is not None else None
        return user is not None and (user.platform, user.platform_user_id) == (who.platform, who.user_id)

    async def set_dm_closed(self, who: Who, closed: bool = True) -> None:
        """Remember that direct messages to ``who`` fail (or work again)."""
        user = await self._user(who)
        if user.dm_closed != closed:
            await users.set_dm_closed(self.db, user.id, closed)

    # -- restart recovery ----------------------------------------------------------------------

    async def recover(self) -> Recovered:
        """Re-enqueue unfinished jobs (priority, not charged again); return undelivered results."""
        found = await jobs.recoverable(self.db)
        tickets: list[Ticket] = []
        for row in found.to_run:
            if row.id in self._tasks:
                continue
            try:
                request = self._request_from(row.request)
                qjob = self.queue.submit(request, priority=True, job_id=row.id)
            except ImagineError as err:
                logger.warning("job %s cannot run again: %s", row.id, err)
                await self._settle_row(row.id, "failed", str(err))
                continue
            tickets.append(self._follow(row.id, request, qjob, row.target))
        deliveries = []
        for row in found.to_deliver:
            rows = await images.images_for_job(self.db, row.id)
            try:
                request = GenerationRequest.from_dict(row.request)
            except ImagineError:
                logger.warning("job %s: stored request no longer valid; failing it", row.id)
                await self._settle_row(row.id, "failed", "This request can no longer be delivered.")
                continue
            deliveries.append(self._delivery(row.id, request, rows, cached=False, target=row.target))
        logger.info("recovered %d job(s) to run and %d to deliver", len(tickets), len(deliveries))
        return Recovered(tuple(tickets), tuple(deliveries))

    # -- history, ratings, quota, settings ------------------------------------------------------

    async def history(self, who: Who, *, page: int = 0, per_page: int = 5,
                      search: str | None = None) -> HistoryView:
        """A page of the caller's jobs, newest first, with images and ratings."""
        if isinstance(page, bool) or not isinstance(page, int) or page < 0:
            raise InvalidRequest("page", f"page must be 0 or more, not {page!r}.")
        if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= 25:
            raise InvalidRequest("per_page", f"per_page must be from 1 to 25, not {per_page!r}.")
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return HistoryView((), page, per_page, 0)
        found = await jobs.history(self.db, user.id, limit=per_page, offset=page * per_page,
                                   search=(search or "").strip() or None)
        by_job = await images.images_for_jobs(self.db, [j.id for j in found.jobs])
        entries = []
        for job in found.jobs:
            shown = []
            for image in by_job[job.id]:
                mine = await ratings.get(self.db, image.id, user.id)
                mean, count = await ratings.average(self.db, image.id)
                shown.append(HistoryImage(self._stored(image), mine.stars if mine else None, mean, count))
            entries.append(HistoryEntry(job.id, self._text(job.request), job.created_at, job.status,
                                        tuple(shown), job.error, dict(job.target)))
        return HistoryView(tuple(entries), page, per_page, found.total)

    async def rate(self, who: Who, image_id: int, stars: int | str, source: str = "button") -> Rating:
        """Set the caller's 1-5 star rating of an image."""
        if source not in RATING_SOURCES:
            raise ValueError(f"`source` must be one of {', '.join(RATING_SOURCES)}, not {source!r}")
        value = stars
        if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) < 3:
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise InvalidRequest("stars", f"A rating is a whole number of stars from 1 to 5, not {stars!r}.")
        user = await self._user(who)
        image = await images.get_image(self.db, self._image_id(image_id))
        if image is None:
            raise NotFound(f"There is no image {image_id}.")
        return await ratings.upsert(self.db, image.id, user.id, value, source, now=self.clock())

    async def unrate(self, who: Who, image_id: int, source: str | None = None) -> bool:
        """Remove the caller's rating (only one from ``source``, when given); whether one was."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return False
        return await ratings.delete(self.db, self._image_id(image_id), user.id, source)

    async def quota(self, who: Who) -> QuotaStatus:
        """(used, limit, remaining, resets_at) for the caller's current window."""
        user = await self._user(who)
        return await self._quota_status(user.id)

    async def _quota_status(self, user_id: int) -> QuotaStatus:
        now = self.clock()
        window = quotas.window_start(now, self.config.quota_window)
        limit = await quotas.effective_limit(self.db, user_id, self.config.daily_quota)
        used = await quotas.used(self.db, user_id, window)
        return QuotaStatus(used, limit, max(0, limit - used),
                           quotas.next_reset(now, self.config.quota_window))

    async def settings(self, who: Who, **changes: Any) -> dict[str, Any]:
        """Validate and save ``changes`` (None resets a key); every setting's value after."""
        user = await self._user(who)
        clean = accounts.validate_settings(changes, self.caps)
        saved = user.settings
        if clean:
            saved = await users.update_settings(self.db, user.id, clean)
        return accounts.effective_settings(saved, self.caps)

    # -- cancel, forget, export -----------------------------------------------------------------

    async def cancel(self, who: Who, job_id: str | None = None) -> CancelOutcome:
        """Cancel one of the caller's queued/running jobs (latest when no id) and refund it."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            raise NotFound("You have no queued or running request to cancel.")
        if job_id is None:
            page = await jobs.history(self.db, user.id, limit=1, statuses=_ACTIVE)
            if not page.jobs:
                raise NotFound("You have no queued or running request to cancel.")
            row = page.jobs[0]
        else:
            row = await jobs.get(self.db, job_id)
            if row is None or row.user_id != user.id:
                raise NotFound(f"You have no request {job_id}.")
            if row.status not in _ACTIVE:
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
        assert after is not None
        logger.info("job %s cancelled by %s", row.id, who.key)
        return CancelOutcome(row.id, self._text(row.request), after.status,
                             after.charged if after.refunded else 0)

    async def forget(self, who: Who) -> ForgetOutcome:
        """Cancel the caller's active jobs and delete their rows, exports and unshared files."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return ForgetOutcome(0, 0)
        active = await jobs.history(self.db, user.id, limit=10_000, statuses=_ACTIVE)
        waiting = []
        for row in active.jobs:
            qjob = self.queue.job(row.id)
            if qjob is not None:
                qjob.cancel()
            if row.id in self._tasks:
                waiting.append(self._tasks[row.id])
        if waiting:
            await asyncio.wait(waiting, timeout=self.config.settle_timeout_s)
        orphans = await privacy.forget(self.db, user.id)
        removed = await asyncio.to_thread(self.store.delete, orphans)
        removed += await asyncio.to_thread(_remove_tree, self._export_dir(who))
        logger.info("forgot %s: %d job(s) cancelled, %d file(s) deleted", who.key, len(active.jobs), removed)
        return ForgetOutcome(len(active.jobs), removed)

    async def export(self, who: Who) -> Path:
        """A zip of everything stored about the caller: export.json and their images."""
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
        stamp = self.clock().strftime("%Y%m%dT%H%M%S")
        dest = self._export_dir(who) / f"export-{stamp}-{uuid.uuid4().hex[:6]}.zip"
        path = await asyncio.to_thread(accounts.write_export_zip, data, files, dest)
        logger.info("exported %s to %s", who.key, path)
        return path.resolve()

    def _export_dir(self, who: Who) -> Path:
        digest = hashlib.sha256(who.key.encode("utf-8")).hexdigest()[:16]
        return self.config.data_dir / "exports" / digest

    # -- admin ---------------------------------------------------------------------------------

    def _require_admin(self, admin: Who) -> None:
        if not self.is_admin(admin):
            raise NotAllowed("Only the bot's admins can do that.")

    async def admin_set_quota(self, admin: Who, platform: str, user_id: str | int,
                              limit: int | None) -> QuotaStatus:
        """Give a user their own limit per window (None: back to the default)."""
        self._require_admin(admin)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidRequest("limit", f"The limit must be a whole number, 0 or more, not {limit!r}.")
        user = await users.get_or_create(self.db, platform, str(user_id))
        await quotas.set_override(self.db, user.id, limit)
        logger.info("%s set quota of %s:%s to %s", admin.key, platform, user_id, limit)
        return await self._quota_status(user.id)

    async def admin_block(self, admin: Who, platform: str, user_id: str | int) -> None:
        """Refuse all further requests from a user."""
        self._require_admin(admin)
        user = await users.get_or_create(self.db, platform, str(user_id))
        await users.set_blocked(self.db, user.id, True)
        logger.info("%s blocked %s:%s", admin.key, platform, user_id)

    async def admin_unblock(self, admin: Who, platform: str, user_id: str | int) -> None:
        """Accept requests from a blocked user again."""
        self._require_admin(admin)
        user = await users.get_or_create(self.db, platform, str(user_id))
        await users.set_blocked(self.db, user.id, False)
        logger.info("%s unblocked %s:%s", admin.key, platform, user_id)

    async def admin_stats(self, admin: Who) -> dict[str, Any]:
        """Job, image and user counts plus the queue's state."""
        self._require_admin(admin)
        stats = await jobs.stats(self.db, self.clock())
        snapshot = self.queue.snapshot()
        stats["queue"] = {
            "queued_jobs": snapshot.queued_jobs, "queued_images": snapshot.queued_images,
            "running_jobs": len(snapshot.running_jobs), "batches_run": snapshot.batches_run,
            "accepting": snapshot.accepting,
        }
        stats["model"] = self.model_id
        return stats

    # -- helpers -------------------------------------------------------------------------------

    async def _user(self, who: Who) -> User:
        return await users.get_or_create(self.db, who.platform, who.user_id, who.display_name)

    async def _active_user(self, who: Who) -> User:
        user = await self._user(who)
        if user.blocked:
            raise NotAllowed("You are blocked from making images on this bot.")
        await self.moderation.admit(who)  # strike block, cooldown, request spacing (Restricted)
        return user

    async def _job(self, job_id: str) -> Job:
        row = await jobs.get(self.db, job_id)
        if row is None:
            raise NotFound(f"There is no request {job_id}.")
        return row

    def _request_from(self, data: dict[str, Any]) -> GenerationRequest:
        """A stored request dict as a request this model can run (InvalidRequest if not)."""
        return self.caps.check(GenerationRequest.from_dict(data))

    def _text(self, data: dict[str, Any]) -> str:
        """Canonical /imagine text of a stored request (the prompt if the model changed)."""
        try:
            return render(GenerationRequest.from_dict(data), self.caps)
        except ImagineError:
            return str(data.get("prompt", ""))

    def _stored(self, row: Image) -> StoredImage:
        return StoredImage(row.id, row.idx, row.seed, self.store.path_for(row.path).resolve(),
                           row.width, row.height, row.sha256, row.safety)

    def _delivery(self, job_id: str, request: GenerationRequest, rows: list[Image], *,
                  cached: bool, target: dict[str, Any]) -> Delivery:
        try:
            text = render(request, self.caps)
        except ImagineError:
            text = request.prompt
        return Delivery(job_id, request, text, tuple(self._stored(r) for r in rows), cached, dict(target))

    @staticmethod
    def _image_id(image_id: int | str) -> int:
        if isinstance(image_id, str) and image_id.strip().isdecimal():
            return int(image_id.strip())
        if isinstance(image_id, bool) or not isinstance(image_id, int):
            raise InvalidRequest("image_id", f"An image id is a number, not {image_id!r}.")
        return image_id

    def _quota_message(self, asked: int, used: int, limit: int, now: datetime) -> str:
        remaining = max(0, limit - used)
        reset = quotas.next_reset(now, self.config.quota_window)
        wait = _duration((reset - now).total_seconds())
        period = {"hourly": "this hour", "daily": "today", "weekly": "this week"}[self.config.quota_window]
        left = "no images" if remaining == 0 else f"{remaining} image{'s' if remaining != 1 else ''}"
        return (f"You have {left} left of your {limit} {period}; this request needs {asked}. "
                f"Your quota resets at {reset:%Y-%m-%d %H:%M} UTC (in {wait}).")


def _duration(seconds: float) -> str:
    minutes = max(1, int(seconds + 59) // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


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

