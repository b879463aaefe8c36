"""What the OpenAI and A1111 compatible routes share: the caller, errors, waiting, images out.

Both are adapters over the same service calls as ``/v1/images`` and the chat commands
(``service.imagine`` with a :class:`Who`): quotas, moderation, history and storage are the
service's. Their calls are synchronous, so a route waits for its job in the fair queue
(:func:`wait_for`); a client that hangs up cancels its job, which refunds it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import ValidationError

from bot.frontends.common import apology, new_reference
from bot.frontends.web.access import caller
from bot.frontends.web.formats import convert
from bot.safety import BlockedPrompt
from bot.service import Delivery, ImagineService, NotAllowed, NotFound, QuotaExceeded, Ticket, Who
from generation.core.errors import GenerationFailed, ImagineError, InvalidRequest, JobCancelled, QueueFull
from storage.files import METADATA_KEY

__all__ = ["OPENAI_MODEL_ALIASES", "Problem", "ProblemError", "answer", "check_model", "decode_b64_image", "encoded",
           "infotext", "model_names", "nearest_steps", "wait_for"]

logger = logging.getLogger(__name__)

QUEUE_FULL_RETRY_S = 10


@dataclass(frozen=True)
class Problem:
    """An error as both APIs answer it: status, a code word, the message, the parameter, headers."""

    status: int
    code: str
    message: str
    param: str | None = None
    headers: dict[str, str] | None = None


class ProblemError(Exception):
    """Raised inside a compatible route; its adapter renders :attr:`problem` in its own shape."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


async def answer(request: Request, work: Callable[[Who], Awaitable[Any]],
                 render: Callable[[Problem], JSONResponse], *, invalid_status: int = 400) -> Any:
    """Authenticate (Bearer key, or Basic with the key as password), run ``work``, render any failure.

    ``render`` draws a :class:`Problem` in the API's own error shape; a body that does not
    validate is ``invalid_status`` (OpenAI: 400, A1111: 422).
    """
    who: Who | None = None
    try:
        try:
            who = (await caller(request)).who
        except HTTPException as err:  # 401 no or wrong key, 429 too many requests on the key
            code = "invalid_api_key" if err.status_code == 401 else "rate_limit_exceeded"
            raise ProblemError(Problem(err.status_code, code, str(err.detail), None, dict(err.headers or {})))
        return await work(who)
    except ProblemError as err:
        return render(err.problem)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return render(Problem(invalid_status, "invalid_value", message, param))
    except ImagineError as err:
        return render(await problem_of(err, request.app.state.service, who))
    except Exception as err:  # logged with a reference; the caller gets only the reference
        ref = new_reference()
        logger.error("%s failed (reference %s)", request.url.path, ref, exc_info=err)
        return render(Problem(500, "internal_error", apology(ref)))


async def problem_of(err: ImagineError, service: ImagineService, who: Who | None) -> Problem:
    """The status and code of a service error (the same mapping for both APIs)."""
    message = str(err)
    if isinstance(err, InvalidRequest):
        return Problem(400, "invalid_value", message, err.field)
    if isinstance(err, BlockedPrompt):
        return Problem(400, "content_policy_violation", message, "prompt")
    if isinstance(err, QuotaExceeded):
        wait = 3600.0
        if who is not None:
            status = await service.quota(who)
            wait = (status.resets_at - service.clock()).total_seconds()
        # the quota resets in hours: a client's automatic retry would only fail again
        return Problem(429, "insufficient_quota", message, None,
                       {"Retry-After": str(max(1, math.ceil(wait))), "x-should-retry": "false"})
    if isinstance(err, QueueFull):
        return Problem(503, "queue_full", message, None, {"Retry-After": str(QUEUE_FULL_RETRY_S)})
    retry = getattr(err, "retry_after", None)
    headers = {"Retry-After": str(math.ceil(retry))} if isinstance(retry, (int, float)) and retry > 0 else None
    if getattr(err, "reason", None) == "too_soon":
        return Problem(429, "rate_limit_exceeded", message, None, headers)
    if isinstance(err, NotFound):
        return Problem(404, "not_found", message)
    if isinstance(err, NotAllowed) or type(err).__name__ == "Restricted":
        return Problem(403, "not_allowed", message, None, headers)
    if isinstance(err, JobCancelled):
        return Problem(409, "cancelled", message)
    if isinstance(err, GenerationFailed):
        return Problem(500, "generation_failed", message, None, {"x-should-retry": "false"})
    return Problem(400, "refused", message)  # e.g. an image the image check blocked (refunded)


