"""A1111's image utilities: ``png-info`` (the settings stored in an image) and ``extra-single-image``.

``png-info`` reads what our PNGs carry (A1111's "parameters" text and our JSON) and the EXIF of
a JPEG/WebP we re-encoded. ``extra-single-image`` is a job in the fair queue
(``ImagineService.enlarge_upload``, through the one upload path of every front end): the toolbox's
upscaler (``upscale.model``'s network, else Lanczos) makes it 2x, and this adapter brings that to
the factor asked for (``upscaling_resize``) with Lanczos. The toolbox's 2x upscale of a result,
with its img2img pass, is ``POST /v1/images/{ref}/upscale``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image, UnidentifiedImageError

from bot.frontends.web.a1111_api import a1111_answer, body_of
from bot.frontends.web.compat import Problem, ProblemError, decode_b64_image, wait_for
from bot.service import Who
from storage.files import METADATA_KEY, OWN_KEY, exif_parameters, read_metadata

__all__ = ["extras", "upscaler_names"]

extras = APIRouter(prefix="/sdapi/v1", tags=["A1111 compatible"])
# A1111's own pattern for "Key: value" pairs in the last line of its parameters text
_PAIR = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_parameters(text: str) -> dict[str, Any]:
    """A1111's parameters text as its png-info API answers it: Prompt, Negative prompt, then each pair."""
    lines = text.strip().split("\n")
    settings = lines.pop() if lines and _PAIR.match(lines[-1]) and "Steps:" in lines[-1] else ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    found: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PAIR.findall(settings):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1].replace('\\"', '"')
        if key.strip() == "Size" and "x" in value:
            found["Size-1"], _, found["Size-2"] = value.partition("x")
        else:
            found[key.strip()] = value
    return found


def _png_info(data: bytes) -> dict[str, Any]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            texts = {k: v for k, v in (getattr(image, "text", {}) or {}).items() if isinstance(v, str)}
    except (UnidentifiedImageError, OSError):
        raise ProblemError(Problem(422, "invalid_image", "The image could not be read.", "image")) from None
    info = texts.pop(METADATA_KEY, "") or exif_parameters(data) or ""
    own = read_metadata(data)
    texts.pop(OWN_KEY, None)
    items = {**texts, **({"imagine": own} if own else {})}
    return {"info": info, "items": items, "parameters": parse_parameters(info) if info else {}}


@extras.post("/png-info")
async def png_info(request: Request) -> Any:
    """The generation settings stored in an image."""
    async def work(who: Who) -> Any:
        body = await body_of(request)
        return _png_info(decode_b64_image(body.get("image"), "image"))

    return await a1111_answer(request, work)


@extras.post("/extra-single-image")
async def extra_single_image(request: Request) -> Any:
    """Enlarge an image ``upscaling_resize`` times (2 by default) with the toolbox's upscaler."""
    async def work(who: Who) -> Any:
        body = await body_of(request)
        service = request.app.state.service
        names = upscaler_names(service)
        upscaler = body.get("upscaler_1") or names[1]
        if upscaler not in names and upscaler != "Lanczos":  # Lanczos: what clients set up before
            raise ProblemError(Problem(422, "unknown_upscaler", f"Unknown upscaler {upscaler!r}; this bot has "
                                       f"{' and '.join(names)} (see /sdapi/v1/upscalers).", "upscaler_1"))
        factor = body.get("upscaling_resize", 2)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 4:
            raise ProblemError(Problem(422, "invalid_value", f"upscaling_resize must be from 1 to 4, not {factor!r}.",
                                       "upscaling_resize"))
        data = decode_b64_image(body.get("image"), "image")
        if upscaler == "None" or factor == 1:  # nothing to enlarge: the picture as sent
            return {"html_info": "<p>None</p>", "image": base64.b64encode(data).decode("ascii")}
        ticket = await service.enlarge_upload(who, data, target={"web": True, "api": "a1111"}, spaced=False)
        delivery = await wait_for(request, service, who, ticket)
        if delivery is None:  # the client hung up: the job was cancelled and refunded
            return {"html_info": "", "image": ""}
        png = await asyncio.to_thread(_to_factor, delivery.images[0].path, data, factor)
        name = service.config.upscaler
        return {"html_info": f"<p>{name} x{factor:g}</p>", "image": base64.b64encode(png).decode("ascii")}

    return await a1111_answer(request, work)


def upscaler_names(service: Any) -> list[str]:
    """The upscalers as A1111 lists them: "None", then the toolbox's (its network's name, or Lanczos)."""
    return ["None", service.config.upscaler]


def _to_factor(path: Any, sent: bytes, factor: float) -> bytes:
    """The 2x result at ``factor`` times the size of the picture ``sent`` (Lanczos), as PNG."""
    with Image.open(io.BytesIO(sent)) as original:
        size = (max(1, round(original.width * factor)), max(1, round(original.height * factor)))
    with Image.open(path) as made:
        image = made.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
