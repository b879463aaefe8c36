"""The A1111 routes clients probe and steer with: options, model and sampler lists, progress, interrupt.

Open WebUI reads ``options`` (``sd_model_checkpoint``) and ``sd-models`` and posts the options
back to switch models; SillyTavern also lists samplers, schedulers, upscalers, latent upscale
modes and VAEs, polls ``progress`` and calls ``interrupt`` when its user stops. Switching sets the
caller's default model of the catalogue (an unknown name is refused, naming those there are). ``png-info`` reads
the settings stored in our PNGs (and JPEG/WebP EXIF); ``extra-single-image`` is in
:mod:`.a1111_extras`.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request

from bot.frontends.web.a1111_api import SAMPLER, SCHEDULER, a1111_answer, body_of
from bot.frontends.web.a1111_extras import upscaler_names
from bot.frontends.web.compat import check_model, model_names
from bot.service import ImagineService, NotAllowed, NotFound, Queued, Running, Who

__all__ = ["probes"]

probes = APIRouter(prefix="/sdapi/v1", tags=["A1111 compatible"])


def _service(request: Request) -> ImagineService:
    return request.app.state.service


def _title(service: ImagineService) -> str:
    return model_names(service)[0]


@probes.get("/options")
async def get_options(request: Request) -> Any:
    """The settings clients read: ``sd_model_checkpoint`` above all."""
    async def work(who: Who) -> Any:
        service = _service(request)
        return {"sd_model_checkpoint": _title(service), "sd_checkpoint_hash": service.checkpoint_hash,
                "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "samples_format": "png",
                "sd_checkpoints_limit": 1, "upscaler_for_img2img": "Lanczos"}

    return await a1111_answer(request, work)


@probes.post("/options")
async def set_options(request: Request) -> Any:
    """Switch models: with several, the caller's default model (as /settings model=NAME) becomes the one
    named; with one, its own name is accepted, others refused. Other keys change nothing."""
    async def work(who: Who) -> Any:
        body = await body_of(request)
        service = _service(request)
        model = check_model(service, body.get("sd_model_checkpoint"), "sd_model_checkpoint")
        if len(service.catalogue) > 1 and body.get("sd_model_checkpoint"):
            await service.settings(who, model=model or "default")
        return None

    return await a1111_answer(request, work)


@probes.get("/sd-models")
async def sd_models(request: Request) -> Any:
    """The models, as A1111 lists checkpoints (the default first)."""
    async def work(who: Who) -> Any:
        service = _service(request)
        if len(service.catalogue) < 2:
            sha = service.checkpoint_hash
            return [{"title": _title(service), "model_name": _title(service), "hash": (sha or "")[:10] or None,
                     "sha256": sha, "filename": service.model_id, "config": None}]
        listed = []
        for name in model_names(service):
            sha = service.checkpoint_hash_for(service.catalogue.resolve(name))
            listed.append({"title": name, "model_name": name, "hash": (sha or "")[:10] or None, "sha256": sha,
                           "filename": service.model_id_for(service.catalogue.resolve(name)), "config": None})
        return listed

    return await a1111_answer(request, work)


@probes.get("/samplers")
async def samplers(request: Request) -> Any:
    async def work(who: Who) -> Any:
        return [{"name": SAMPLER, "aliases": ["k_euler"], "options": {}}]

    return await a1111_answer(request, work)


@probes.get("/schedulers")
async def schedulers(request: Request) -> Any:
    async def work(who: Who) -> Any:
        return [{"name": SCHEDULER, "label": "SGM Uniform", "aliases": None, "default_rho": -1.0,
                 "need_inner_model": False}]

    return await a1111_answer(request, work)


@probes.get("/upscalers")
async def upscalers(request: Request) -> Any:
    async def work(who: Who) -> Any:
        return [{"name": name, "model_name": None, "model_path": None, "model_url": None,
                 "scale": 2.0 if name != "None" else 1.0} for name in upscaler_names(_service(request))]

    return await a1111_answer(request, work)


@probes.get("/latent-upscale-modes")
async def latent_upscale_modes(request: Request) -> Any:
    async def work(who: Who) -> Any:
        return []  # no hires fix

    return await a1111_answer(request, work)


@probes.get("/sd-vae")
async def sd_vae(request: Request) -> Any:
    async def work(who: Who) -> Any:
        return []  # the model's own VAE only

    return await a1111_answer(request, work)


def _state(job: str = "", count: int = 0, step: int = 0, steps: int = 0) -> dict[str, Any]:
    return {"skipped": False, "interrupted": False, "stopping_generation": False, "job": job, "job_count": count,
            "job_timestamp": "0", "job_no": 0, "sampling_step": step, "sampling_steps": steps}


@probes.get("/progress")
async def progress(request: Request) -> Any:
    """The caller's request waiting on an A1111/OpenAI call: place in line or step, an ETA, and
    while it runs the newest live preview as ``current_image`` (base64 JPEG; null before the first)."""
    async def work(who: Who) -> Any:
        ticket = request.app.state.compat_waiting.get(who.key)
        last = ticket.last if ticket is not None and not ticket.done else None
        if isinstance(last, Queued):
            text = f"Queued: position {last.position}"
            return {"progress": 0.0, "eta_relative": round(last.eta, 2), "state": _state(text, 1),
                    "current_image": None, "textinfo": text}
        if isinstance(last, Running):
            done = last.step / last.steps if last.steps else 0.0
            preview = ticket.preview  # type: ignore[union-attr]  # the newest live preview (a JPEG)
            return {"progress": round(done, 3), "eta_relative": round(ticket.eta * (1 - done), 2),  # type: ignore[union-attr]
                    "state": _state("running", 1, last.step, last.steps),
                    "current_image": base64.b64encode(preview).decode("ascii") if preview else None,
                    "textinfo": f"Step {last.step} of {last.steps}"}
        return {"progress": 0.0, "eta_relative": 0.0, "state": _state(), "current_image": None, "textinfo": None}

    return await a1111_answer(request, work)


async def _cancel_latest(request: Request, who: Who) -> dict[str, Any]:
    try:
        await _service(request).cancel(who)  # the caller's latest queued or running job; refunded
    except (NotFound, NotAllowed):
        pass  # nothing to stop, or it has just finished
    return {}


@probes.post("/interrupt")
async def interrupt(request: Request) -> Any:
    """Cancel the caller's latest queued or running job (refunded)."""
    return await a1111_answer(request, lambda who: _cancel_latest(request, who))


@probes.post("/skip")
async def skip(request: Request) -> Any:
    """As interrupt: a job's images come from one batch, so there is no next image to skip to."""
    return await a1111_answer(request, lambda who: _cancel_latest(request, who))
