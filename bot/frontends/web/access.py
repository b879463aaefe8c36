"""Who is calling: the API key in ``Authorization: Bearer``, a rate limit per key, errors as HTTP.

The key may also come as the password of HTTP Basic auth (any user name), as A1111 clients send
it. A missing or unknown key is 401; too many requests on one key is 429 with ``Retry-After``.
Errors the service raises for users become JSON ``{"detail": …}`` with a status that says why.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from bot.frontends.common import apology, new_reference
from bot.service import ImagineService, NotAllowed, NotFound, QuotaExceeded, Who
from generation.core.errors import ImagineError, InvalidRequest, QueueFull

__all__ = ["Caller", "RateLimiter", "api_key", "caller", "error_response"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """An authenticated API caller: who the key acts as, and the key's id."""

    who: Who
    key_id: int


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts up to that many."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, key_id: int) -> float:
        """0 when allowed (one token used), else seconds until the next token."""
        now = self._clock()
        tokens, last = self._buckets.get(key_id, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key_id] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key_id] = (tokens - 1, now)
        if len(self._buckets) > 10_000:  # forget idle keys (full buckets)
            self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.capacity - 1}
        return 0.0


def api_key(authorization: str) -> str:
    """The key in ``Bearer KEY`` or ``Basic base64(user:KEY)``; "" when there is none."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2].strip()
    return ""


async def caller(request: Request) -> Caller:
    """FastAPI dependency: the caller of an API route (401 / 429 otherwise)."""
    key = api_key(request.headers.get("authorization", ""))
    service: ImagineService = request.app.state.service
    found = await service.authenticate(key) if key else None
    if found is None:
        raise HTTPException(401, "A valid API key is needed: Authorization: Bearer ib_…",
                            headers={"WWW-Authenticate": "Bearer"})
    who, key_id = found
    wait = request.app.state.limiter.take(key_id)
    if wait > 0:
        raise HTTPException(429, "Too many requests with this key; slow down.",
                            headers={"Retry-After": str(math.ceil(wait))})
    return Caller(who, key_id)


def error_response(err: Exception) -> JSONResponse:
    """A service error as the HTTP answer that fits it."""
    if isinstance(err, InvalidRequest):
        return JSONResponse({"detail": [{"loc": ["body", err.field], "msg": str(err), "type": "invalid"}]}, 422)
    if isinstance(err, NotFound):
        return JSONResponse({"detail": str(err)}, 404)
    if isinstance(err, ImagineError):
        status = 400
        headers: dict[str, str] = {}
        retry = getattr(err, "retry_after", None)
        if isinstance(err, (QuotaExceeded, QueueFull)) or getattr(err, "reason", None) == "too_soon":
            status = 429 if not isinstance(err, QueueFull) else 503
        elif isinstance(err, NotAllowed) or type(err).__name__ in ("Restricted", "BlockedPrompt"):
            status = 403
        if isinstance(retry, (int, float)) and retry > 0:
            headers["Retry-After"] = str(math.ceil(retry))
        return JSONResponse({"detail": str(err), "error": type(err).__name__}, status, headers=headers)
    ref = new_reference()
    logger.error("web request failed (reference %s)", ref, exc_info=err)
    return JSONResponse({"detail": apology(ref)}, 500)
