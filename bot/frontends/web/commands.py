"""The HTTP API (``/v1``): make, watch, fetch, rate and share images with an API key.

Each route is one service call. ``POST /v1/images`` answers 202 only after the job row is
committed (the service's ``imagine`` returns then): acknowledge only what is stored. With an
``Idempotency-Key`` header, the request is stored first and a repeat returns the same job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bot.frontends.web.access import Caller, caller
from bot.frontends.web.formats import MEDIA_TYPES, convert
from bot.frontends.web.views import image_json, job_json, update_event
from bot.service import AlreadyAccepted, Cancelled, Finished, ImagineService, Queued, Running, Ticket, Update
from generation.core.errors import ImagineError

__all__ = ["ImageRequest", "router"]

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


class Rating(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stars: int = Field(ge=1, le=5)


class Accepted(BaseModel):
    job_id: str
    position: int
    eta_s: float
    status_url: str
    notes: list[str] = Field(default_factory=list, description="e.g. the refined prompt, or why it was not used")


def _service(request: Request) -> ImagineService:
    return request.app.state.service


@router.post("/images", status_code=202, response_model=Accepted)
async def create_images(body: ImageRequest, request: Request, response: Response, auth: Auth,
                        idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Accepted:
    """Queue images; 202 once the job is stored (quota charged), with its place in line."""
    service = _service(request)
    options = body.model_dump(exclude={"prompt"}, exclude_none=True)
    origin = None
    if idempotency_key:
        origin = ("web", f"{auth.key_id}:{idempotency_key}")
        await service.receive(*origin, {"prompt": body.prompt, **options})
    try:
        ticket = await service.imagine(auth.who, body.prompt, target={"web": True}, origin=origin, **options)
    except AlreadyAccepted as again:
        response.headers["Location"] = f"/v1/jobs/{again.job_id}"
        return Accepted(job_id=again.job_id, position=0, eta_s=0.0, status_url=f"/v1/jobs/{again.job_id}")
    except ImagineError:
        if origin is not None:
            await service.handled(*origin)  # a refusal is an answer: do not process it again
        raise
    request.app.state.front.follow(ticket)
    response.headers["Location"] = f"/v1/jobs/{ticket.job_id}"
    return Accepted(job_id=ticket.job_id, position=ticket.position, eta_s=round(ticket.eta, 2),
                    status_url=f"/v1/jobs/{ticket.job_id}", notes=list(ticket.notes))


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request, auth: Auth) -> dict[str, Any]:
    """Status, place in line, ETA, and the image URLs when done."""
    return job_json(await _service(request).job_view(auth.who, job_id))


@router.get("/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request, auth: Auth) -> StreamingResponse:
    """Server-Sent Events: queued, running (per step), then done, failed or cancelled."""
    service = _service(request)
    view = await service.job_view(auth.who, job_id)  # 404 for another's job
    ticket: Ticket | None = service.ticket(job_id)

    async def stream() -> AsyncIterator[str]:
        if ticket is None:  # not running in this process: its stored state is final (or waits)
            yield update_event(1, "status", job_json(view))
            return
        number = 0
        async for update in ticket.updates():
            number += 1
            yield update_event(number, *_event(update))

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _event(update: Update) -> tuple[str, dict[str, Any]]:
    if isinstance(update, Queued):
        return "queued", {"position": update.position, "eta_s": round(update.eta, 2)}
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
    stored, _ = await _service(request).image_by_ref(auth.who, ref)
    data = await asyncio.to_thread(convert, stored.path, format)
    return Response(data, media_type=MEDIA_TYPES[format], headers={"Cache-Control": "private, max-age=86400"})


@router.post("/images/{ref}/rating")
async def rate_image(ref: str, body: Rating, request: Request, auth: Auth) -> dict[str, Any]:
    """Your 1–5 star rating of an image (yours, or a shared one)."""
    await _service(request).rate_ref(auth.who, ref, body.stars)
    return {"image": ref, "stars": body.stars}


@router.post("/images/{ref}/share")
async def share_image(ref: str, request: Request, auth: Auth) -> dict[str, Any]:
    """Put one of your images in the public gallery."""
    share_id = await _service(request).share(auth.who, ref)
    base = request.app.state.settings.public_url
    return {"image": ref, "share_id": share_id, "url": f"{base}/i/{share_id}"}


@router.get("/history")
async def history(request: Request, auth: Auth, page: Annotated[int, Query(ge=0)] = 0,
                  per_page: Annotated[int, Query(ge=1, le=25)] = 10,
                  search: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    """Your jobs, newest first, with image URLs and ratings."""
    view = await _service(request).history(auth.who, page=page, per_page=per_page, search=search)
    return {
        "page": view.page, "per_page": view.per_page, "total": view.total, "has_more": view.has_more,
        "jobs": [{"job_id": e.job_id, "prompt": e.text, "status": e.status, "created_at": e.created_at,
                  "error": e.error,
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
