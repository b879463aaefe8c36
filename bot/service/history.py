"""History and ratings: a user's past jobs with their images, stars from buttons and reactions.

Reactions rate what a message shows: front ends record which message shows which job (and
image) with :meth:`HistoryPart.remember_message`, and a reaction on that message rates it.
"""

from __future__ import annotations


from bot.service.context import ServiceContext
from bot.service.tickets import HistoryEntry, HistoryImage, HistoryView, NotFound, Who
from generation.core.errors import InvalidRequest
from storage import images, jobs, messages, ratings, users
from storage.records import RATING_SOURCES, Image, Rating

__all__ = ["HistoryPart"]


class HistoryPart(ServiceContext):
    """History pages, ratings, and the messages that show a job."""

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
                                        tuple(shown), job.error, dict(job.target),
                                        job.request.get("original_prompt")))
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

    async def remember_message(self, job_id: str, platform: str, chat_id: str | int | None,
                               message_id: str | int, *, index: int | None = None) -> None:
        """Record that a sent message shows image ``index`` (0-based) of a job (None: all of them)."""
        await messages.remember(self.db, platform, chat_id, message_id, job_id, index)

    async def find_message(self, platform: str, chat_id: str | int | None,
                           message_id: str | int) -> tuple[str, int | None] | None:
        """(job id, image index or None for all) of a message recorded by ``remember_message``."""
        return await messages.find(self.db, platform, chat_id, message_id)

    async def rate_message(self, who: Who, chat_id: str | int | None, message_id: str | int, stars: int,
                           source: str = "reaction") -> list[Rating]:
        """A star reaction was added: it becomes ``who``'s rating of what the message shows.

        The one rule for reactions on every platform: the newest star reaction you add is your
        rating; removing the reaction that set your current rating clears it (see
        :meth:`unrate_message`); other reactions change nothing. Messages that show no job: [].
        """
        images_shown = await self._message_images(who.platform, chat_id, message_id)
        return [await self.rate(who, image.id, stars, source) for image in images_shown]

    async def unrate_message(self, who: Who, chat_id: str | int | None, message_id: str | int,
                             stars: int | None = None, source: str = "reaction") -> int:
        """A star reaction was removed: clear ``who``'s rating of what the message shows, but only
        where it is still the one that reaction set (``stars``; None clears any)."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return 0
        removed = 0
        for image in await self._message_images(who.platform, chat_id, message_id):
            current = await ratings.get(self.db, image.id, user.id)
            if current is None or (stars is not None and current.stars != stars):
                continue
            removed += await ratings.delete(self.db, image.id, user.id, source)
        return removed

    async def _message_images(self, platform: str, chat_id: str | int | None,
                              message_id: str | int) -> list[Image]:
        found = await self.find_message(platform, chat_id, message_id)
        if found is None:
            return []
        job_id, index = found
        return [i for i in await images.images_for_job(self.db, job_id) if index is None or i.idx == index]
