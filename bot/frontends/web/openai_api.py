"""The OpenAI Images API (``/v1/images/generations``, ``edits``, ``variations``, ``/v1/models``).

What the official ``openai`` client, Open WebUI and LibreChat send, as adapters over
``service.imagine`` (the same quota, moderation, fair queue, history and storage as every
other interface). Parameters our model has no use for are mapped or ignored as
``docs/openai-a1111.md`` says; errors come in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` with the status codes the client maps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bot.frontends.web.compat import Problem, ProblemError, answer, check_model, encoded, model_names, wait_for
from bot.service import Delivery, ImagineService, Who, image_ref, nearest_aspect

__all__ = ["openai_router"]

openai_router = APIRouter(prefix="/v1", tags=["OpenAI compatible"])

_OPENAI_SIZES = {"1024x1024", "1792x1024", "1024x1792", "1536x1024", "1024x1536", "512x512", "256x256"}
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 429: "rate_limit_error",
          503: "server_error", 500: "server_error"}


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int = Field(1, ge=1, le=4)
    size: str | None = Field(None, description="auto, or WxH (mapped to the nearest aspect bucket)")
    response_format: Literal["b64_json", "url"] | None = None
    user: str | None = Field(None, max_length=200)


class GenerateBody(_Common):
    prompt: str = Field(min_length=1, max_length=4000)
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None
    style: Literal["vivid", "natural"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    background: Literal["auto", "transparent", "opaque"] | None = None
    moderation: Literal["auto", "low"] | None = None
    stream: bool | None = None
    partial_images: int | None = None


def _error(problem: Problem) -> JSONResponse:
    kind = "insufficient_quota" if problem.code == "insufficient_quota" else _TYPES.get(problem.status,
                                                                                        "invalid_request_error")
    return JSONResponse({"error": {"message": problem.message, "type": kind, "param": problem.param,
                                   "code": problem.code}}, problem.status, headers=problem.headers)


async def _answer(request: Request, work: Callable[[Who], Awaitable[Any]]) -> Any:
    return await answer(request, work, _error)


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise ProblemError(Problem(400, "invalid_json", "The body must be JSON (Content-Type: application/json).")
                           ) from None


def _size(service: ImagineService, size: str | None, model: str = "") -> str | None:
    """``size`` as one of our aspect ratios (None: auto, the caller's default)."""
    if size is None or size == "auto":
        return None
    width, _, height = size.lower().partition("x")
    if not (width.isdecimal() and height.isdecimal()) or int(width) == 0 or int(height) == 0:
        raise ProblemError(Problem(400, "invalid_size", f"size must be auto or WIDTHxHEIGHT, like 1024x1024 "
                                   f"or 1792x1024, not {size!r}.", "size"))
    return nearest_aspect(service.caps_for(model), int(width), int(height))


def _options(service: ImagineService, body: _Common) -> dict[str, Any]:
    model = check_model(service, body.model)
    options: dict[str, Any] = {"count": body.n, **({"model": model} if model else {})}
    aspect = _size(service, body.size, model)
    if aspect is not None:
        options["aspect"] = aspect
    return options


def _target(body: _Common) -> dict[str, Any]:
    target: dict[str, Any] = {"web": True, "api": "openai"}
    if body.user:
        target["end_user"] = body.user  # kept with the job for the operator; quota follows the key
    return target


async def _data(request: Request, delivery: Delivery, response_format: str | None,
                output_format: str = "png") -> dict[str, Any]:
    """``{"created", "data"}``: base64 images, or URLs the same key can fetch."""
    prompt = delivery.request.prompt
    items: list[dict[str, Any]] = []
    for image in delivery.images:
        if response_format == "url":
            base = request.app.state.settings.public_url or str(request.base_url).rstrip("/")
            query = "" if output_format == "png" else f"?format={output_format}"
            items.append({"url": f"{base}/v1/images/{image_ref(delivery.job_id, image.index)}{query}",
                          "revised_prompt": prompt})
        else:
            items.append({"b64_json": await asyncio.to_thread(encoded, image.path, output_format),
                          "revised_prompt": prompt})
    return {"created": int(datetime.now(timezone.utc).timestamp()), "data": items}


async def _run(request: Request, who: Who, body: _Common, text: str, output_format: str = "png",
               **options: Any) -> Any:
    service: ImagineService = request.app.state.service
    ticket = await service.imagine(who, text, target=_target(body), spaced=False, **_options(service, body), **options)
    delivery = await wait_for(request, service, who, ticket)
    if delivery is None:
        return JSONResponse({}, 499)  # the client is gone; nobody reads this
    return await _data(request, delivery, body.response_format, output_format)


@openai_router.post("/images/generations", openapi_extra={"requestBody": {"content": {"application/json": {
    "schema": GenerateBody.model_json_schema()}}}})
async def generations(request: Request) -> Any:
    """Make images from a prompt and answer when they are ready (OpenAI Images API)."""
    async def work(who: Who) -> Any:
        body = GenerateBody.model_validate(await _json(request))
        if body.stream:
            raise ProblemError(Problem(400, "unsupported", "stream is not supported; leave it out.", "stream"))
        service: ImagineService = request.app.state.service
        options: dict[str, Any] = {}
        caps = service.caps_for(check_model(service, body.model))
        if body.quality in ("hd", "high"):  # more steps: the model's largest step count
            options["steps"] = max(caps.steps)
        elif body.quality in ("low",):
            options["steps"] = min(caps.steps)
        if body.style == "natural":
            options["style"] = "none"
        return await _run(request, who, body, body.prompt, body.output_format or "png", **options)

    return await _answer(request, work)


class _Upload(_Common):
    prompt: str = Field("", max_length=4000)
    quality: str | None = None
    background: str | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    input_fidelity: str | None = None
    output_compression: int | None = None
    partial_images: int | None = None
    stream: bool | None = None


async def _form_upload(request: Request, *, needs_prompt: bool) -> tuple[_Upload, bytes]:
    try:
        form = await request.form()
    except Exception:  # not multipart, or a broken one
        raise ProblemError(Problem(400, "invalid_body", "Send multipart/form-data with the image in `image`."
                                   )) from None
    files = [item for key in ("image", "image[]") for item in form.getlist(key) if hasattr(item, "read")]
    if not files:
        raise ProblemError(Problem(400, "missing_image", "An image is needed in the `image` field.", "image"))
    if len(files) > 1:
        raise ProblemError(Problem(400, "too_many_images", f"One image per request, not {len(files)}.", "image"))
    if form.get("mask") is not None:
        raise ProblemError(Problem(400, "unsupported", "Masks (inpainting) are not supported yet: send the image "
                                   "without a mask to rework the whole image from your prompt.", "mask"))
    fields = {k: v.strip() for k, v in form.multi_items() if isinstance(v, str) and k not in ("image", "image[]")}
    body = _Upload.model_validate(fields)
    if needs_prompt and not body.prompt.strip():
        raise ProblemError(Problem(400, "missing_prompt", "An edit needs a prompt saying what to make of the image.",
                                   "prompt"))
    return body, await files[0].read()


@openai_router.post("/images/edits")
async def edits(request: Request) -> Any:
    """img2img from an uploaded image and a prompt (multipart ``image``; a ``mask`` is refused for now)."""
    async def work(who: Who) -> Any:
        body, data = await _form_upload(request, needs_prompt=True)
        return await _run(request, who, body, body.prompt, body.output_format or "png", image=data)

    return await _answer(request, work)


@openai_router.post("/images/variations")
async def variations(request: Request) -> Any:
    """Variations of an uploaded image (img2img with the prompt it carries, if any)."""
    async def work(who: Who) -> Any:
        body, data = await _form_upload(request, needs_prompt=False)
        return await _run(request, who, body, body.prompt, body.output_format or "png", image=data)

    return await _answer(request, work)


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "imagine-bot"}


@openai_router.get("/models")
async def list_models(request: Request) -> Any:
    """The models this bot serves (several: each of the catalogue's names)."""
    async def work(who: Who) -> Any:
        service: ImagineService = request.app.state.service
        names = model_names(service) if len(service.catalogue) > 1 else model_names(service)[:1]
        return {"object": "list", "data": [_model(name) for name in names]}

    return await _answer(request, work)


@openai_router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Any:
    """One model by name (404 naming the ones this bot serves)."""
    async def work(who: Who) -> Any:
        service: ImagineService = request.app.state.service
        if model_id not in model_names(service):
            shown = model_names(service)[:max(1, len(service.catalogue))]
            raise ProblemError(Problem(404, "model_not_found", f"This bot has no model {model_id!r}; it serves "
                                       f"{', '.join(repr(n) for n in shown)}.", "model"))
        return _model(model_id if len(service.catalogue) > 1 else model_names(service)[0])

    return await _answer(request, work)
