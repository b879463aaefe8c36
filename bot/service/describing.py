"""/describe: an image becomes a caption and four /imagine prompts to start from.

    describe(who, image bytes)  the upload's checks (format, size, bombs, the image safety
                                check) → the per-user limit (``describe.per_hour``; free, no
                                quota) → the captioner (``self.describer``: its own thread and time
                                limit, never the GPU worker) → the caption cleaned
                                (:mod:`generation.core.suggest`) → the prompt filter (a caption it
                                refuses is not shown, and is no strike: the user did not type it)
                                → four suggestions, each parsed as /imagine would parse it

The buttons under the answer ("Imagine 1…4") start /imagine with a suggestion: the front ends
read the prompt back from the answer they showed, so nothing is kept here.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.options import parse_imagine
from bot.service.context import ServiceContext
from bot.service.tickets import Who
from bot.service.uploads import BLOCKED_UPLOAD, checked_upload, nearest_aspect
from generation.core.errors import GenerationFailed, ImagineError, InvalidRequest
from generation.core.suggest import clean_caption, suggestions
from storage import describes
from storage.clock import from_text

__all__ = ["BLOCKED_CAPTION", "Described", "DescribePart", "DescribeLimited"]

logger = logging.getLogger(__name__)

BLOCKED_CAPTION = ("The description of this image did not pass this bot's prompt filter, so it is not shown; "
                   "try another picture.")


class DescribeLimited(ImagineError):
    """Too many /describe calls this hour; says when the next one is possible (``retry_after`` s)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Described:
    """What /describe shows: the cleaned caption and four prompts (the buttons' order)."""

    caption: str
    suggestions: tuple[str, ...]
    aspect: str


class DescribePart(ServiceContext):
    """/describe (free, limited per user per hour)."""

    async def describe(self, who: Who, data: bytes, *, target: dict[str, Any] | None = None) -> Described:
        """The caption and four /imagine prompts for the picture ``data``; or raise saying why not."""
        user = await self._active_user(who, spaced=False)
        if self.describer is None:
            raise InvalidRequest("describe", "/describe is not set up on this bot (describe.model).")
        upload = await checked_upload(data)
        verdicts = await self.moderation.check_images(who.key, target, [upload.image])
        if "blocked" in verdicts:
            raise InvalidRequest("image", BLOCKED_UPLOAD)
        call = await self._take_describe_slot(user.id, hashlib.sha256(bytes(data)).hexdigest())
        raw = await self.describer.caption(upload.image)
        caption = clean_caption(raw)
        if caption is None:
            logger.info("describe for %s: no words in the caption %r", who.key, raw[:200])
            raise GenerationFailed("No description could be made of this image; try another picture.")
        checker = await self.moderation.checker_for(target)
        if not checker.check(caption, "").allowed:
            logger.warning("describe for %s: the caption was refused by the prompt filter", who.key)
            raise InvalidRequest("image", BLOCKED_CAPTION)  # stored without a caption: nothing was shown
        aspect = nearest_aspect(self.caps, *upload.size)
        prompts = []
        for prompt in suggestions(caption, aspect):
            try:  # each suggestion is a valid /imagine prompt (the buttons hand it to imagine())
                parse_imagine(prompt, caps=self.caps, user_id=who.user_id, platform=who.platform)
            except InvalidRequest as err:
                logger.warning("describe: suggestion %r does not parse: %s", prompt, err)
                continue
            prompts.append(prompt)
        if not prompts:
            raise GenerationFailed("No description could be made of this image; try another picture.")
        await describes.settle(self.db, call, caption, tuple(prompts))
        return Described(caption, tuple(prompts), aspect)

    async def _take_describe_slot(self, user_id: int, image_sha: str) -> int:
        """Record one /describe for the account (its id), or DescribeLimited when the hour's are
        used up. Counted in the database: the limit holds across a restart and between processes."""
        now = self.clock()
        limit = self.config.describe_per_hour
        since = now - timedelta(hours=1)
        async with self.db.transaction() as tx:  # count and record together: two taps cannot both slip in
            if await describes.count_since(tx, user_id, since) >= limit:
                oldest = await describes.first_since(tx, user_id, since)
                seconds = ((from_text(oldest) if oldest else now) + timedelta(hours=1) - now).total_seconds()
                wait = max(1, int(seconds + 59) // 60)
                raise DescribeLimited(f"You can describe {limit} image{'s' if limit != 1 else ''} an hour; "
                                      f"the next one is possible in {wait} min.", max(1.0, seconds))
            return await describes.record(tx, user_id, image_sha, now)
