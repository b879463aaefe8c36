"""Jobs: accept /imagine, reroll and variation requests, follow them through the queue, recover.

The life of one accepted request::

    imagine()  user row → blocked? → parse with saved defaults → prompt check → dedupe hit?
               → BEGIN: consume quota + insert job (queued, charged) COMMIT → queue.submit
               (bot/service/accepting.py: shared transactions, shielded from a caller's cancel)
    consumer   Started → mark_running; Done → image check → PNGs into the store → image rows
               + mark_done (one transaction) → Finished(delivery)
               Failed / blocked image → mark_failed + refund;  Cancelled → mark_cancelled + refund
    front end  sends the images → mark_delivered() (False: already delivered, skip); shows a
               failure → mark_told() (both in bot/service/outcomes.py)
    restart    recover(): queued/running rows run again (priority, not charged again);
               done-but-undelivered rows come back as Deliveries to send, failures never
               told as Untold; failed rows still charged (an older version) are refunded

An uploaded image's checks live in :mod:`bot.service.uploads`; cancelling and the outcome
bookkeeping in :mod:`bot.service.outcomes`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from typing import Any

from bot.options import parse_imagine
from bot.service import accounts_rules
from bot.service.accepting import AcceptingPart
from bot.service.context import Origin
from bot.service.refining import refine_request
from bot.service.scoring import drain as drain_scoring
from bot.service.scoring import score_later
from bot.service.uploads import checked_upload, prompt_for, store_upload
from bot.service.tickets import (
    Cancelled,
    Delivery,
    Failed,
    Finished,
    NotFound,
    Recovered,
    Running,
    Ticket,
    Untold,
    Via,
    Who,
)
from generation.core.errors import ImagineError, InvalidRequest
from generation.core.request import GenerationRequest, GenerationResult, random_seed
from generation.core.sizes import nearest_bucket
from generation.scheduling.events import Done, Started
from generation.scheduling.job import Job as QueueJob
from storage import images, jobs, model_versions
from storage.files import png_with_metadata
from storage.db import Transaction
from storage.records import Image

__all__ = ["JobsPart", "Origin"]

logger = logging.getLogger(__name__)

_BLOCKED_IMAGE = (
    "An image was blocked by the image safety filter, so nothing was sent. "
    "Your quota was refunded; try a different prompt."
)
_INTERNAL = "Something went wrong while saving your images (reference {ref}); your quota was refunded."


class JobsPart(AcceptingPart):
    """Submitting, following, storing and recovering jobs (cancelling: :mod:`.outcomes`)."""

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
        await drain_scoring(self, timeout or self.config.settle_timeout_s)
        await self.writes.flush()

    async def imagine(self, who: Who, text: str, *, target: dict[str, Any] | None = None,
                      origin: Origin | None = None, spaced: bool = True, image: bytes | None = None,
                      strength: float | None = None, **options: Any) -> Ticket:
        """Accept ``/imagine text`` (plus typed options): charged, stored, queued; or raise.

        ``origin`` (platform, inbox key) ties the job to the stored platform request: the job
        row and "handled" commit together, and a second call for the same origin raises
        :class:`AlreadyAccepted` (before any limit) instead of making (and charging) a second job.
        ``spaced=False``: the chats' request spacing does not apply (API keys: their own rate limit).
        ``image`` (the bytes of a file the user sent) makes it start from that image at ``strength``
        (:mod:`bot.service.uploads`: checked, fitted and stored before anything is charged); without
        a prompt, the prompt stored in the image (or a neutral one) is used.
        """
        await self._raise_if_accepted(origin)  # a replayed request: nothing runs again, refinement included
        user = await self._active_user(who, spaced=spaced)
        upload = await checked_upload(image) if image is not None else None
        notes: tuple[str, ...] = ()
        if image is not None:
            text, notes = prompt_for(text, image)
        several = len(self.catalogue) > 1
        rollout = await self._rollout(who)  # a candidate's share of the requests that name no model

        def parse(rollout: str) -> GenerationRequest:
            return parse_imagine(
                text, caps=self.caps,
                defaults=accounts_rules.defaults_from(user.settings, refine=self.refiner is not None),
                user_id=who.user_id, platform=who.platform, image_size=upload.size if upload else None,
                strength=strength, default_strength=self.config.image_strength,
                models=self.catalogue if several else None, rollout=rollout, **options,
            )

        try:
            request = parse(rollout)
        except InvalidRequest:
            if not rollout:
                raise
            request = parse("")  # what the candidate cannot do (an image, a negative prompt) the default does
        if request.refine:  # prompt power: a small LLM rewrites the prompt (bot/service/refining.py)
            request, refined = await refine_request(self, who, request, target)
            notes += refined
        request, stored = await store_upload(self, who, upload, request, target) if upload else (request, None)
        ticket = await self._submit(who, user, request, target=target,
                                    dedupe=request.seed is not None and upload is None, origin=origin,
                                    upload=stored)
        ticket.notes = notes
        return ticket

    async def reroll(self, who: Who, job_id: str, *, target: dict[str, Any] | None = None,
                     origin: Origin | None = None, via: Via | None = None) -> Ticket:
        """The same request as job ``job_id`` with a new seed, charged to ``who``.

        ``who`` owns the job, is an admin, or clicked ``via`` one of its recorded messages.
        """
        await self._raise_if_accepted(origin)
        user = await self._active_user(who)
        source = await self._acting_on(who, job_id, via=via)
        base = self._request_from(source.request)
        seed = random_seed()
        while seed == base.seed:
            seed = random_seed()
        request = replace(base, seed=seed, user_id=who.user_id, platform=who.platform)
        return await self._submit(who, user, request, target=target, dedupe=False, origin=origin)

    async def variation(self, who: Who, job_id: str, index: int, *,
                        target: dict[str, Any] | None = None, origin: Origin | None = None,
                        via: Via | None = None) -> Ticket:
        """Variations of image ``index`` (0-based) of job ``job_id`` (img2img), charged to ``who``
        (its owner, an admin, or someone who clicked ``via`` a message showing it)."""
        await self._raise_if_accepted(origin)
        user = await self._active_user(who)
        source = await self._acting_on(who, job_id, via=via, index=index)
        found = [i for i in await images.images_for_job(self.db, job_id) if i.idx == index]
        if not found:
            raise NotFound(f"Request {job_id} has no image {index + 1}.")
        base = self._request_from(source.request)
        base = replace(base, model=self._model_for("img2img", base.model))  # Flux: the SDXL default varies it
        caps = self.caps_for(base.model)
        if (base.width, base.height) not in caps.buckets():  # a size of the model that made it (Flux's 16:9)
            width, height = nearest_bucket(base.width, base.height, caps.base_resolution)
            base = replace(base, width=width, height=height)  # the nearest of this model's (cropped to fit)
        strength = self.config.variation_strength
        # img2img runs int(steps * strength) steps: take more steps when that would be none
        steps = next((s for s in sorted(self.caps_for(base.model).steps) if s >= base.steps and int(s * strength) >= 1),
                     base.steps)
        request = replace(
            base, kind="img2img", init_image=str(self.store.path_for(found[0].path).resolve()),
            strength=strength, steps=steps, seed=random_seed(), variation_of=f"{job_id}#{index + 1}",
            user_id=who.user_id, platform=who.platform,
        )
        return await self._submit(who, user, self.caps_for(request.model).check(request), target=target, dedupe=False,
                                  origin=origin)

    def _follow(self, job_id: str, request: GenerationRequest, qjob: QueueJob,
                target: dict[str, Any]) -> Ticket:
        ticket = Ticket(job_id, request, target=target, position=qjob.position, eta=qjob.eta,
                        eta_measured=self.queue.eta_measured)
        self._tickets[job_id] = ticket
        self._tasks[job_id] = asyncio.create_task(self._consume(ticket, qjob), name=f"job-{job_id}")
        return ticket

    async def _consume(self, ticket: Ticket, qjob: QueueJob) -> None:
        """Record the queue's events in storage; pass them on as the ticket's updates."""
        job_id = ticket.job_id
        try:
            async for event in qjob.events():
                if isinstance(event, Started):
                    now = self.clock()
                    await self.writes.run(lambda tx, now=now: jobs.mark_running(tx, job_id, now))
                    ticket.push(Running(0, ticket.request.steps))
                elif isinstance(event, Done):
                    await self._store_result(ticket, event.result)
                elif isinstance(event, Cancelled):
                    await self._on_cancelled(ticket, event)
                elif isinstance(event, Failed):
                    await self._settle_row(job_id, "failed", event.message)
                    ticket.settle(event)
                else:  # Queued and Step (Running): the ticket's updates (a preview only once checked)
                    ticket.push(await self._checked_preview(ticket, event) if getattr(event, "preview", None) else event)
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
            ticket.settle(Failed(ImagineError(message)))
        finally:
            self._tasks.pop(job_id, None)
            self._tickets.pop(job_id, None)

    async def _checked_preview(self, ticket: Ticket, step: Any) -> Any:
        """``step``, without its preview (and later ones) unless the image check finds nothing in it."""
        if not ticket.previews_refused and await self.moderation.preview_ok(step.preview):
            return step
        ticket.previews_refused = True
        return replace(step, preview=None)

    async def _on_cancelled(self, ticket: Ticket, event: Cancelled) -> None:
        if event.reason == "shutdown":
            # Not run and not refunded: the row stays queued and runs after the restart.
            ticket.settle(Failed(event.error))
            return
        await self._settle_row(ticket.job_id, "cancelled")
        ticket.settle(event)

    async def _store_result(self, ticket: Ticket, result: GenerationResult) -> None:
        """Check the images, store them with their rows, mark done; or fail and refund."""
        job_id = ticket.job_id
        verdicts = await self.moderation.check_images(f"{result.request.platform}:{result.request.user_id}",
                                                      ticket.target, result.images, job_id=job_id)
        if "blocked" in verdicts:
            logger.warning("job %s: %d image(s) blocked by the image checker", job_id, verdicts.count("blocked"))
            await self._settle_row(job_id, "failed", _BLOCKED_IMAGE)
            ticket.settle(Failed(ImagineError(_BLOCKED_IMAGE)))
            return
        request = result.request
        files = []
        first = self._png_params(request, job_id, 0, result.seeds[0], result.model)  # the command: once
        for index, (image, seed) in enumerate(zip(result.images, result.seeds)):
            params = {**first, "seed": seed, "index": index}
            files.append(await asyncio.to_thread(self._put_png, image, params))
        now = self.clock()
        checkpoint = self.checkpoint_hash_for(request.model)

        async def store(tx: Transaction) -> list[Image] | None:
            # done first: a job cancelled or forgotten meanwhile is no longer active, and then
            # nothing is written for it
            if not await jobs.mark_done(tx, job_id, checkpoint, now):
                return None
            rows = [
                await images.add_image(tx, job_id, index, seed, path, sha, width, height, size, verdict, now)
                for index, (seed, verdict, (path, sha, width, height, size))
                in enumerate(zip(result.seeds, verdicts, files))
            ]
            if self._seen_model != (result.model, checkpoint, now.date()):
                await model_versions.record_seen(tx, result.model, checkpoint or "unknown", now)
                self._seen_model = (result.model, checkpoint, now.date())
            return rows

        # the jobs of one batch finish together: their writes share one transaction
        stored_rows = await self.writes.run(store)
        if stored_rows is None:
            row = await jobs.get(self.db, job_id)
            logger.info("job %s became %s while storing; images dropped", job_id,
                        row.status if row else "deleted")
            ticket.settle(Cancelled())
            return
        delivery = self._delivery(job_id, request, stored_rows, cached=False, target=ticket.target)
        ticket.settle(Finished(delivery))
        score_later(self, [row.id for row in stored_rows], result.images, first["styled_prompt"])  # [eval] clip_model

    def _put_png(self, image: Any, params: dict[str, Any]) -> tuple[str, str, int, int, int]:
        """Encode and store one image (worker thread): (path, sha256, width, height, bytes)."""
        data = png_with_metadata(image, params)
        path, sha = self.store.put(data, "png")
        return path, sha, image.width, image.height, len(data)

    async def job_delivery(self, who: Who, job_id: str, *, via: Via | None = None,
                           index: int | None = None) -> Delivery:
        """A job's stored images, canonical text and target, for ``who`` (its owner, an admin, or a
        click ``via`` one of its messages; NotFound otherwise, as when there is no such job)."""
        return await self._delivery_of(await self._acting_on(who, job_id, via=via, index=index))

    async def recover(self) -> Recovered:
        """Re-enqueue unfinished jobs (priority, not charged again); return undelivered results
        and failures never told. Failed jobs still charged (an older version's crash) are refunded."""
        await jobs.repair_unrefunded(self.db)
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
        untold = tuple(Untold(row.id, row.error or "Your request was cancelled.", row.status == "cancelled",
                              self._text(row.request), dict(row.target))
                       for row in await jobs.untold(self.db))
        logger.info("recovered %d job(s) to run, %d to deliver and %d failure(s) to tell",
                    len(tickets), len(deliveries), len(untold))
        return Recovered(tuple(tickets), tuple(deliveries), untold)
