"""The AUTOMATIC1111 web UI API (``/sdapi/v1``) as Open WebUI, SillyTavern and LibreChat call it.

``txt2img`` and ``img2img`` are adapters over ``service.imagine`` (the same quota, moderation,
fair queue, history and storage as every other interface) that wait for the job. What our
model does not use is mapped to the nearest value it has (size → aspect bucket, steps → a
loaded Lightning step count, cfg_scale → 0, sampler → Euler) and every such change is listed in
``info``'s ``adjustments``, never made silently. The probes (options, models, samplers, …) are
in :mod:`.a1111_probes`. Auth: the API key as Bearer, or as the password of HTTP Basic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from bot.frontends.web.compat import (
    Problem,
    ProblemError,
    answer,
    check_model,
    decode_b64_image,
    encoded,
    infotext,
    nearest_steps,
    wait_for,
)
from bot.service import Delivery, ImagineService, Who, nearest_aspect
from generation.core.errors import JobCancelled

__all__ = ["SAMPLER", "SCHEDULER", "a1111_answer", "a1111_router", "body_of"]
a1111_router = APIRouter(prefix="/sdapi/v1", tags=["A1111 compatible"])

SAMPLER = "Euler"  # SDXL-Lightning: EulerDiscreteScheduler with trailing timesteps, no CFG
SCHEDULER = "sgm_uniform"  # A1111's name for trailing timestep spacing
MAX_IMAGES = 4


class Txt2Img(BaseModel):
    """The fields of A1111's txt2img that mean something here; the rest is ignored (never echoed)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    denoising_strength: float | None = None
    enable_hr: bool = False
    restore_faces: bool | None = None
    tiling: bool | None = None
    styles: list[str] | None = None
    override_settings: dict[str, Any] | None = None
    send_images: bool = True
    subseed_strength: float = 0.0
    script_name: str | None = None


class Img2Img(Txt2Img):
    init_images: list[str] = []
    denoising_strength: float | None = 0.75
    mask: str | None = None
    include_init_images: bool = False


def error(problem: Problem) -> JSONResponse:
    """An error as A1111 answers one."""
    return JSONResponse({"error": problem.code, "detail": problem.message, "body": "", "errors": problem.message},
                        problem.status, headers=problem.headers)


async def a1111_answer(request: Request, work: Callable[[Who], Awaitable[Any]]) -> Any:
    """Authenticate, run ``work``, and answer any failure as A1111 does."""
    return await answer(request, work, error, invalid_status=422)


