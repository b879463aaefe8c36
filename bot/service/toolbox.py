"""The image toolbox: actions on an image that make a new job (upscale; zoom and pan to come).

Each action loads the job it names through :meth:`ServiceContext._job` (where ownership and
share checks live), makes a request of its own kind, and goes through the same
``_submit`` as /imagine: prompt check, quota (``upscale_cost``), job row, the fair queue, history,
ratings and delivery once. The clicker owns the new job.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bot.service.context import ServiceContext
from bot.service.tickets import NotFound, Ticket, Who
from generation.core.errors import InvalidRequest
from generation.core.request import UPSCALE_MODES, GenerationRequest
from storage import images

if TYPE_CHECKING:
    from storage.records import User

Origin = tuple[str, str]  # (platform, inbox key), as in jobs.py (parts never import each other)

__all__ = ["ToolboxPart"]


class ToolboxPart(ServiceContext):
    """Upscale (subtle or creative) an image of a job."""

    if TYPE_CHECKING:  # JobsPart's, through ImagineService
        async def _submit(self, who: Who, user: User, request: GenerationRequest, *, target: dict[str, Any] | None,
                          dedupe: bool, origin: Origin | None = None, upload: Any = None,
                          cost: int | None = None) -> Ticket: ...

    async def upscale(self, who: Who, job_id: str, index: int, mode: str = "subtle", *,
                      target: dict[str, Any] | None = None, origin: Origin | None = None) -> Ticket:
        """Image ``index`` (0-based) of job ``job_id`` at twice its size, charged ``upscale_cost`` to ``who``."""
        if mode not in UPSCALE_MODES:
            raise InvalidRequest("mode", f"Upscale mode must be {' or '.join(UPSCALE_MODES)}, not {mode!r}.")
        user = await self._active_user(who)
        source = await self._job(job_id)
        found = [i for i in await images.images_for_job(self.db, job_id) if i.idx == index]
        if not found or not self.store.exists(found[0].path):
            raise NotFound(f"Request {job_id} has no image {index + 1} to upscale.")
        image = found[0]
        base = GenerationRequest.from_dict(source.request)
        strength = self.config.upscale_creative if mode == "creative" else self.config.upscale_subtle
        steps = next((s for s in sorted(self.caps.steps) if s >= base.steps and int(s * strength) >= 1),
                     max(self.caps.steps))
        request = replace(
            base, kind="upscale", init_image=str(self.store.path_for(image.path).resolve()), strength=strength,
            steps=steps, count=1, seed=image.seed, width=image.width * 2, height=image.height * 2,
            variation_of=None, source=f"{job_id}#{index + 1}", mode=mode, refine=False,
            user_id=who.user_id, platform=who.platform,
        )
        return await self._submit(who, user, self.caps.check(request), target=target, dedupe=False, origin=origin,
                                  cost=self.config.upscale_cost)
