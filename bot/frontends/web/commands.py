"""The HTTP API (``/v1``): make, watch, fetch, rate and share images with an API key.

Each route is one service call. ``POST /v1/images`` answers 202 only after the job row is
committed (the service's ``imagine`` returns then): acknowledge only what is stored. With an
``Idempotency-Key`` header, the request is stored first and a repeat returns the same job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.frontends.common import upload_too_large
from bot.frontends.web.access import Caller, caller, key_holder, rate_limit
from bot.frontends.web.formats import MEDIA_TYPES, convert
from bot.frontends.web.views import image_json, job_json, preview_data, update_event
from bot.service import AlreadyAccepted, Cancelled, Finished, ImagineService, JobView, Queued, Running, Ticket, Update
from generation.core.errors import ImagineError, InvalidRequest
from generation.core.request import denoising_steps

__all__ = ["ImageRequest", "read_image_request", "router", "with_body_schemas"]

router = APIRouter(prefix="/v1", tags=["images"])
Auth = Annotated[Caller, Depends(caller)]


class ImageRequest(BaseModel):
    """``/imagine`` over HTTP: the prompt may carry flags; the typed options are the same."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=4000, examples=["a red fox in snow --ar 16:9"])
    aspect: str | None = Field(None, examples=["16:9"])
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    negative: str | None = Field(None, max_length=2000)
    count: int | None = Field(None, ge=1, le=4)
    style: str | None = None
    steps: int | None = Field(None, ge=1, le=50)
    lora: str | None = Field(None, max_length=400, examples=["pixel-art:0.8, ink"])
    refine: bool | None = Field(None, description="let a small language model write a detailed prompt")
    model: str | None = Field(None, description="which of the bot's models draws it (GET /v1/models lists them)")
    image: str | None = Field(None, max_length=28_000_000,
                              description="a picture to start from, base64 (PNG, JPEG or WebP, up to 20 MB); "
                                          "or send multipart/form-data with the file in the `image` part")
    strength: float | None = Field(None, description="with an image: how much of it changes, 0.1 to 1")


class Rating(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stars: int = Field(ge=1, le=5)
    comment: str | None = Field(None, min_length=1, max_length=500,
                                description="what you think of the image, kept beside the rating")


class Accepted(BaseModel):
    job_id: str
    position: int
    eta_s: float
    eta_measured: bool = Field(True, description="false: no batch was timed on this bot yet, so eta_s is a rough guess")
    status_url: str
    notes: list[str] = Field(default_factory=list, description="e.g. the refined prompt, or why it was not used")


def _service(request: Request) -> ImagineService:
    return request.app.state.service


async def read_image_request(request: Request) -> tuple[ImageRequest, bytes | None]:
    """The body as JSON (``image`` in base64) or multipart/form-data (the file in the ``image`` part);
    the studio's form posts through here too."""
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1)
            part = form.get("image")
            fields = {k: v for k, v in form.items() if k != "image" and isinstance(v, str)}
            body = ImageRequest.model_validate(fields)
            if isinstance(part, str) or part is None:
                return body, _base64(part) if part else None
            too_large = upload_too_large(part.size)
            if too_large:
                raise InvalidRequest("image", too_large)
            return body, await part.read()
        body = ImageRequest.model_validate_json(await request.body())
    except ValidationError as err:  # FastAPI's own 422, its locations under "body"
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from None
    return body, _base64(body.image) if body.image else None


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("image", "The `image` field must be the picture's bytes in base64 (a data: URL "
                                      "works too); or send multipart/form-data with the file.") from None


_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/ImageRequest"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["prompt"], "properties": {
        **{k: v for k, v in ImageRequest.model_json_schema()["properties"].items() if k != "image"},
        "image": {"type": "string", "format": "binary"}}}}}}}


