"""A1111's image utilities: ``png-info`` (the settings stored in an image) and ``extra-single-image``.

``png-info`` reads what our PNGs carry (A1111's "parameters" text and our JSON) and the EXIF of
a JPEG/WebP we re-encoded. ``extra-single-image`` enlarges with Lanczos at once
(``ImagineService.upscale_upload``, through the one upload path of every front end); the
toolbox's queued 2x upscale of a result is ``POST /v1/images/{ref}/upscale``.
"""

from __future__ import annotations

import base64
import io
import re
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image, UnidentifiedImageError

from bot.frontends.web.a1111_api import a1111_answer, body_of
from bot.frontends.web.compat import Problem, ProblemError, decode_b64_image
from bot.service import Who
from storage.files import METADATA_KEY, OWN_KEY, exif_parameters, read_metadata

__all__ = ["extras"]

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
    """Enlarge an image (Lanczos, ``upscaling_resize`` times, 2 by default)."""
    async def work(who: Who) -> Any:
        body = await body_of(request)
        upscaler = body.get("upscaler_1") or "Lanczos"
        if upscaler not in ("Lanczos", "None"):
            raise ProblemError(Problem(422, "unknown_upscaler", f"Unknown upscaler {upscaler!r}; this bot has "
                                       "Lanczos (see /sdapi/v1/upscalers).", "upscaler_1"))
        factor = body.get("upscaling_resize", 2) if upscaler == "Lanczos" else 1
        data = decode_b64_image(body.get("image"), "image")
        png = await request.app.state.service.upscale_upload(who, data, factor)
        return {"html_info": f"<p>Lanczos x{factor:g}</p>", "image": base64.b64encode(png).decode("ascii")}

    return await a1111_answer(request, work)
