"""The studio: make images in the browser, watch them being made, and act on them (a session's routes).

    GET  /studio                          the form (``?from=JOB-N`` fills it from one of your images)
    POST /studio/generate                 the /v1 ImageRequest as JSON, or multipart with a picture to
                                          start from (``image``, ``strength``) → the job, its place in line
    GET  /studio/jobs/{id}                the job's state; /events: Server-Sent Events until it ends
    GET  /studio/quota                    images left in this quota window
    GET  /studio/images/{ref}             png (default), jpeg, webp or svg; ``download=1`` saves it
    GET  /studio/images/{ref}/thumb.jpg   a thumbnail for the grid
    GET  /studio/jobs/{id}/input.jpg      a thumbnail of the picture you sent to start from
    POST /studio/images/{ref}/rating|share|delete|variation, /studio/jobs/{id}/reroll
    POST /studio/images/{ref}/upscale|zoom|pan   the toolbox, as the chat's buttons (``{"mode"}``,
                                          ``{"factor"}``, ``{"direction"}``)
    POST /studio/images/{ref}/edit        🖌️ Vary (Region): the brush's mask (white = repaint) or words

Every route is one service call with the session's account (quota, history, ratings, settings
as in the chat); POSTs need the session's CSRF token. Refusals come back as ``{"detail": …}``
with the chat's own words, and the page shows them (``static/studio.js``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bot.frontends.web.commands import read_image_request
from bot.frontends.web.formats import MEDIA_TYPES, convert, thumbnail
from bot.frontends.web.signin import check_csrf, page_session, render, session, signed_out
from bot.frontends.web.social import share_links
from bot.frontends.web.views import preview_data, update_event
from bot.service import (Cancelled, Finished, ImagineService, JobView, NotFound, Queued, Running, StoredImage, Ticket,
                         WebSession, image_ref)
from generation.core.errors import ImagineError, InvalidRequest

__all__ = ["studio_image", "studio_router"]

studio_router = APIRouter(prefix="/studio", tags=["studio"], include_in_schema=False)
Session = Annotated[WebSession, Depends(session)]
Checked = Annotated[WebSession, Depends(check_csrf)]


class Stars(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stars: int = Field(ge=1, le=5)
    comment: str | None = Field(None, min_length=1, max_length=500,
                                description="Words beside the rating (checked like a prompt); kept with it")


class EditBody(BaseModel):
    """🖌️ Vary (Region) from the studio: the new text, and the brush's mask or the words naming the part."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=4000)
    region: str | None = Field(None, max_length=200)
    mask: str | None = Field(None, max_length=28_000_000, description="a PNG, base64: white = repaint")


def _service(request: Request) -> ImagineService:
    return request.app.state.service


def studio_image(job_id: str, image: StoredImage) -> dict[str, Any]:
    """One image as the studio's script shows it."""
    ref = image_ref(job_id, image.index)
    return {"id": ref, "job_id": job_id, "url": f"/studio/images/{ref}", "seed": image.seed,
            "width": image.width, "height": image.height, "thumb": f"/studio/images/{ref}/thumb.jpg",
            "page": f"/me/{ref}"}


def _job(view: JobView) -> dict[str, Any]:
    status = "done" if view.status in ("done", "delivered") else view.status
    return {"job_id": view.job_id, "status": status, "position": view.position, "eta_s": round(view.eta, 2),
            "prompt": view.text, "error": view.error,
            "images": [studio_image(view.job_id, i) for i in view.images] if status == "done" else []}


def _accepted(request: Request, ticket: Ticket) -> dict[str, Any]:
    request.app.state.front.follow(ticket)  # marked delivered once stored: the page fetches the images
    return {"job_id": ticket.job_id, "position": ticket.position, "eta_s": round(ticket.eta, 2),
            "events": f"/studio/jobs/{ticket.job_id}/events", "notes": list(ticket.notes)}


def _prefill(view: JobView, ref: str) -> dict[str, Any]:
    """The form's values from one of your images (its own seed, one image)."""
    data = view.request
    index = int(ref.rpartition("-")[2]) - 1
    seed = next((i.seed for i in view.images if i.index == index), data.get("seed"))
    loras = ", ".join(f"{name}:{weight:g}" for name, weight in data.get("loras") or ())
    return {"prompt": data.get("original_prompt") or data.get("prompt", ""), "negative": data.get("negative_prompt", ""),
            "size": (data.get("width"), data.get("height")), "aspect": None, "seed": seed,
            "steps": data.get("steps"), "style": data.get("style", "none"), "lora": loras, "count": 1,
            "refine": bool(data.get("refine")), "model": data.get("model") or ""}


