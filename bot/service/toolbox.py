"""The image toolbox: actions on an image that make a new job (upscale, zoom out, pan, edit a
region), and the upscaler alone on an uploaded picture (A1111's ``extra-single-image``), a job too.

Each action loads the job it names through :meth:`ServiceContext._acting_on` (trust's authority
check: the clicker owns the job, is an admin, or clicked ``via`` one of its recorded messages),
makes a request of its own kind, and goes through the same ``_submit`` as /imagine: prompt check, quota (``upscale_cost``), job row, the fair queue, history,
ratings and delivery once. The clicker owns the new job.

:meth:`ToolboxPart.enlarge_upload` makes an ``enlarge`` job: the upload gets the checks of any
upload (:mod:`bot.service.uploads`: format, size, bombs, the image safety check) and is stored
with the job; the worker runs the same upscaler as ⬆️ Upscale (``upscale.model``, else Lanczos)
without the img2img pass; it costs ``upscale_cost`` like an upscale.

An edit (🖌️ Vary (Region)) finds its mask before anything is charged: the words ("the cat") go
through the mask model (``self.segmenter``, its own thread and time limit) or a drawn mask is read;
the mask is grown and feathered (:mod:`generation.tools.masks`), and one that covers nothing or
nearly everything is refused for free. The image with the region in its alpha channel is stored
as the job's input (``job_inputs``, source ``edit``), so a restart runs it again and the delivery
shows the mask that was used.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from PIL import Image

from bot.options import PENDING_UPLOAD, parse_imagine
from bot.service import accounts_rules
from bot.service.context import ServiceContext
from bot.service.tickets import NotFound, Ticket, Via, Who
from bot.service.uploads import BLOCKED_UPLOAD, NEUTRAL_PROMPT, StoredUpload, checked_upload, store_upload
from generation.core.errors import InvalidRequest
from generation.core.request import (ACTIONS, MAX_UPSCALED, UPSCALE_MODES, GenerationRequest, has_visible_text,
                                     nearest_bucket)
from generation.tools.inputs import fit_image, png_bytes
from generation.tools.masks import coverage, coverage_problem, mask_from_image, pack, prepare_mask
from generation.tools.outpaint import canvas_ratio
from storage import images

if TYPE_CHECKING:
    from storage.records import User

Origin = tuple[str, str]  # (platform, inbox key), as in jobs.py (parts never import each other)

__all__ = ["MAX_UPSCALED_PIXELS", "ToolboxPart"]

MAX_UPSCALED_PIXELS = 16_000_000
MAX_WORDS = 200  # the words naming the region to edit


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
        width, height = image.width, image.height
        if (width, height) not in caps.buckets():  # a size of the model that made it (Flux's 16:9): this one's nearest
            width, height = nearest_bucket(width, height, caps.base_resolution)
        request = replace(
            base, kind="upscale", init_image=str(self.store.path_for(image.path).resolve()), strength=strength,
            steps=steps, count=1, seed=image.seed, width=width * 2, height=height * 2,
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

    async def edit(self, who: Who, job_id: str, index: int, prompt: str, *, words: str | None = None,
                   mask: bytes | None = None, invert: bool = False, target: dict[str, Any] | None = None,
                   origin: Origin | None = None, via: Via | None = None) -> Ticket:
        """Repaint one region of image ``index`` of job ``job_id`` with ``prompt``: the region is named
        by ``words`` (the mask model) or drawn (``mask``: an image, white = repaint; ``invert`` swaps).
        One image, charged one to ``who``; who may: as :meth:`upscale`."""
        prompt, words = _edit_texts(prompt, words, mask)
        await self._raise_if_accepted(origin)
        user = await self._active_user(who)
        source = await self._acting_on(who, job_id, via=via, index=index)
        found = [i for i in await images.images_for_job(self.db, job_id) if i.idx == index]
        if not found or not self.store.exists(found[0].path):
            raise NotFound(f"Request {job_id} has no image {index + 1} to edit.")
        base = replace(self._request_from(source.request), seed=found[0].seed)
        image = await asyncio.to_thread(_open_rgb, self.store.path_for(found[0].path))
        return await self._edit_image(who, user, base, image, prompt, words, mask, "white", invert=invert,
                                      source=f"{job_id}#{index + 1}", target=target, origin=origin)

    async def edit_upload(self, who: Who, data: bytes, mask: bytes, text: str, *, convention: str = "alpha",
                          invert: bool = False, blur: int | None = None, strength: float | None = None,
                          target: dict[str, Any] | None = None, origin: Origin | None = None, spaced: bool = True,
                          **options: Any) -> Ticket:
        """Repaint the region ``mask`` marks in an uploaded picture with the prompt of ``text`` (the
        compatible APIs: OpenAI's ``/v1/images/edits``, convention "alpha": transparent = edit;
        A1111's img2img ``mask``, "white": white = edit). The picture gets the checks of any upload;
        ``strength`` (default ``edit.strength``) is how much of the region is re-noised; ``blur`` (px,
        default ``edit.feather`` of the short side) softens the mask's edge."""
        await self._raise_if_accepted(origin)
        user = await self._active_user(who, spaced=spaced)
        upload = await checked_upload(data)
        base = parse_imagine(
            text, caps=self.caps, defaults=accounts_rules.defaults_from(user.settings, refine=False),
            user_id=who.user_id, platform=who.platform, image_size=upload.size, **options)
        base = replace(base, kind="txt2img", init_image=None, count=1,
                       strength=self.config.edit.strength if strength is None else strength)
        await self.moderation.check_prompt(who, base.prompt, base.negative_prompt, target)
        fitted = await asyncio.to_thread(fit_image, upload.image, (base.width, base.height))
        verdicts = await self.moderation.check_images(who.key, target, [fitted])
        if "blocked" in verdicts:
            raise InvalidRequest("image", BLOCKED_UPLOAD)
        return await self._edit_image(who, user, base, fitted, base.prompt, None, mask, convention, invert=invert,
                                      blur=blur, source=None, target=target, origin=origin,
                                      strength=base.strength)

    async def _edit_image(self, who: Who, user: User, base: GenerationRequest, image: Image.Image, prompt: str,
                          words: str | None, mask: bytes | None, convention: str, *, invert: bool = False,
                          blur: int | None = None, source: str | None, target: dict[str, Any] | None,
                          origin: Origin | None, strength: float | None = None) -> Ticket:
        """Find the region, refuse a useless mask for free, store the input, submit the edit job."""
        settings = self.config.edit
        # 1. the words pass the prompt filter before any model sees them
        await self.moderation.check_prompt(who, prompt, base.negative_prompt, target)
        if words is not None:
            await self.moderation.check_prompt(who, words, "", target)
        # 2. the region: named (the mask model, its own thread and time limit) or drawn
        if words is not None:
            if self.segmenter is None:
                raise InvalidRequest("words", "Editing by words is not set up on this bot (edit.mask_model); "
                                              "draw the region instead (the studio, or a mask image in the API).")
            probabilities = await self.segmenter.probabilities(image, words)
            region = await asyncio.to_thread(prepare_mask, probabilities, image.size, settings)
        else:
            drawn = (await checked_upload(mask)).image  # the checks of any upload (size, bombs, format)
            if convention == "alpha":  # the check flattens to RGB; OpenAI's mask is in the alpha channel
                drawn = await asyncio.to_thread(_with_alpha, mask)
            soft = round(min(image.size) * settings.feather) if blur is None else blur  # a drawn edge, softened
            region = await asyncio.to_thread(mask_from_image, drawn, image.size, convention, invert=invert,
                                             blur=soft)
        # 3. nothing or nearly everything: refused, nothing charged
        problem = coverage_problem(coverage(region), settings, words)
        if problem is not None:
            raise InvalidRequest("mask", problem)
        # 4. the image with the region in its alpha: the job's stored input
        data = await asyncio.to_thread(lambda: png_bytes(pack(image, region)))
        path, sha = await asyncio.to_thread(self.store.put, data, "png")
        stored = StoredUpload(path, sha, image.width, image.height, len(data), source="edit")
        size = image.size if image.size in self.caps.buckets() else nearest_bucket(*image.size,
                                                                                    self.caps.base_resolution)
        request = replace(
            base, kind="edit", init_image=str(self.store.path_for(path).resolve()),
            strength=settings.strength if strength is None else strength,
            count=1, width=size[0], height=size[1], variation_of=None, source=source,
            mode="words" if words is not None else "mask", refine=False, user_id=who.user_id,
            platform=who.platform, original_prompt=None, prompt=prompt, edit_words=words,
        )
        return await self._submit(who, user, self.caps.check(request), target=target, dedupe=False, origin=origin,
                                  upload=stored)

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


def _edit_texts(prompt: Any, words: Any, mask: Any) -> tuple[str, str | None]:
    """(new text, words or None), or InvalidRequest saying what is missing."""
    if not isinstance(prompt, str) or not has_visible_text(prompt):
        raise InvalidRequest("prompt", "Say what to paint in the region instead (the new text), "
                                       "e.g. /edit the cat -> a small red fox.")
    if mask is None:
        if not isinstance(words, str) or not has_visible_text(words):
            raise InvalidRequest("words", "Name what to change in a few words, e.g. /edit the cat -> a small red fox.")
        if len(words.strip()) > MAX_WORDS:
            raise InvalidRequest("words", f"Name what to change in at most {MAX_WORDS} characters, not "
                                          f"{len(words.strip())}: a few words, like “the cat”.")
        return prompt.strip(), words.strip()
    if words is not None and has_visible_text(str(words)):
        raise InvalidRequest("mask", "Give either the words naming the region or a mask image, not both.")
    return prompt.strip(), None


def _open_rgb(path: Any) -> Image.Image:
    with Image.open(path) as opened:
        return opened.convert("RGB")


def _with_alpha(data: bytes) -> Image.Image:
    """A drawn mask with its alpha channel (the upload check flattens to RGB): OpenAI's edits
    mark the area to edit as transparent pixels."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.convert("RGBA")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise InvalidRequest("mask", "The mask could not be read; send a PNG whose transparent pixels "
                                     "mark the area to edit.") from None