def model_names(service: ImagineService) -> list[str]:
    """The names a caller may use for this bot's models (the default first). One model: its name
    and its model id; several: the catalogue's names."""
    catalogue = service.catalogue
    if len(catalogue) > 1:
        return [catalogue.default, *(n for n in catalogue.names if n != catalogue.default)]
    names = [service.caps.name]
    if service.model_id not in names:
        names.append(service.model_id)
    return names


# OpenAI's own model names, which some clients cannot change (LibreChat's DALL·E tool hard-codes
# them): they ask for an image, so they get the default model
OPENAI_MODEL_ALIASES = ("dall-e-2", "dall-e-3", "gpt-image-1")


def check_model(service: ImagineService, model: str | None, param: str = "model") -> str:
    """The model a request names, as the service takes it ("" = the default; a catalogue name or
    its model id is accepted; OpenAI's names: the default); a Problem naming the ones this bot
    serves when it has no such model."""
    if model is None or model.strip() == "" or model.strip() in OPENAI_MODEL_ALIASES:
        return ""
    name = model.strip()
    if name.endswith("]") and " [" in name:  # A1111 titles: "name [hash]"
        name = name.rsplit(" [", 1)[0]
    catalogue = service.catalogue
    if len(catalogue) > 1:
        for known, info in catalogue.models.items():
            if name.lower() in (known.lower(), info.model_id.lower()):
                return catalogue.resolve(known)
        raise ProblemError(Problem(400, "model_not_found", f"This bot has no model {model!r}; it serves "
                                   f"{', '.join(repr(n) for n in model_names(service))}.", param))
    if name not in model_names(service):
        raise ProblemError(Problem(400, "model_not_found", f"This bot has no model {model!r}; it serves "
                                   f"{', '.join(repr(n) for n in model_names(service)[:1])}.", param))
    return ""


def nearest_steps(service: ImagineService, steps: int, model: str = "") -> int:
    """The step count of ``model`` nearest ``steps`` (the larger on a tie)."""
    return min(service.caps_for(model).steps, key=lambda s: (abs(s - steps), -s))


async def wait_for(request: Request, service: ImagineService, who: Who, ticket: Ticket) -> Delivery | None:
    """The job's stored images; None when the client hung up first (the job is then cancelled)."""
    request.app.state.front.follow(ticket)  # marks it delivered once stored, as for /v1/images
    waiting = request.app.state.compat_waiting
    waiting[who.key] = ticket
    delivery = asyncio.ensure_future(ticket.delivery())
    gone = asyncio.ensure_future(_hung_up(request))
    try:
        done, _ = await asyncio.wait({delivery, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if waiting.get(who.key) is ticket:
            del waiting[who.key]
    if delivery in done:
        return delivery.result()  # raises the ImagineError the job ended with
    delivery.cancel()
    try:
        await service.cancel(who, ticket.job_id)  # refunded
    except ImagineError:
        pass  # it finished meanwhile: it stays in the caller's history
    return None


async def _hung_up(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def encoded(path: Path, fmt: str = "png") -> str:
    """A stored image as base64 text in ``fmt`` (blocking: run it in a thread)."""
    return base64.b64encode(convert(path, fmt)).decode("ascii")


def infotext(path: Path) -> str:
    """The A1111 "parameters" text stored in one of our PNGs ("" when it has none)."""
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or {}).get(METADATA_KEY, "")
    return text if isinstance(text, str) else ""


def decode_b64_image(value: Any, field: str) -> bytes:
    """Base64 image text (a ``data:image/...;base64,`` URL too) as bytes; a Problem naming ``field`` if not."""
    if not isinstance(value, str) or not value.strip():
        raise ProblemError(Problem(400, "invalid_value", f"{field} must be a base64-encoded image.", field))
    text = value.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=False)
    except (ValueError, TypeError):
        raise ProblemError(Problem(400, "invalid_value", f"{field} is not valid base64.", field)) from None