@studio_router.get("", response_class=HTMLResponse)
async def studio_page(request: Request, from_: Annotated[str, Query(alias="from", max_length=40)] = "") -> Response:
    """The form, your settings as its defaults (or an image's parameters with ``?from=``)."""
    found = await page_session(request)
    if found is None:
        return signed_out(request, "Sign in first: send /web in a private chat with the bot for a link.")
    service = _service(request)
    choices = service.studio_choices()
    settings = await service.settings(found.who)
    values: dict[str, Any] = {"prompt": "", "negative": "", "size": None, "seed": None,
                              "steps": settings.get("steps") or choices.default_steps,
                              "style": settings.get("style") or "none", "lora": "",
                              "count": settings.get("count") or 1, "refine": bool(settings.get("refine")),
                              "aspect": settings.get("aspect") or "1:1", "model": settings.get("model") or ""}
    note = ""
    if from_ and not from_.rpartition("-")[2].isdecimal():
        note = f"There is no image {from_} of yours to start from."
    elif from_:
        try:
            values = _prefill(await service.job_view(found.who, from_.rpartition("-")[0]), from_)
            note = f"Filled in from image {from_}: change what you like and press Generate."
        except ImagineError:
            note = f"There is no image {from_} of yours to start from."
    if values.get("size"):
        values["aspect"] = next((ar for ar, w, h in choices.aspects if (w, h) == tuple(values["size"])),
                                values.get("aspect") or "1:1")
    quota = await service.quota(found.who)
    return render(request, "studio.html", {"session": found, "choices": choices, "values": values,
                                           "note": note, "quota": quota})


@studio_router.post("/generate", status_code=202)
async def generate(request: Request, found: Checked) -> dict[str, Any]:
    """Queue images for the session's account (charged now; refusals cost nothing). JSON as
    ``POST /v1/images`` takes it, or multipart with a picture to start from in ``image``."""
    body, image = await read_image_request(request)  # the API's own parsing and upload limits
    options = body.model_dump(exclude={"prompt", "image"}, exclude_none=True)
    ticket = await _service(request).imagine(found.who, body.prompt, target={"web": True}, image=image, **options)
    return _accepted(request, ticket)


@studio_router.get("/quota")
async def quota(request: Request, found: Session) -> dict[str, Any]:
    """Images used and left in this quota window (the chat account's)."""
    status = await _service(request).quota(found.who)
    return {"used": status.used, "limit": status.limit, "remaining": status.remaining,
            "resets_at": status.resets_at.isoformat()}


@studio_router.get("/jobs/{job_id}")
async def job(job_id: str, request: Request, found: Session) -> dict[str, Any]:
    return _job(await _service(request).job_view(found.who, job_id))


@studio_router.get("/jobs/{job_id}/events", response_class=StreamingResponse)
async def job_events(job_id: str, request: Request, found: Session) -> StreamingResponse:
    """Server-Sent Events: queued (place, ETA), running (step of steps; a live preview event with
    it where the step has one), then done, failed or cancelled."""
    service = _service(request)
    view = await service.job_view(found.who, job_id)  # NotFound for another's job
    ticket = service.ticket(job_id)

    async def stream() -> AsyncIterator[str]:
        if ticket is None:  # not running in this process: its stored state
            yield update_event(1, "status", _job(view))
            return
        number = 0
        data: dict[str, Any]
        async for update in ticket.updates():
            number += 1
            if isinstance(update, Queued):
                name, data = "queued", {"position": update.position, "eta_s": round(update.eta, 2)}
            elif isinstance(update, Running):
                name, data = "running", {"step": update.step, "steps": update.steps}
                if update.preview is not None:  # the image as it forms, before the step's event
                    yield update_event(number, "preview", preview_data(update.step, update.steps, update.preview))
                    number += 1
            elif isinstance(update, Finished):
                name, data = "done", {"images": [studio_image(job_id, i) for i in update.delivery.images]}
            else:
                name = "cancelled" if isinstance(update, Cancelled) else "failed"
                data = {"message": update.message}
            yield update_event(number, name, data)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@studio_router.post("/jobs/{job_id}/reroll", status_code=202)
async def reroll(job_id: str, request: Request, found: Checked) -> dict[str, Any]:
    """The same request with a new seed (the service answers NotFound for another's job)."""
    return _accepted(request, await _service(request).reroll(found.who, job_id, target={"web": True}))


@studio_router.get("/images/{ref}", response_class=Response)
async def image(ref: str, request: Request, found: Session,
                format: Literal["png", "jpeg", "webp", "svg"] = "png",  # noqa: A002
                download: bool = False) -> Response:
    """One of your images (or a shared one) in a format; ``download=1`` saves it as a file."""
    stored, _ = await _service(request).image_by_ref(found.who, ref)
    data = await asyncio.to_thread(convert, stored.path, format)
    headers = {"Cache-Control": "private, max-age=86400"}
    if download:
        headers["Content-Disposition"] = f'attachment; filename="imagine-{ref}.{"jpg" if format == "jpeg" else format}"'
    return Response(data, media_type=MEDIA_TYPES[format], headers=headers)


