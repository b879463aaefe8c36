"""The image toolbox: actions on an image that make a new job (upscale, zoom out, pan), and the
upscaler alone on an uploaded picture (A1111's ``extra-single-image``), a job too.

Each action loads the job it names through :meth:`ServiceContext._acting_on` (trust's authority
check: the clicker owns the job, is an admin, or clicked ``via`` one of its recorded messages),
makes a request of its own kind, and goes through the same ``_submit`` as /imagine: prompt check, quota (``upscale_cost``), job row, the fair queue, history,
ratings and delivery once. The clicker owns the new job.

:meth:`ToolboxPart.enlarge_upload` makes an ``enlarge`` job: the upload gets the checks of any
upload (:mod:`bot.service.uploads`: format, size, bombs, the image safety check) and is stored
with the job; the worker runs the same upscaler as ⬆️ Upscale (``upscale.model``, else Lanczos)
without the img2img pass; it costs ``upscale_cost`` like an upscale.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bot.options import PENDING_UPLOAD
from bot.service.context import ServiceContext
from bot.service.tickets import NotFound, Ticket, Via, Who
from bot.service.uploads import NEUTRAL_PROMPT, checked_upload, store_upload
from generation.core.errors import InvalidRequest
from generation.core.request import ACTIONS, MAX_UPSCALED, UPSCALE_MODES, GenerationRequest, nearest_bucket
from generation.tools.outpaint import canvas_ratio
from storage import images

if TYPE_CHECKING:
    from storage.records import User

Origin = tuple[str, str]  # (platform, inbox key), as in jobs.py (parts never import each other)

__all__ = ["MAX_UPSCALED_PIXELS", "ToolboxPart"]

MAX_UPSCALED_PIXELS = 16_000_000


class ToolboxPart(ServiceContext):
    """Upscale (subtle or creative), zoom out (1.5x, 2x) or pan (left, right, up, down) an image of a job."""

    if TYPE_CHECKING:  # JobsPart's, through ImagineService
        async def _submit(self, who: Who, user: User, request: GenerationRequest, *, target: dict[str, Any] | None,
                          dedupe: bool, origin: Origin | None = None, upload: Any = None,
                          cost: int | None = None) -> Ticket: ...

    async def upscale(self, who: Who, job_id: str, index: int, mode: str = "subtle", *,
                      target: dict[str, Any] | None = None, origin: Origin | None = None,
                      via: Via | None = None, spaced: bool = True) -> Ticket:
        """Image ``index`` (0-based) of job ``job_id`` at twice its size, charged ``upscale_cost`` to ``who``
        (its owner, an admin, or someone who clicked ``via`` a message showing it).
        ``spaced=False``: no chat request spacing (an API key: its own per-key rate limit), as ``imagine``."""
        if mode not in UPSCALE_MODES:
            raise InvalidRequest("mode", f"Upscale mode must be {' or '.join(UPSCALE_MODES)}, not {mode!r}.")
        await self._raise_if_accepted(origin)
        user = await self._active_user(who, spaced=spaced)
        source = await self._acting_on(who, job_id, via=via, index=index)
        found = [i for i in await images.images_for_job(self.db, job_id) if i.idx == index]
        if not found or not self.store.exists(found[0].path):
            raise NotFound(f"Request {job_id} has no image {index + 1} to upscale.")
        image = found[0]
        base = self._request_from(source.request)
        base = replace(base, model=self._model_for("upscale", base.model), negative_prompt="")
        strength = self.config.upscale_creative if mode == "creative" else self.config.upscale_subtle
        caps = self.caps_for(base.model)
        steps = next((s for s in sorted(caps.steps) if s >= base.steps and int(s * strength) >= 1), max(caps.steps))
        request = replace(
            base, kind="upscale", init_image=str(self.store.path_for(image.path).resolve()), strength=strength,
            steps=steps, count=1, seed=image.seed, width=image.width * 2, height=image.height * 2,
            variation_of=None, source=f"{job_id}#{index + 1}", mode=mode, refine=False,
            user_id=who.user_id, platform=who.platform,
        )
        return await self._submit(who, user, self.caps_for(request.model).check(request), target=target, dedupe=False,
                                  origin=origin, cost=self.config.upscale_cost)

    async def outpaint(self, who: Who, job_id: str, index: int, kind: str, mode: str, *, prompt: str | None = None,
                       target: dict[str, Any] | None = None, origin: Origin | None = None,
                       via: Via | None = None, spaced: bool = True) -> Ticket:
        """Zoom out (``kind="zoom"``, mode "1.5"/"2") or pan (mode "left"/"right"/"up"/"down") image
        ``index`` of job ``job_id``: a new job of ``who``, one image, the new border inpainted.
        ``prompt`` replaces the prompt (Midjourney's custom zoom). Who may, and ``spaced``: as :meth:`upscale`."""
        if kind not in ("zoom", "pan") or mode not in ACTIONS[kind]:
            allowed = "zoom 1.5 or 2, or pan left, right, up or down"
            raise InvalidRequest("mode", f"Choose {allowed}, not {kind} {mode!r}.")
        await self._raise_if_accepted(origin)
        user = await self._active_user(who, spaced=spaced)
        source = await self._acting_on(who, job_id, via=via, index=index)
        found = [i for i in await images.images_for_job(self.db, job_id) if i.idx == index]
        if not found or not self.store.exists(found[0].path):
            raise NotFound(f"Request {job_id} has no image {index + 1} to {kind}.")
        image = found[0]
        base = self._request_from(source.request)
        base = replace(base, model=self._model_for(kind, base.model))
        width, height = nearest_bucket(*canvas_ratio(kind, mode, image.width, image.height),
                                       self.caps_for(base.model).base_resolution)
        request = replace(
            base, kind=kind, init_image=str(self.store.path_for(image.path).resolve()), strength=1.0,
            count=1, seed=image.seed, width=width, height=height, variation_of=None, source=f"{job_id}#{index + 1}",
            mode=mode, refine=False, user_id=who.user_id, platform=who.platform, original_prompt=None,
            **({"prompt": prompt} if prompt and prompt.strip() else {}),
        )
        return await self._submit(who, user, self.caps_for(request.model).check(request), target=target, dedupe=False,
                                  origin=origin)

    async def enlarge_upload(self, who: Who, data: bytes, *, target: dict[str, Any] | None = None,
                             spaced: bool = True) -> Ticket:
        """``data`` (an uploaded picture) enlarged 2x by the toolbox's upscaler alone (the network of
        ``upscale.model``, else Lanczos), as a job of ``who`` in the fair queue (A1111's
        ``extra-single-image``): checked as any upload, stored with the job, charged ``upscale_cost``.
        Its sides are first cut down to multiples of 8 (at most 7 pixels)."""
        user = await self._active_user(who, spaced=spaced)
        upload = await checked_upload(data)
        width, height = (side // 8 * 8 for side in upload.size)
        if min(width, height) < 32:
            raise InvalidRequest("image", f"The picture is {upload.size[0]}x{upload.size[1]}; to enlarge it, "
                                          "send one at least 32 pixels on each side.")
        if 4 * width * height > MAX_UPSCALED_PIXELS or 2 * max(width, height) > MAX_UPSCALED:
            raise InvalidRequest("image", f"Twice {upload.size[0]}x{upload.size[1]} would be over "
                                          f"{MAX_UPSCALED_PIXELS / 1e6:g} megapixels or {MAX_UPSCALED} pixels "
                                          "on a side; send a smaller picture.")
        request = GenerationRequest(
            NEUTRAL_PROMPT, width=2 * width, height=2 * height, steps=min(self.caps.steps), count=1,
            kind="enlarge", init_image=PENDING_UPLOAD, strength=1.0, user_id=who.user_id, platform=who.platform)
        request, stored = await store_upload(self, who, upload, self.caps.check(request), target,
                                             size=(width, height))
        return await self._submit(who, user, request, target=target, dedupe=False, upload=stored,
                                  cost=self.config.upscale_cost)
