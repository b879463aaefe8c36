"""What the web front end reads: one job's state, images by their public reference, the gallery.

Images are named by ``<job id>-<n>`` (n from 1) outside the chat platforms: job ids are random,
so references cannot be guessed, and a reference to someone else's image that is not shared
is :class:`NotFound`, like one that does not exist. The chats' name, the image's number, is
taken too, under the same rules (:meth:`GalleryPart.ref_of` turns it into the reference). Nothing is public unless shared; its owner
or an admin can unshare it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from bot.service.context import ServiceContext
from bot.service.tickets import NotAllowed, NotFound, StoredImage, Who
from generation.core.errors import ImagineError, InvalidRequest
from generation.core.request import GenerationRequest
from storage import images, inputs, jobs, shares, users
from storage.files import public_png
from storage.records import Image

__all__ = ["GalleryPage", "GalleryPart", "JobView", "SharedImage", "image_ref"]

logger = logging.getLogger(__name__)

_PUBLIC_REQUEST = ("prompt", "negative_prompt", "style", "steps", "lora", "loras", "lora_hashes", "model")


def image_ref(job_id: str, index: int) -> str:
    """The public reference of image ``index`` (0-based) of a job."""
    return f"{job_id}-{index + 1}"


@dataclass(frozen=True)
class JobView:
    """One job as the API shows it."""

    job_id: str
    status: str
    text: str
    request: dict[str, Any]
    created_at: str
    images: tuple[StoredImage, ...]
    position: int = 0
    eta: float = 0.0
    error: str | None = None
    started_at: str | None = None  # when it went onto the GPU (None: it never did)
    finished_at: str | None = None
    input_image: Path | None = None  # the picture the user sent to start from (img2img uploads)


@dataclass(frozen=True)
class SharedImage:
    """A shared image with what its gallery page shows."""

    share_id: str
    ref: str
    path: Any  # absolute Path of the file
    width: int
    height: int
    seed: int
    text: str  # the /imagine command that makes it again
    request: dict[str, Any]
    model_id: str
    average: float | None
    ratings: int
    shared_at: str
    owner_id: int


@dataclass(frozen=True)
class GalleryPage:
    items: tuple[SharedImage, ...]
    page: int
    per_page: int
    total: int

    @property
    def has_more(self) -> bool:
        return (self.page + 1) * self.per_page < self.total


class GalleryPart(ServiceContext):
    """Job state by id, images by reference, sharing and the public gallery."""

    async def job_view(self, who: Who, job_id: str) -> JobView:
        """The caller's job (NotFound for another's)."""
        row = await self._own_job(who, job_id)
        ticket = self._tickets.get(row.id)
        found = await images.images_for_job(self.db, row.id)
        sent = await inputs.for_job(self.db, row.id)
        return JobView(row.id, row.status, self._text(row.request), dict(row.request), row.created_at,
                       tuple(self._stored(i) for i in found), ticket.position if ticket else 0,
                       ticket.eta if ticket else 0.0, row.error, row.started_at, row.finished_at,
                       self.store.path_for(sent.path).resolve() if sent else None)

    async def job_input(self, who: Who, job_id: str) -> Path:
        """The file of the picture the caller sent to start job ``job_id`` from (NotFound for
        another's job, or one that started from a prompt)."""
        row = await self._own_job(who, job_id)
        sent = await inputs.for_job(self.db, row.id)
        if sent is None or not self.store.exists(sent.path):
            raise NotFound(f"Request {job_id} did not start from a picture you sent.")
        return self.store.path_for(sent.path).resolve()

    async def image_by_ref(self, who: Who | None, ref: str) -> tuple[StoredImage, str | None]:
        """(image, share id or None) of a reference the caller owns, or of a shared image."""
        image, owner = await self._image(ref)
        share_id = await shares.for_image(self.db, image.id)
        if share_id is None and not await self._is_owner(who, owner):
            raise NotFound(f"There is no image {ref}.")
        return self._stored(image), share_id

    async def ref_of(self, who: Who, ref: str) -> str:
        """``<job>-<n>`` of an image named either way, when the caller owns it, it is shared, or
        the caller is an admin (NotFound otherwise: numbers must not reveal others' references)."""
        image, owner = await self._image(ref)
        if not (self.is_admin(who) or await self._is_owner(who, owner)
                or await shares.for_image(self.db, image.id) is not None):
            raise NotFound(f"There is no image {ref}.")
        return image_ref(image.job_id, image.idx)

    async def rate_ref(self, who: Who, ref: str, stars: int | str, comment: str | None = None) -> int:
        """Rate an image by reference (yours, or a shared one), with a comment beside the rating
        when given (the comment is checked before anything is saved); its image id."""
        stored, _ = await self.image_by_ref(who, ref)
        if comment is not None:  # refused words refuse the whole call, so nothing half-saved
            self._check_comment(comment)  # type: ignore[attr-defined]
        await self.rate(who, stored.image_id, stars, "command")  # type: ignore[attr-defined]
        if comment is not None:
            await self.comment(who, stored.image_id, comment)  # type: ignore[attr-defined]
        return stored.image_id

    async def share(self, who: Who, ref: str) -> str:
        """Put one of the caller's images in the public gallery; its share id."""
        image, owner = await self._image(ref)
        if not await self._is_owner(who, owner):
            raise NotFound(f"There is no image {ref}.")
        if image.safety != "ok":
            raise NotAllowed("Images behind a spoiler cannot be shared.")
        user = await self._user(who)
        share_id = await shares.share(self.db, image.id, user.id, self.clock())
        logger.info("%s shared image %s", who.key, ref)
        return share_id

    async def unshare(self, who: Who, ref: str) -> bool:
        """Take an image out of the gallery (its owner or an admin); whether it was shared."""
        image, owner = await self._image(ref)
        if not (self.is_admin(who) or await self._is_owner(who, owner)):
            raise NotFound(f"There is no image {ref}.")
        return await shares.unshare(self.db, image.id)

    async def gallery(self, *, order: str = "new", search: str | None = None, page: int = 0,
                      per_page: int = 24) -> GalleryPage:
        """A page of shared images, newest or top rated first."""
        order = order if order in ("new", "top") else "new"
        page = max(0, page)
        rows, total = await shares.page(self.db, order=order, search=(search or "").strip() or None,
                                        limit=per_page, offset=page * per_page)
        return GalleryPage(tuple(self._shared(r) for r in rows), page, per_page, total)

    async def shared_image(self, share_id: str) -> SharedImage:
        row = await shares.by_id(self.db, share_id)
        if row is None:
            raise NotFound("This image is not shared.")
        return self._shared(row)

    async def shared_file(self, share_id: str) -> Path:
        """The public copy of a shared image: its pixels and the A1111 parameters of what its page
        shows, nothing else (no job or user id, no original prompt, no path). Made once, cached."""
        item = await self.shared_image(share_id)
        params = {**item.request, "model": item.model_id}

        def make(source: Path) -> bytes:
            with PILImage.open(source) as image:
                image.load()
                return public_png(image, params)

        return await self.derived(item.path, "public.png", make)

    async def derived(self, path: Path, variant: str, make: Callable[[Path], bytes]) -> Path:
        """A file made from stored image ``path`` (a thumbnail, another format): made once, kept on
        disk until the image is deleted (``ImageStore.derive``)."""
        return await asyncio.to_thread(self.store.derive, Path(path), variant, make)

    # -- helpers -----------------------------------------------------------------------------------

    async def _own_job(self, who: Who, job_id: str) -> Any:
        row = await jobs.get(self.db, job_id)
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if row is None or user is None or row.user_id != user.id:
            raise NotFound(f"There is no request {job_id}.")
        return row

    async def _image(self, ref: str) -> tuple[Image, int]:
        """The image named ``ref`` (``<job>-<n>`` or the chat's number) and its owner's user id."""
        try:
            image = await self._find_image(ref)
        except InvalidRequest:
            raise NotFound(f"There is no image {ref}.") from None
        row = await jobs.get(self.db, image.job_id)
        if row is None:
            raise NotFound(f"There is no image {ref}.")
        return image, row.user_id

    async def _is_owner(self, who: Who | None, owner_id: int) -> bool:
        if who is None:
            return False
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        return user is not None and user.id == owner_id

    def _shared(self, row: shares.Shared) -> SharedImage:
        stored = json.loads(row.request)
        # what a public page may show: the request as drawn, without who asked, what they typed
        # before refinement, where a variation came from, or server paths
        request = {key: stored[key] for key in _PUBLIC_REQUEST if key in stored}
        request.update(seed=row.seed, count=1, width=row.width, height=row.height)
        return SharedImage(row.id, image_ref(row.job_id, row.idx), self.store.path_for(row.path).resolve(),
                           row.width, row.height, row.seed, self._public_command(request),
                           request, row.model_id, row.average, row.ratings, row.created_at, row.owner)

    def _public_command(self, request: dict[str, Any]) -> str:
        try:
            return self._command(GenerationRequest.from_dict(request))
        except ImagineError:
            return str(request.get("prompt", ""))
