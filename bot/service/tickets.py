"""What front ends hand the service and get back: identities, tickets, updates, deliveries.

Value types only (and :class:`Ticket`, the live handle of one accepted job); the service in
:mod:`bot.service` creates them, front ends read them. The errors here are shown to users as is.

A ticket's updates are the queue's own events (:mod:`generation.scheduling.events`) where they
mean the same to a user: ``Queued``, ``Running`` (the queue's ``Step``; step 0 when the batch
starts; some steps carry a live preview, and :attr:`Ticket.preview` keeps the newest), ``Failed`` and ``Cancelled`` (the quota was refunded). Only the good end is the
service's own: ``Finished`` carries the stored images where the queue's ``Done`` carried pixels.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

from generation.core.errors import ImagineError
from generation.core.request import GenerationRequest
from generation.scheduling.events import Cancelled, Failed, Queued, Step

__all__ = [
    "AlreadyAccepted",
    "CancelOutcome",
    "Cancelled",
    "Delivery",
    "FORGET_KEEPS",
    "Failed",
    "Finished",
    "ForgetOutcome",
    "HistoryEntry",
    "HistoryImage",
    "HistoryView",
    "NotAllowed",
    "NotFound",
    "QuotaExceeded",
    "Queued",
    "Recovered",
    "Running",
    "StoredImage",
    "Ticket",
    "Untold",
    "Update",
    "Via",
    "Who",
]


class QuotaExceeded(ImagineError):
    """No images left in the user's quota window."""


class NotAllowed(ImagineError):
    """The caller may not do this (blocked, not an admin, too late)."""


class NotFound(ImagineError):
    """No such job or image, or it is not the caller's."""


# -- identities ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Who:
    """A person on one platform, as a front end knows them."""

    platform: str
    user_id: str
    display_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_id", str(self.user_id))

    @property
    def key(self) -> str:
        """``platform:user_id``, the form used in ``ServiceSettings.admins``."""
        return f"{self.platform}:{self.user_id}"


@dataclass(frozen=True)
class Via:
    """The platform message a button click came from, as the platform reported it.

    Authority for a click on someone else's result: the service grants it only when this
    message is one of the job's recorded messages (``storage.messages``), so a forged button id
    or a job id typed from a private result grants nothing. ``chat_id`` is None where message
    ids are unique on their own (Discord).
    """

    chat_id: str | int | None
    message_id: str | int


# -- what front ends get back ------------------------------------------------------------------


@dataclass(frozen=True)
class StoredImage:
    """One stored image ready to send; ``index`` is 0-based, ``path`` absolute."""

    image_id: int
    index: int
    seed: int
    path: Path
    width: int
    height: int
    sha256: str
    safety: str = "ok"

    @property
    def spoiler(self) -> bool:
        """Send behind a spoiler/blur (the image checker said so)."""
        return self.safety == "spoiler"


@dataclass(frozen=True)
class Delivery:
    """A finished job's images, the canonical command text and where to send them."""

    job_id: str
    request: GenerationRequest
    text: str
    images: tuple[StoredImage, ...]
    cached: bool = False
    target: dict[str, Any] = field(default_factory=dict)
    mask: Path | None = None  # an edit's input: the source with the repainted region transparent (an overlay shows it)


Running = Step  # on the GPU: ``step`` of ``steps`` done (0 right after starting); ``preview``: a JPEG or None


@dataclass(frozen=True)
class Finished:
    """Images stored; send ``delivery``, then call ``mark_delivered``."""

    delivery: Delivery
    final: ClassVar[bool] = True


Update = Union[Queued, Running, Finished, Failed, Cancelled]