async def body_of(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise ProblemError(Problem(422, "invalid_json", "The body must be a JSON object.")) from None
    if not isinstance(data, dict):
        raise ProblemError(Problem(422, "invalid_json", "The body must be a JSON object."))
    return data


def _mapped(service: ImagineService, body: Txt2Img, sent: set[str]) -> tuple[dict[str, Any], list[str]]:
    """Our options for ``body``, and a note for each A1111 setting we cannot follow as given."""
    notes: list[str] = []
    settings = dict(body.override_settings or {})
    model = check_model(service, settings.pop("sd_model_checkpoint", None), "override_settings.sd_model_checkpoint")
    caps = service.caps_for(model)
    count = body.batch_size * body.n_iter
    if count < 1:
        raise ProblemError(Problem(422, "invalid_value", "batch_size and n_iter must be 1 or more.", "batch_size"))
    if count > MAX_IMAGES:
        notes.append(f"batch_size x n_iter = {count} -> {MAX_IMAGES}: at most {MAX_IMAGES} images a request")
    options: dict[str, Any] = {"count": min(count, MAX_IMAGES), "steps": nearest_steps(service, body.steps, model)}
    if model:
        options["model"] = model
    if body.steps != options["steps"]:
        loaded = ", ".join(str(s) for s in caps.steps)
        notes.append(f"steps {body.steps} -> {options['steps']}: the model has {loaded}-step checkpoints loaded")
    strength = getattr(body, "denoising_strength", None)
    if isinstance(body, Img2Img) and strength:  # img2img runs int(steps x strength) steps: one at least
        options["steps"] = next((s for s in sorted(caps.steps)
                                 if s >= options["steps"] and int(s * strength) >= 1), options["steps"])
    if {"width", "height"} & sent or not isinstance(body, Img2Img):
        if body.width <= 0 or body.height <= 0:
            raise ProblemError(Problem(422, "invalid_value", "width and height must be positive.", "width"))
        options["aspect"] = nearest_aspect(caps, body.width, body.height)
    if body.seed is not None and body.seed >= 0:
        options["seed"] = body.seed
    if body.negative_prompt.strip():
        options["negative"] = body.negative_prompt
    if "cfg_scale" in sent and body.cfg_scale not in (0, 1):
        notes.append(f"cfg_scale {body.cfg_scale:g} -> 0: SDXL-Lightning runs without classifier-free guidance")
    sampler = body.sampler_name or body.sampler_index
    if sampler and sampler != SAMPLER:
        notes.append(f"sampler {sampler} -> {SAMPLER}: the Lightning checkpoints are made for it")
    if body.scheduler and body.scheduler.lower() not in (SCHEDULER, "sgm uniform", "automatic"):
        notes.append(f"scheduler {body.scheduler} -> {SCHEDULER} (trailing timesteps, as Lightning needs)")
    ignored = [name for name in ("enable_hr", "restore_faces", "tiling", "styles", "script_name")
               if getattr(body, name)]
    ignored += [f"override_settings.{key}" for key in settings]
    if body.subseed_strength:
        ignored.append("subseed_strength")
    if ignored:
        notes.append(f"not supported, ignored: {', '.join(ignored)}")
    return options, notes


def _response(service: ImagineService, body: Txt2Img, sent: set[str], delivery: Delivery | None,
              notes: list[str], images: list[str], infotexts: list[str]) -> dict[str, Any]:
    """A1111's answer: images, the parameters used, and ``info`` as a JSON string."""
    if delivery is None:  # interrupted
        info: dict[str, Any] = {"interrupted": True, "adjustments": notes, "infotexts": []}
        return {"images": [], "parameters": body.model_dump(), "info": json.dumps(info)}
    request = delivery.request
    seeds = [image.seed for image in delivery.images]
    for field, asked, used in (("width", body.width, request.width), ("height", body.height, request.height)):
        if asked != used and (field in sent or not isinstance(body, Img2Img)):  # img2img: the image's shape
            notes.append(f"{field} {asked} -> {used}: the nearest SDXL size bucket")
    if request.steps != nearest_steps(service, body.steps, request.model):
        notes.append(f"steps -> {request.steps}: denoising_strength {request.strength:g} runs "
                     f"int(steps x strength) steps, and one at least must run")
    strength = request.strength if request.kind == "img2img" else None
    parameters = {**body.model_dump(exclude={"init_images", "mask"}), "width": request.width,
                  "height": request.height, "steps": request.steps, "cfg_scale": 0.0, "sampler_name": SAMPLER,
                  "scheduler": SCHEDULER, "batch_size": request.count, "n_iter": 1, "seed": request.seed,
                  "denoising_strength": strength}
    info = {
        "prompt": request.prompt, "all_prompts": [request.prompt] * len(seeds),
        "negative_prompt": request.negative_prompt, "all_negative_prompts": [request.negative_prompt] * len(seeds),
        "seed": request.seed, "all_seeds": seeds, "subseed": request.seed, "all_subseeds": seeds,
        "subseed_strength": 0, "width": request.width, "height": request.height, "sampler_name": SAMPLER,
        "scheduler": SCHEDULER, "cfg_scale": 0.0, "steps": request.steps, "batch_size": request.count,
        "restore_faces": False, "sd_model_name": request.model or service.caps.name,
        "sd_model_hash": (service.checkpoint_hash_for(request.model) or "")[:10] or None,
        "denoising_strength": strength, "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": infotexts, "styles": [], "clip_skip": 1, "is_using_inpainting_conditioning": False,
        "job_timestamp": datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S"), "version": "imagine-bot",
        "job_id": delivery.job_id, "adjustments": notes,
    }
    return {"images": images, "parameters": parameters, "info": json.dumps(info, ensure_ascii=False)}


async def _generate(request: Request, who: Who, body: Txt2Img, sent: set[str], notes: list[str] | None = None,
                    **extra: Any) -> dict[str, Any]:
    service: ImagineService = request.app.state.service
    options, mapped = _mapped(service, body, sent)
    notes = (notes or []) + mapped
    ticket = await service.imagine(who, body.prompt, target={"web": True, "api": "a1111"}, spaced=False, **options, **extra)
    try:
        delivery = await wait_for(request, service, who, ticket)
    except JobCancelled:  # /sdapi/v1/interrupt (or /cancel): A1111 answers with what it has, here nothing
        delivery = None
    if delivery is None:
        return _response(service, body, sent, None, notes, [], [])
    images = [await asyncio.to_thread(encoded, image.path) for image in delivery.images] if body.send_images else []
    infotexts = [await asyncio.to_thread(infotext, image.path) for image in delivery.images]
    return _response(service, body, sent, delivery, notes, images, infotexts)


@a1111_router.post("/txt2img")
async def txt2img(request: Request) -> Any:
    """Make images from a prompt; answers when they are ready."""
    async def work(who: Who) -> Any:
        data = await body_of(request)
        return await _generate(request, who, Txt2Img.model_validate(data), set(data))

    return await a1111_answer(request, work)


@a1111_router.post("/img2img")
async def img2img(request: Request) -> Any:
    """Rework the first of ``init_images`` from the prompt at ``denoising_strength`` (no masks yet)."""
    async def work(who: Who) -> Any:
        data = await body_of(request)
        body = Img2Img.model_validate(data)
        if body.mask:
            raise ProblemError(Problem(422, "unsupported", "Masks (inpainting) are not supported yet: leave out "
                                       "`mask` to rework the whole image.", "mask"))
        if not body.init_images:
            raise ProblemError(Problem(422, "missing_image", "img2img needs an image in init_images.",
                                       "init_images"))
        service: ImagineService = request.app.state.service
        strength = body.denoising_strength if body.denoising_strength is not None else 0.75
        body = body.model_copy(update={"denoising_strength": strength})
        lowest = 1 / max(service.caps.steps)  # img2img runs int(steps * strength) steps: at least one
        notes = [f"init_images: only the first of {len(body.init_images)} is used"] if len(body.init_images) > 1 else []
        if 0 <= strength < lowest:
            notes.append(f"denoising_strength {strength:g} -> {lowest:g}: the least that runs one step")
            body = body.model_copy(update={"denoising_strength": lowest})
        image = decode_b64_image(body.init_images[0], "init_images")
        return await _generate(request, who, body, set(data), notes, image=image, strength=body.denoising_strength)

    return await a1111_answer(request, work)
