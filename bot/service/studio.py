"""What the web studio needs beyond the chat's calls: the form's choices and deleting an image.

The choices are what the loaded model accepts (its aspect ratios and sizes, Lightning step
counts, LoRAs) plus the style presets, so the form offers nothing the service would refuse.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.service.context import ACTIVE, ServiceContext
from bot.service.tickets import NotAllowed, NotFound, Who
from generation.core.request import MAX_COUNT
from generation.core.styles import STYLES
from storage import images, jobs, ratings, users
from storage.removals import delete_image

__all__ = ["StudioChoices", "StudioPart"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudioChoices:
    """The studio form's options: what this bot's model can do."""

    aspects: tuple[tuple[str, int, int], ...]  # (aspect, width, height)
    steps: tuple[int, ...]
    default_steps: int
    styles: tuple[tuple[str, str], ...]  # (name, description)
    loras: tuple[str, ...]
    max_count: int
    refine: bool  # a prompt refiner is configured
    image_strength: float = 0.6  # how much of a picture to start from changes, unless the slider says
    models: tuple[str, ...] = ()  # the catalogue's names, the default first (empty: one model, no choice)


class StudioPart(ServiceContext):
    """The studio form's choices, and deleting one of your images."""

    def studio_choices(self) -> StudioChoices:
        caps = self.caps
        return StudioChoices(
            tuple((ar, w, h) for ar, (w, h) in caps.sizes().items()), tuple(caps.steps), caps.default_steps,
            tuple((s.name, s.description) for s in STYLES.values()), tuple(name for name, _ in caps.loras),
            MAX_COUNT, self.refiner is not None, self.config.image_strength, self._model_choices())

    def _model_choices(self) -> tuple[str, ...]:
        catalogue = self.catalogue
        if len(catalogue) < 2:
            return ()
        return (catalogue.default, *(name for name in catalogue.names if name != catalogue.default))

    async def image_rating(self, who: Who, image_id: int) -> tuple[int | None, float | None, int]:
        """(the caller's stars or None, the average, how many ratings) of an image."""
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        mine = None if user is None else await ratings.get(self.db, image_id, user.id)
        mean, count = await ratings.average(self.db, image_id)
        return (mine.stars if mine else None), mean, count

    async def delete_image(self, who: Who, ref: str) -> None:
        """Delete one of the caller's images by reference ("JOB-N"); NotFound for another's."""
        job_id, sep, number = ref.rpartition("-")
        row = await jobs.get(self.db, job_id) if sep and number.isdecimal() and job_id else None
        user = await users.get_by_platform(self.db, who.platform, who.user_id)
        found = [] if row is None else [i for i in await images.images_for_job(self.db, row.id)
                                        if i.idx == int(number) - 1]
        if row is None or user is None or row.user_id != user.id or not found:
            raise NotFound(f"There is no image {ref}.")
        if row.status in ACTIVE:
            raise NotAllowed("That request is still running; wait for it to finish.")
        orphan = await delete_image(self.db, found[0].id)
        if orphan is not None:
            await asyncio.to_thread(self.store.delete, [orphan])
        logger.info("%s deleted image %s", who.key, ref)