class Ticket:
    """An accepted job as a front end follows it: place in line, progress, delivery."""

    def __init__(self, job_id: str, request: GenerationRequest, *, target: dict[str, Any] | None = None,
                 position: int = 0, eta: float = 0.0, eta_measured: bool = True) -> None:
        self.job_id = job_id
        self.request = request
        self.target = dict(target or {})
        self.position = position
        self.eta = eta
        self.eta_measured = eta_measured  # False: ``eta`` is a guess (no batch timed yet)
        self.notes: tuple[str, ...] = ()  # what to tell the user besides progress (e.g. the refined prompt)
        self.preview: bytes | None = None  # the newest live preview (a small JPEG), kept after steps without one
        self.previews_refused = False  # the image check found something in a preview: no more are shown
        self._last: Update = Queued(position, eta, eta_measured)
        self._inboxes: list[asyncio.Queue[Update]] = []
        self._settled = asyncio.Event()
        self._delivery: Delivery | None = None
        self._error: ImagineError | None = None

    def __repr__(self) -> str:
        return f"<Ticket {self.job_id} {type(self._last).__name__}>"

    @property
    def done(self) -> bool:
        return self._settled.is_set()

    @property
    def cached(self) -> bool:
        return self._delivery is not None and self._delivery.cached

    @property
    def last(self) -> Update:
        """The latest update."""
        return self._last

    async def updates(self) -> AsyncIterator[Update]:
        """The latest update, then each new one; ends after Finished, Failed or Cancelled."""
        inbox: asyncio.Queue[Update] = asyncio.Queue()
        inbox.put_nowait(self._last)
        if not self._last.final:
            self._inboxes.append(inbox)
        try:
            while True:
                update = await inbox.get()
                yield update
                if update.final:
                    return
        finally:
            if inbox in self._inboxes:
                self._inboxes.remove(inbox)

    async def delivery(self) -> Delivery:
        """The stored images; raises the ImagineError the job ended with."""
        await self._settled.wait()
        if self._error is not None:
            raise self._error
        if self._delivery is None:  # pragma: no cover - _settle gives one or the other
            raise ImagineError("This request ended without a result.")
        return self._delivery

    # -- the service moves the ticket on ----------------------------------------------------------

    def push(self, update: Queued | Running) -> None:
        """A new place in line or step; ignored once the ticket is settled."""
        if self._last.final:
            return
        if isinstance(update, Queued):
            self.position, self.eta, self.eta_measured = update.position, update.eta, update.measured
        elif update.preview is not None:
            self.preview = update.preview
        self._send(update)

    def settle(self, update: Finished | Failed | Cancelled) -> None:
        """The one final update: images to deliver, or the error :meth:`delivery` raises."""
        if self._settled.is_set():
            return
        if isinstance(update, Finished):
            self._delivery = update.delivery
        else:
            self._error = update.error
        self.position, self.eta = 0, 0.0
        self._send(update)
        self._inboxes.clear()
        self._settled.set()

    def _send(self, update: Update) -> None:
        self._last = update
        for inbox in list(self._inboxes):
            inbox.put_nowait(update)


@dataclass(frozen=True)
class HistoryImage:
    """An image in /history with its ratings."""

    image: StoredImage
    my_stars: int | None
    average: float | None
    ratings: int


@dataclass(frozen=True)
class HistoryEntry:
    """One job in /history."""

    job_id: str
    text: str
    created_at: str
    status: str
    images: tuple[HistoryImage, ...]
    error: str | None = None
    target: dict[str, Any] = field(default_factory=dict)  # delivery refs (e.g. a message link)
    original_prompt: str | None = None  # what the user typed, when --refine rewrote it
    input_image: Path | None = None  # the image the user sent to start from (img2img uploads)


@dataclass(frozen=True)
class HistoryView:
    """One page of /history, newest first."""

    entries: tuple[HistoryEntry, ...]
    page: int
    per_page: int
    total: int

    @property
    def has_more(self) -> bool:
        return (self.page + 1) * self.per_page < self.total

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class CancelOutcome:
    """What /cancel did."""

    job_id: str
    text: str
    status: str
    refunded: int


class AlreadyAccepted(Exception):
    """This platform request already made job ``job_id`` (it was processed before a restart).

    Not an :class:`ImagineError`: there is nothing to tell the user; the job is followed by
    recovery, so the front end only skips the request.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"already accepted as job {job_id}")
        self.job_id = job_id


FORGET_KEEPS = (
    "Kept, because they protect others: any block, strikes and cooldowns, the images you used "
    "from this quota window (and this hour's /describe count), and any personal limit an admin set."
)


@dataclass(frozen=True)
class ForgetOutcome:
    """What /forget removed (what it keeps is :data:`FORGET_KEEPS`)."""

    jobs_cancelled: int
    files_deleted: int
    job_ids: tuple[str, ...] = ()  # the jobs deleted: a front end removes what it wrote of them


@dataclass(frozen=True)
class Untold:
    """A failed or cancelled job whose message was never shown (a crash came first).

    A front end shows ``message`` where the job's result would have gone (its ``target``), takes
    back its acknowledgement, then calls ``service.mark_told(job_id)``: told exactly once.
    """

    job_id: str
    message: str
    cancelled: bool
    text: str  # the request, as the user would recognise it
    target: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recovered:
    """After a restart: jobs running again (follow their tickets), deliveries still owed, and
    failures never told."""

    tickets: tuple[Ticket, ...]
    deliveries: tuple[Delivery, ...]
    untold: tuple[Untold, ...] = ()
