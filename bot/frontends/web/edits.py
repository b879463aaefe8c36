"""The HTTP API's edit and describe routes (``/v1``, issue 24).

    POST /v1/images/{ref}/edit   🖌️ Vary (Region): {"prompt": new text, "region": "the cat"} (the
                                 mask model finds it) or {"prompt", "mask": base64} (white = repaint;
                                 multipart: the file in a ``mask`` part); 202 with the new job
    GET  /v1/jobs/{id}/mask      the region an edit repainted, tinted over its source (JPEG)
    POST /v1/describe            a picture (JSON ``image`` in base64, or multipart) → the caption and
                                 four /imagine prompts; free, limited per user per hour (429)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.frontends.common import upload_too_large
from bot.frontends.edits import mask_overlay
from bot.frontends.web.access import Caller, caller
from bot.service import ImagineService, NotFound
from generation.core.errors import InvalidRequest

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["images"])
Auth = Annotated[Caller, Depends(caller)]


class EditRequest(BaseModel):
    """What to repaint and with what: the region by words, or a drawn mask."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=4000, description="what to paint in the region",
                        examples=["a small red fox"])
    region: str | None = Field(None, max_length=200, description="what to change, in words (the mask model)",
                               examples=["the cat"])
    mask: str | None = Field(None, max_length=28_000_000,
                             description="a drawn mask instead, base64: white marks the region to repaint")
    invert: bool = Field(False, description="repaint everything but the marked region")


class Accepted(BaseModel):
    job_id: str
    position: int
    eta_s: float
    eta_measured: bool = True
    status_url: str
    mask_url: str = Field(description="the region repainted, tinted over the image (once the job is done)")


class Described(BaseModel):
    caption: str
    aspect: str
    suggestions: list[str] = Field(description="four /imagine prompts; POST one to /v1/images")


def _service(request: Request) -> ImagineService:
    return request.app.state.service


async def _body(request: Request, model: type[BaseModel], file_field: str) -> tuple[Any, bytes | None]:
    """The body as JSON (the file in base64) or multipart/form-data (the file in ``file_field``)."""
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1)
            part = form.get(file_field)
            fields: dict[str, Any] = {k: v for k, v in form.items() if k != file_field and isinstance(v, str)}
            if "invert" in fields:
                fields["invert"] = fields["invert"].lower() in ("1", "true", "yes", "on")
            body = model.model_validate(fields)
            if isinstance(part, str) or part is None:
                return body, _base64(part, file_field) if part else None
            too_large = upload_too_large(part.size)
            if too_large:
                raise InvalidRequest(file_field, too_large)
            return body, await part.read()
        body = model.model_validate_json(await request.body())
    except ValidationError as err:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from None
    text = getattr(body, file_field, None)
    return body, _base64(text, file_field) if text else None


def _base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(name, f"The `{name}` field must be the picture's bytes in base64 (a data: URL "
                                   "works too); or send multipart/form-data with the file.") from None


def _body_schema(model: type[BaseModel], file_field: str) -> dict[str, Any]:
    """The route's body in the OpenAPI document (the route reads JSON or multipart itself)."""
    schema = model.model_json_schema()
    form = {**schema, "properties": {**schema["properties"], file_field: {"type": "string", "format": "binary"}}}
    return {"requestBody": {"content": {"application/json": {"schema": schema},
                                        "multipart/form-data": {"schema": form}}}}


@router.post("/images/{ref}/edit", status_code=202, response_model=Accepted,
             openapi_extra=_body_schema(EditRequest, "mask"))
async def edit_image(ref: str, request: Request, response: Response, auth: Auth) -> Accepted:
    """🖌️ Vary (Region): repaint one region of an image (a new job of yours, one image charged);
    a region that covers nothing or nearly everything is refused (422) and costs nothing."""
    body, mask = await _body(request, EditRequest, "mask")
    job_id, _, number = ref.rpartition("-")
    if not job_id or not number.isdecimal() or int(number) < 1:
        raise InvalidRequest("ref", f"An image reference is JOB-N (e.g. 3f2a9c1b7d4e-1), not {ref!r}.")
    ticket = await _service(request).edit(auth.who, job_id, int(number) - 1, body.prompt, words=body.region,
                                          mask=mask, invert=body.invert, target={"web": True})
    request.app.state.front.follow(ticket)
    response.headers["Location"] = f"/v1/jobs/{ticket.job_id}"
    return Accepted(job_id=ticket.job_id, position=ticket.position, eta_s=round(ticket.eta, 2),
                    eta_measured=ticket.eta_measured, status_url=f"/v1/jobs/{ticket.job_id}",
                    mask_url=f"/v1/jobs/{ticket.job_id}/mask")


@router.get("/jobs/{job_id}/mask", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the region, tinted red"}})
async def edit_mask(job_id: str, request: Request, auth: Auth) -> Response:
    """The region an edit repainted, tinted over the image it started from (yours, or as every action allows)."""
    delivery = await _service(request).job_delivery(auth.who, job_id)
    data = await asyncio.to_thread(mask_overlay, delivery)
    if data is None:
        raise NotFound(f"Request {job_id} is not an edit, so it has no mask.")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


class DescribeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, max_length=28_000_000, description="the picture, base64 (or multipart `image`)")


@router.post("/describe", response_model=Described, openapi_extra=_body_schema(DescribeRequest, "image"))
async def describe(request: Request, auth: Auth) -> Described:
    """A caption and four /imagine prompts for a picture (free; limited per user per hour: 429)."""
    _, data = await _body(request, DescribeRequest, "image")
    if data is None:
        raise InvalidRequest("image", "Send the picture to describe: `image` in base64, or multipart/form-data "
                                      "with the file in an `image` part.")
    found = await _service(request).describe(auth.who, data, target={"web": True})
    return Described(caption=found.caption, aspect=found.aspect, suggestions=list(found.suggestions))
