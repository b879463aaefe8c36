"""What the web shows: JSON shapes of jobs and images, SSE frames, and the gallery pages.

The gallery is server-rendered (jinja2) and works without JavaScript: thumbnails with alt text
and ``loading="lazy"``, a search box that is a plain GET form, and the /imagine command in a
read-only field; a small script only adds a "copy" button's clipboard action.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from bot.frontends.web.access import client_address
from bot.frontends.web.formats import thumbnail
from bot.service import ImagineService, JobView, SharedImage, StoredImage, image_ref

__all__ = ["error_page", "gallery_router", "image_json", "is_page", "job_json", "update_event"]

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
async def _per_address(request: Request) -> None:
    """The public gallery's limit per client address (``gallery_rate_limit`` a minute): 429 past it."""
    wait = request.app.state.gallery_limiter.take(client_address(request))
    if wait > 0:
        raise HTTPException(429, "Too many gallery requests from your address; slow down.",
                            headers={"Retry-After": str(math.ceil(wait))})


gallery_router = APIRouter(tags=["gallery"], include_in_schema=False, dependencies=[Depends(_per_address)])
PER_PAGE = 24


def image_json(job_id: str, image: StoredImage) -> dict[str, Any]:
    ref = image_ref(job_id, image.index)
    return {"id": ref, "image_id": image.image_id, "url": f"/v1/images/{ref}", "seed": image.seed,
            "width": image.width, "height": image.height}  # the chats name it by image_id


def job_json(view: JobView) -> dict[str, Any]:
    status = "done" if view.status in ("done", "delivered") else view.status
    return {"job_id": view.job_id, "status": status, "position": view.position, "eta_s": round(view.eta, 2),
            "prompt": view.text, "created_at": view.created_at, "error": view.error,
            "images": [image_json(view.job_id, i) for i in view.images] if status == "done" else []}


def preview_data(step: int, steps: int, preview: bytes) -> dict[str, Any]:
    """The ``preview`` event's data: the live preview of a running job as a base64 JPEG."""
    return {"step": step, "steps": steps, "media_type": "image/jpeg",
            "image": base64.b64encode(preview).decode("ascii")}


def update_event(number: int, name: str, data: dict[str, Any]) -> str:
    """One Server-Sent Events frame."""
    return f"id: {number}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


_TITLES = {400: "That did not work", 403: "Not allowed", 404: "Not found", 422: "That address is not right",
           429: "Too many requests", 500: "Something went wrong", 503: "Not available right now"}


def is_page(request: Request) -> bool:
    """A request for a gallery page (or a browser's, outside the API): errors answer as HTML."""
    path = request.url.path
    if path == "/" or path.startswith("/i/"):
        return True
    api = path.startswith(("/v1/", "/healthz", "/metrics", "/docs", "/openapi", "/static/"))
    return not api and "text/html" in request.headers.get("accept", "")


def error_page(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    """An error as an HTML page of the gallery, with its HTTP status."""
    title = _TITLES.get(status, "That did not work" if status < 500 else "Something went wrong")
    return templates.TemplateResponse(request, "error.html", {"title": title, "message": message},
                                      status_code=status, headers=headers)


def _alt(item: SharedImage) -> str:
    prompt = str(item.request.get("prompt", "")).strip()
    return f"AI-generated image: {prompt}" if prompt else "AI-generated image"


def _service(request: Request) -> ImagineService:
    return request.app.state.service


@gallery_router.get("/", response_class=HTMLResponse)
async def gallery(request: Request, order: Literal["new", "top"] = "new",
                  q: Annotated[str, Query(max_length=200)] = "",
                  page: Annotated[int, Query(ge=0, le=10_000)] = 0) -> HTMLResponse:
    """Shared images, newest or top rated, with a search box."""
    found = await _service(request).gallery(order=order, search=q or None, page=page, per_page=PER_PAGE)
    return templates.TemplateResponse(request, "gallery.html", {
        "page": found, "order": order, "q": q, "alt": _alt,
    })


@gallery_router.get("/i/{share_id}", response_class=HTMLResponse)
async def shared_page(share_id: str, request: Request) -> HTMLResponse:
    """One shared image with its prompt, settings, model, rating and its /imagine command."""
    item = await _service(request).shared_image(share_id)
    return templates.TemplateResponse(request, "image.html", {"item": item, "alt": _alt(item)})


@gallery_router.get("/i/{share_id}/image.png")
async def shared_file(share_id: str, request: Request) -> FileResponse:
    """The public copy: the pixels and what the page shows, nothing else (made once, cached)."""
    path = await _service(request).shared_file(share_id)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})


@gallery_router.get("/i/{share_id}/thumb.jpg")
async def shared_thumb(share_id: str, request: Request) -> FileResponse:
    """A thumbnail, made once and cached on disk (removed with the image)."""
    service = _service(request)
    item = await service.shared_image(share_id)
    path = await service.derived(item.path, "thumb384.jpg", thumbnail)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})
