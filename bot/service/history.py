"""History and ratings: a user's past jobs with their images, stars from buttons and reactions,
and the comments users add beside their ratings.

Reactions rate what a message shows: front ends record which message shows which job (and
image) with :meth:`HistoryPart.remember_message`, and a reaction on that message rates it.
"""

from __future__ import annotations


from bot.service.context import ServiceContext
from bot.service.tickets import HistoryEntry, HistoryImage, HistoryView, NotFound, Via, Who
from generation.core.errors import ImagineError, InvalidRequest
from storage import images, inputs, jobs, messages, ratings, users
from storage.ratings import MAX_COMMENT_CHARS
from storage.records import RATING_SOURCES, Image, Rating

__all__ = ["MAX_COMMENT_CHARS", "BlockedComment", "HistoryPart"]


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
        sent = await inputs.for_jobs(self.db, [j.id for j in found.jobs])  # uploads they started from
        entries = []
        for job in found.jobs:
            shown = []
            for image in by_job[job.id]:
                mine = await ratings.get(self.db, image.id, user.id)
                mean, count = await ratings.average(self.db, image.id)
                shown.append(HistoryImage(self._stored(image), mine.stars if mine else None, mean, count))
            entries.append(HistoryEntry(job.id, self._text(job.request), job.created_at, job.status,
                                        tuple(shown), job.error, dict(job.target),
                                        job.request.get("original_prompt"),
                                        self.store.path_for(sent[job.id].path).resolve() if job.id in sent else None))
        return HistoryView(tuple(entries), page, per_page, found.total)

    async def rate(self, who: Who, image_id: int | str, stars: int | str, source: str = "button", *,
                   via: Via | None = None) -> Rating:
        """Set the caller's 1-5 star rating of an image (its number, or ``<job>-<n>``): their own,
        a shared one, or one shown on the message they clicked (``via``); another's private
        image is NotFound."""
        if source not in RATING_SOURCES:
            raise ValueError(f"`source` must be one of {', '.join(RATING_SOURCES)}, not {source!r}")
        value = stars
        if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) < 3:
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise InvalidRequest("stars", f"A rating is a whole number of stars from 1 to 5, not {stars!r}.")
        try:
            image = await self._find_image(image_id)
        except NotFound:
            image = None
        if image is None or not await self._may_see_image(who, image, via=via):
            raise NotFound(f"There is no image {image_id} that you can rate: rate your own images, "
                           "shared ones, or with the buttons under a result you can see.")
        return await self._rate_image(who, image, value, source)

    async def _rate_image(self, who: Who, image: Image, stars: int, source: str) -> Rating:
        user = await self._user(who)
        return await ratings.upsert(self.db, image.id, user.id, stars, source, now=self.clock())

    async def unrate(self, who: Who, image_id: int, source: str | None = None) -> bool:
        """Remove the caller's rating (only one from ``source``, when given); whether one was."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return False
        return await ratings.delete(self.db, self._image_id(image_id), user.id, source)

    async def comment(self, who: Who, image_id: int | str, text: str) -> Rating:
        """Put a comment beside the caller's rating of an image (its number, or ``<job>-<n>``;
        rate it first); it passes the prompt filter like a prompt does."""
        try:
            found_image = await self._find_image(image_id)
        except NotFound:
            raise InvalidRequest("comment", "Rate the image first (1–5 stars), then add your comment.") from None
        found = await self.comment_images(who, [found_image.id], text)
        if not found:
            raise InvalidRequest("comment", "Rate the image first (1–5 stars), then add your comment.")
        return found[0]

    async def comment_job(self, who: Who, job_id: str, text: str, index: int | None = None) -> list[Rating]:
        """Comment on the images of a job (image ``index`` only, 0-based, when given) that the
        caller has rated; InvalidRequest when they rated none of them."""
        shown = [i for i in await images.images_for_job(self.db, job_id) if index is None or i.idx == index]
        found = await self.comment_images(who, [i.id for i in shown], text)
        if not found:
            raise InvalidRequest("comment", "Rate the image first (1–5 stars), then add your comment.")
        return found

    async def comment_message(self, who: Who, chat_id: str | int | None, message_id: str | int,
                              text: str) -> list[Rating] | None:
        """A reply to a message that shows a job: the comment on what it shows (as
        :meth:`comment_job`); None when the message shows no job."""
        found = await self.find_message(who.platform, chat_id, message_id)
        if found is None:
            return None
        return await self.comment_job(who, found[0], text, found[1])

    async def rated_count(self, who: Who, job_id: str, index: int | None = None) -> int:
        """How many of a job's images (image ``index`` only, when given) the caller has rated."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return 0
        shown = [i for i in await images.images_for_job(self.db, job_id) if index is None or i.idx == index]
        return sum([await ratings.get(self.db, i.id, user.id) is not None for i in shown])

    async def comment_images(self, who: Who, image_ids: list[int], text: str) -> list[Rating]:
        """The comment beside the caller's rating of each of ``image_ids`` they rated."""
        comment = self._check_comment(text)
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        if user is None:
            return []
        saved = [await ratings.set_comment(self.db, image_id, user.id, comment, now=self.clock())
                 for image_id in image_ids]
        return [rating for rating in saved if rating is not None]

    def _check_comment(self, text: str) -> str:
        """The comment as stored (spaces collapsed), or the error saying what to change."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequest("comment", "The comment is empty: write what you think of the image.")
        comment = " ".join(text.split())
        if len(comment) > MAX_COMMENT_CHARS:
            raise InvalidRequest("comment", f"The comment is {len(comment)} characters long; "
                                            f"the limit is {MAX_COMMENT_CHARS}.")
        verdict = self.moderation.prompt_checker.check(comment, "")
        if not verdict.allowed:
            raise BlockedComment(verdict.category or "not allowed")
        return comment

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
        if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
            raise InvalidRequest("stars", f"A rating is a whole number of stars from 1 to 5, not {stars!r}.")
        if source not in RATING_SOURCES:
            raise ValueError(f"`source` must be one of {', '.join(RATING_SOURCES)}, not {source!r}")
        # the message is one the platform showed them: what it shows, they may rate
        images_shown = await self._message_images(who.platform, chat_id, message_id)
        return [await self._rate_image(who, image, stars, source) for image in images_shown]

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


class BlockedComment(ImagineError):
    """A comment the prompt filter refused (nothing was saved); ``category`` says why."""

    def __init__(self, category: str) -> None:
        super().__init__(f"This comment was blocked by the safety filter ({category}); it was not saved. "
                         "Please rephrase it.")
        self.category = category