def with_body_schemas(app: Any) -> None:
    """Put ImageRequest in the OpenAPI components (FastAPI leaves it out: the route reads its body itself)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            schema.setdefault("components", {}).setdefault("schemas", {})["ImageRequest"] = (
                ImageRequest.model_json_schema())
        return app.openapi_schema  # type: ignore[no-any-return]

    app.openapi = openapi


@router.post("/images", status_code=202, response_model=Accepted, openapi_extra=_BODY)
async def create_images(request: Request, response: Response, auth: Annotated[Caller, Depends(key_holder)],
                        idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Accepted:
    """Queue images; 202 once the job is stored (quota charged), with its place in line.

    A repeat with a known ``Idempotency-Key`` gets its job before any limit is counted. API
    keys have the per-key rate limit ([web] rate_limit), not the chats' request spacing.
    """
    service = _service(request)
    body, image = await read_image_request(request)
    options = body.model_dump(exclude={"prompt", "image"}, exclude_none=True)
    origin = None
    if idempotency_key:
        origin = ("web", f"{auth.key_id}:{idempotency_key}")
        known = await service.accepted(*origin)
        if known is not None:
            return _accepted_before(service, known, response)
    rate_limit(request, auth)
    if origin is not None:
        await service.receive(*origin, {"prompt": body.prompt, **options, "image": image is not None})
    try:
        ticket = await service.imagine(auth.who, body.prompt, target={"web": True}, origin=origin, spaced=False,
                                       image=image, **options)
    except AlreadyAccepted as again:  # a repeat that arrived while the first was being accepted
        return _accepted_before(service, again.job_id, response)
    except ImagineError:
        if origin is not None:
            await service.handled(*origin)  # a refusal is an answer: do not process it again
        raise
    request.app.state.front.follow(ticket)
    response.headers["Location"] = f"/v1/jobs/{ticket.job_id}"
    return Accepted(job_id=ticket.job_id, position=ticket.position, eta_s=round(ticket.eta, 2),
                    eta_measured=ticket.eta_measured, status_url=f"/v1/jobs/{ticket.job_id}",
                    notes=list(ticket.notes))


def _accepted_before(service: ImagineService, job_id: str, response: Response) -> Accepted:
    """The answer to a repeated request: its job, where it is now in line."""
    ticket = service.ticket(job_id)
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return Accepted(job_id=job_id, position=ticket.position if ticket else 0,
                    eta_s=round(ticket.eta, 2) if ticket else 0.0, status_url=f"/v1/jobs/{job_id}")


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request, auth: Auth) -> dict[str, Any]:
    """Status, place in line, ETA, and the image URLs when done."""
    return job_json(await _service(request).job_view(auth.who, job_id))


@router.get("/jobs/{job_id}/input", response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def get_job_input(job_id: str, request: Request, auth: Auth) -> Response:
    """The picture you sent to start this job from (PNG, as stored: fitted to its size)."""
    path = await _service(request).job_input(auth.who, job_id)
    return Response(await asyncio.to_thread(path.read_bytes), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=86400"})


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request, auth: Auth) -> StreamingResponse:
    """Server-Sent Events: queued, running (per step; a preview event after the steps that have a
    live preview: a base64 JPEG), then done, failed or cancelled."""
    service = _service(request)
    view = await service.job_view(auth.who, job_id)  # 404 for another's job
    ticket: Ticket | None = service.ticket(job_id)

    async def stream() -> AsyncIterator[str]:
        if ticket is None or ticket.done:
            # finished: its recorded history, as the live stream sent it (marked "replayed");
            # waiting in storage for a restart: its one stored status
            replayed = _replayed(view) if view.status in FINAL else [("status", job_json(view))]
            for number, (name, data) in enumerate(replayed, start=1):
                yield update_event(number, name, data)
            return
        number = 0
        async for update in ticket.updates():
            number += 1
            yield update_event(number, *_event(update))
            if isinstance(update, Running) and update.preview is not None:  # the image as it forms
                number += 1
                yield update_event(number, "preview", preview_data(update.step, update.steps, update.preview))

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


FINAL = ("done", "delivered", "failed", "cancelled")


def _replayed(view: JobView) -> list[tuple[str, dict[str, Any]]]:
    """A finished job's events from what was recorded: queued, running (if it ran), then how it
    ended; each with ``at`` (when, UTC) and ``replayed: true``."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("queued", {"position": 0, "eta_s": 0.0, "at": view.created_at, "replayed": True})]
    done = view.status in ("done", "delivered")
    if view.started_at:
        img2img = view.request.get("kind") == "img2img"  # txt2img ignores its strength
        steps = denoising_steps(int(view.request.get("steps", 0)), view.request.get("strength") if img2img else None)
        events.append(("running", {"step": steps if done else 0, "steps": steps, "at": view.started_at,
                                   "replayed": True}))
    end = {"at": view.finished_at, "replayed": True}
    if done:
        events.append(("done", {"images": [image_json(view.job_id, i) for i in view.images], **end}))
    elif view.status == "failed":
        events.append(("failed", {"message": view.error or "The request failed.", **end}))
    else:
        events.append(("cancelled", {"message": Cancelled().message, **end}))
    return events


