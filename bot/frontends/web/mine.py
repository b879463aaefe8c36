"""My images: the session's history as a searchable, paged grid, and one image with its parameters.

    GET /me?q=&page=    thumbnails of your images, newest first (search matches the prompt)
    GET /me/{ref}       one image: its parameters (the /imagine command to copy, a link that
                        fills the studio form with them), ratings, share, variation, delete
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from bot.frontends.web.signin import page_session, render, signed_out
from bot.frontends.web.studio import studio_image
from bot.service import ImagineService
from generation.core.errors import ImagineError

__all__ = ["mine_router"]

mine_router = APIRouter(tags=["studio"], include_in_schema=False)
PER_PAGE = 12  # requests a page (each with up to 4 images)


def _service(request: Request) -> ImagineService:
    return request.app.state.service


@mine_router.get("/me", response_class=HTMLResponse)
async def my_images(request: Request, q: Annotated[str, Query(max_length=200)] = "",
                    page: Annotated[int, Query(ge=0, le=10_000)] = 0) -> Response:
    """Your images as a grid of thumbnails, newest first, with a search box and pages."""
    found = await page_session(request)
    if found is None:
        return signed_out(request, "Sign in first: send /web in a private chat with the bot for a link.")
    view = await _service(request).history(found.who, page=page, per_page=PER_PAGE, search=q or None)
    cards = [{**studio_image(entry.job_id, shown.image), "prompt": entry.text, "stars": shown.my_stars,
              "created_at": entry.created_at,
              "from": f"/studio/jobs/{entry.job_id}/input.jpg" if entry.input_image else None}
             for entry in view.entries for shown in entry.images]
    failed = [entry for entry in view.entries if not entry.images and entry.status not in ("done", "delivered")]
    return render(request, "mine.html", {"session": found, "cards": cards, "failed": failed, "view": view, "q": q})


@mine_router.get("/me/{ref}", response_class=HTMLResponse)
async def my_image(ref: str, request: Request) -> Response:
    """One of your images with its parameters, ratings and actions."""
    found = await page_session(request)
    if found is None:
        return signed_out(request, "Sign in first: send /web in a private chat with the bot for a link.")
    service = _service(request)
    job_id, _, number = ref.rpartition("-")
    try:
        view = await service.job_view(found.who, job_id)
    except ImagineError:
        view = None
    shown = None if view is None else next((i for i in view.images if str(i.index + 1) == number), None)
    if view is None or shown is None:
        return render(request, "mine_missing.html", {"session": found, "ref": ref}, 404)
    _, share_id = await service.image_by_ref(found.who, ref)
    mine, mean, count = await service.image_rating(found.who, shown.image_id)
    data = view.request
    params: list[tuple[str, Any]] = [
        ("Prompt", data.get("prompt", "")), ("Your words", data.get("original_prompt") or ""),
        ("Negative", data.get("negative_prompt", "")), ("Size", f"{shown.width}×{shown.height}"),
        ("Seed", shown.seed), ("Steps", data.get("steps")), ("Style", data.get("style", "none")),
        ("LoRAs", ", ".join(f"{n}:{w:g}" for n, w in data.get("loras") or ())),
        ("Made", view.created_at[:16].replace("T", " ") + " UTC"),
    ]
    command = f"/imagine {view.text}"
    return render(request, "mine_image.html", {
        "session": found, "image": studio_image(job_id, shown), "ref": ref, "params": [p for p in params if p[1] != ""],
        "command": command, "mine": mine,
        "from": f"/studio/jobs/{job_id}/input.jpg" if view.input_image else None, "average": mean, "ratings": count, "share_id": share_id,
        "public_url": request.app.state.settings.public_url or str(request.base_url).rstrip("/"),
    })