@studio_router.get("/images/{ref}/thumb.jpg", response_class=Response)
async def thumb(ref: str, request: Request, found: Session) -> Response:
    stored, _ = await _service(request).image_by_ref(found.who, ref)
    data = await asyncio.to_thread(thumbnail, stored.path)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@studio_router.get("/jobs/{job_id}/input.jpg", response_class=Response)
async def input_thumb(job_id: str, request: Request, found: Session) -> Response:
    """A thumbnail of the picture you sent to start a job from (NotFound for another's)."""
    path = await _service(request).job_input(found.who, job_id)
    data = await asyncio.to_thread(thumbnail, path)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@studio_router.post("/images/{ref}/rating")
async def rate(ref: str, body: Stars, request: Request, found: Checked) -> dict[str, Any]:
    await _service(request).rate_ref(found.who, ref, body.stars, body.comment)
    return {"image": ref, "stars": body.stars, "comment": body.comment}


@studio_router.post("/images/{ref}/share")
async def share(ref: str, request: Request, found: Checked) -> dict[str, Any]:
    """Put the image in the public gallery: its page and "share to" links."""
    service = _service(request)
    share_id = await service.share(found.who, ref)
    base = request.app.state.settings.public_url or str(request.base_url).rstrip("/")
    url = f"{base}/i/{share_id}"
    view = await service.job_view(found.who, ref.rpartition("-")[0])
    text = str(view.request.get("prompt", ""))
    return {"image": ref, "share_id": share_id, "url": url,
            "share_to": [{"name": n, "url": u} for n, u in share_links(url, text)]}


@studio_router.post("/images/{ref}/variation", status_code=202)
async def variation(ref: str, request: Request, found: Checked) -> dict[str, Any]:
    """Variations of one image (img2img from it; the service answers NotFound for another's)."""
    job_id, _, number = ref.rpartition("-")
    if not number.isdecimal() or int(number) < 1:
        raise NotFound(f"There is no image {ref}.")
    ticket = await _service(request).variation(found.who, job_id, int(number) - 1, target={"web": True})
    return _accepted(request, ticket)


class Upscale(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["subtle", "creative"] = "subtle"


class Zoom(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: Literal["1.5", "2"] = "2"


class Pan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    direction: Literal["left", "right", "up", "down"]


def _image_of(ref: str) -> tuple[str, int]:
    job_id, _, number = ref.rpartition("-")
    if not job_id or not number.isdecimal() or int(number) < 1:
        raise NotFound(f"There is no image {ref}.")
    return job_id, int(number) - 1


@studio_router.post("/images/{ref}/upscale", status_code=202)
async def upscale(ref: str, body: Upscale, request: Request, found: Checked) -> dict[str, Any]:
    """⬆️ Upscale (Subtle or Creative): a 2x job of the session's account, as the chat's button."""
    job_id, index = _image_of(ref)
    return _accepted(request, await _service(request).upscale(found.who, job_id, index, body.mode,
                                                              target={"web": True}))


@studio_router.post("/images/{ref}/zoom", status_code=202)
async def zoom(ref: str, body: Zoom, request: Request, found: Checked) -> dict[str, Any]:
    """🔍 Zoom out 1.5x or 2x: the border painted, the image kept."""
    job_id, index = _image_of(ref)
    return _accepted(request, await _service(request).outpaint(found.who, job_id, index, "zoom", body.factor,
                                                               target={"web": True}))


@studio_router.post("/images/{ref}/pan", status_code=202)
async def pan(ref: str, body: Pan, request: Request, found: Checked) -> dict[str, Any]:
    """↔️ Pan left, right, up or down: the canvas grows to that side."""
    job_id, index = _image_of(ref)
    return _accepted(request, await _service(request).outpaint(found.who, job_id, index, "pan", body.direction,
                                                               target={"web": True}))


@studio_router.post("/images/{ref}/edit", status_code=202)
async def edit(ref: str, body: EditBody, request: Request, found: Checked) -> dict[str, Any]:
    """Repaint the part the brush covered (or the words name) with the new text: one image charged."""
    job_id, index = _image_of(ref)
    try:
        mask = base64.b64decode(body.mask.partition(",")[2] if body.mask.startswith("data:") else body.mask,
                                validate=True) if body.mask else None
    except (binascii.Error, ValueError):
        raise InvalidRequest("mask", "The painted mask could not be read; paint it again.") from None
    ticket = await _service(request).edit(found.who, job_id, index, body.prompt, words=body.region,
                                          mask=mask, target={"web": True})
    return _accepted(request, ticket)


@studio_router.post("/images/{ref}/delete")
async def delete(ref: str, request: Request, found: Checked) -> dict[str, Any]:
    """Delete one of your images (its file too, unless another request made the same one)."""
    await _service(request).delete_image(found.who, ref)
    return {"image": ref, "deleted": True}