def _event(update: Update) -> tuple[str, dict[str, Any]]:
    if isinstance(update, Queued):
        return "queued", {"position": update.position, "eta_s": round(update.eta, 2),
                          "eta_measured": update.measured}
    if isinstance(update, Running):
        return "running", {"step": update.step, "steps": update.steps}
    if isinstance(update, Finished):
        return "done", {"images": [image_json(update.delivery.job_id, i) for i in update.delivery.images]}
    return ("cancelled" if isinstance(update, Cancelled) else "failed"), {"message": update.message}


@router.delete("/jobs/{job_id}")
async def cancel_job(job_id: str, request: Request, auth: Auth) -> dict[str, Any]:
    """Cancel a queued or running job; its quota is refunded."""
    service = _service(request)
    await service.job_view(auth.who, job_id)  # 404 for another's job
    outcome = await service.cancel(auth.who, job_id)
    return {"job_id": outcome.job_id, "status": outcome.status, "refunded": outcome.refunded}


@router.get("/images/{ref}", response_class=Response,
            responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}})
async def get_image(ref: str, request: Request, auth: Auth,
                    format: Literal["png", "jpeg", "webp", "svg"] = "png") -> Response:  # noqa: A002
    """One image (yours, or a shared one) as png, jpeg, webp or svg (vectorized)."""
    service = _service(request)
    stored, _ = await service.image_by_ref(auth.who, ref)
    if format == "png":
        data = await asyncio.to_thread(stored.path.read_bytes)
    else:  # converted once and cached on disk (vectorizing takes seconds), removed with the image
        path = await service.derived(stored.path, f"as.{format}", lambda source: convert(source, format))
        data = await asyncio.to_thread(path.read_bytes)
    return Response(data, media_type=MEDIA_TYPES[format], headers={"Cache-Control": "private, max-age=86400"})


class UpscaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["subtle", "creative"] = Field("subtle", description="how much the tiled pass may change")


@router.post("/images/{ref}/upscale", status_code=202, response_model=Accepted)
async def upscale_image(ref: str, request: Request, response: Response, auth: Auth,
                        body: UpscaleRequest | None = None) -> Accepted:
    """Upscale 2x (a new job of yours, charged quota.upscale_cost); 202 once it is stored.

    As ``POST /v1/images``, here and for zoom and pan: the per-key rate limit, not the chats' spacing."""
    job_id, index = _ref(ref)
    ticket = await _service(request).upscale(auth.who, job_id, index, (body or UpscaleRequest()).mode,
                                             target={"web": True}, spaced=False)
    request.app.state.front.follow(ticket)
    response.headers["Location"] = f"/v1/jobs/{ticket.job_id}"
    return Accepted(job_id=ticket.job_id, position=ticket.position, eta_s=round(ticket.eta, 2),
                    eta_measured=ticket.eta_measured, status_url=f"/v1/jobs/{ticket.job_id}")


class ZoomRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    factor: Literal["1.5", "2"] = Field("2", description="how far to zoom out")
    prompt: str | None = Field(None, max_length=4000, description="a new prompt (default: the image's own)")


class PanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    direction: Literal["left", "right", "up", "down"]
    prompt: str | None = Field(None, max_length=4000, description="a new prompt (default: the image's own)")


@router.post("/images/{ref}/zoom", status_code=202, response_model=Accepted)
async def zoom_image(ref: str, body: ZoomRequest, request: Request, response: Response, auth: Auth) -> Accepted:
    """Zoom out 1.5x or 2x (a new job of yours): the new border is painted, the image kept."""
    return await _outpaint(request, response, auth, ref, "zoom", body.factor, body.prompt)


@router.post("/images/{ref}/pan", status_code=202, response_model=Accepted)
async def pan_image(ref: str, body: PanRequest, request: Request, response: Response, auth: Auth) -> Accepted:
    """Pan left, right, up or down (a new job of yours): the canvas grows to that side."""
    return await _outpaint(request, response, auth, ref, "pan", body.direction, body.prompt)


async def _outpaint(request: Request, response: Response, auth: Caller, ref: str, kind: str, mode: str,
                    prompt: str | None) -> Accepted:
    job_id, index = _ref(ref)
    ticket = await _service(request).outpaint(auth.who, job_id, index, kind, mode, prompt=prompt,
                                              target={"web": True}, spaced=False)
    request.app.state.front.follow(ticket)
    response.headers["Location"] = f"/v1/jobs/{ticket.job_id}"
    return Accepted(job_id=ticket.job_id, position=ticket.position, eta_s=round(ticket.eta, 2),
                    eta_measured=ticket.eta_measured, status_url=f"/v1/jobs/{ticket.job_id}")


def _ref(ref: str) -> tuple[str, int]:
    """(job id, 0-based index) of an image reference JOB-N."""
    job_id, _, number = ref.rpartition("-")
    if not job_id or not number.isdecimal() or int(number) < 1:
        raise InvalidRequest("ref", f"An image reference is JOB-N (e.g. 3f2a9c1b7d4e-1), not {ref!r}.")
    return job_id, int(number) - 1


@router.post("/images/{ref}/rating")
async def rate_image(ref: str, body: Rating, request: Request, auth: Auth) -> dict[str, Any]:
    """Your 1–5 star rating of an image (yours, or a shared one), with a comment if you like."""
    await _service(request).rate_ref(auth.who, ref, body.stars, body.comment)
    return {"image": ref, "stars": body.stars, "comment": body.comment}


@router.post("/images/{ref}/share")
async def share_image(ref: str, request: Request, auth: Auth) -> dict[str, Any]:
    """Put one of your images in the public gallery."""
    share_id = await _service(request).share(auth.who, ref)
    base = request.app.state.settings.public_url or str(request.base_url).rstrip("/")
    return {"image": ref, "share_id": share_id, "url": f"{base}/i/{share_id}"}


@router.get("/history")
async def history(request: Request, auth: Auth, page: Annotated[int, Query(ge=0)] = 0,
                  per_page: Annotated[int, Query(ge=1, le=25)] = 10,
                  search: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    """Your jobs, newest first, with image URLs and ratings (and ``input_image``, the URL of the
    picture a job started from, when you sent one)."""
    view = await _service(request).history(auth.who, page=page, per_page=per_page, search=search)
    return {
        "page": view.page, "per_page": view.per_page, "total": view.total, "has_more": view.has_more,
        "jobs": [{"job_id": e.job_id, "prompt": e.text, "status": e.status, "created_at": e.created_at,
                  "error": e.error, "input_image": f"/v1/jobs/{e.job_id}/input" if e.input_image else None,
                  "images": [{**image_json(e.job_id, i.image), "my_stars": i.my_stars,
                              "average": i.average, "ratings": i.ratings} for i in e.images]}
                 for e in view.entries],
    }


@router.get("/quota")
async def quota(request: Request, auth: Auth) -> dict[str, Any]:
    """Images used and left in this quota window, and when it resets."""
    status = await _service(request).quota(auth.who)
    return {"used": status.used, "limit": status.limit, "remaining": status.remaining,
            "resets_at": status.resets_at.isoformat()}
