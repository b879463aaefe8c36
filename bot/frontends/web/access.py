"""Who is calling: the API key in ``Authorization: Bearer``, a rate limit per key, errors as HTTP.

The key may also come as the password of HTTP Basic auth (any user name), as A1111 clients send
it. A missing or unknown key is 401; too many requests on one key is 429 with ``Retry-After``;
after ``auth_failures_free`` failed keys from one client address, each further try from it
waits longer (:class:`AuthThrottle`, 429 with ``Retry-After``).
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
from bot.safety import BlockedPrompt, Restricted
from bot.service import DescribeLimited, ImagineService, NotAllowed, NotFound, QuotaExceeded, Who
from generation.core.errors import ImagineError, InvalidRequest, QueueFull

__all__ = ["AuthThrottle", "Caller", "RateLimiter", "api_key", "caller", "client_address", "error_response",
           "key_holder", "rate_limit"]

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
        self._buckets: dict[int | str, tuple[float, float]] = {}

    def take(self, key_id: int | str) -> float:
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


class AuthThrottle:
    """Failed authentication per client address: ``free`` failures, then each try waits, the
    wait doubling with every further failure (1 s, 2 s, 4 s, … up to ``cap`` s). A success from
    the address clears it. Guessing keys is then slow, and every failure is logged (without the key).
    """

    def __init__(self, free: int = 10, cap: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.cap, self._clock = free, cap, clock
        self._failures: dict[str, tuple[int, float]] = {}  # address -> (failures in a row, may try again at)

    def wait(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        _, at = self._failures.get(address, (0, 0.0))
        return max(0.0, at - self._clock())

    def failed(self, address: str) -> float:
        """Record a failure; the wait it earns."""
        count = self._failures.get(address, (0, 0.0))[0] + 1
        wait = 0.0 if count <= self.free else min(self.cap, 2.0 ** (count - self.free - 1))
        self._failures[address] = (count, self._clock() + wait)
        if len(self._failures) > 10_000:  # forget addresses whose wait is over
            now = self._clock()
            self._failures = {a: v for a, v in self._failures.items() if v[1] > now}
        return wait

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


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
    found = await key_holder(request)
    rate_limit(request, found)
    return found


async def key_holder(request: Request) -> Caller:
    """FastAPI dependency: the caller, not yet rate limited (401 without a valid key); a route
    that answers repeats (an Idempotency-Key) calls :func:`rate_limit` after that answer."""
    address = client_address(request)
    throttle: AuthThrottle = request.app.state.auth_throttle
    wait = throttle.wait(address)
    if wait > 0:  # not even checked: a guess costs the guesser time, not the database
        raise HTTPException(429, "Too many failed API keys from your address; wait before trying again.",
                            headers={"Retry-After": str(math.ceil(wait))})
    key = api_key(request.headers.get("authorization", ""))
    service: ImagineService = request.app.state.service
    found = await service.authenticate(key) if key else None
    if found is None:
        wait = throttle.failed(address)
        logger.warning("web: failed API authentication from %s (%s); next try allowed in %.0f s",
                       address, "no key" if not key else "unknown key", wait)  # never the key itself
        raise HTTPException(401, "A valid API key is needed: Authorization: Bearer ib_…",
                            headers={"WWW-Authenticate": "Bearer"})
    throttle.succeeded(address)
    who, key_id = found
    return Caller(who, key_id)


def rate_limit(request: Request, found: Caller) -> None:
    """Spend one of the key's requests; 429 with Retry-After when it has none left."""
    wait = request.app.state.limiter.take(found.key_id)
    if wait > 0:
        raise HTTPException(429, "Too many requests with this key; slow down.",
                            headers={"Retry-After": str(math.ceil(wait))})


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
        if isinstance(err, QueueFull):
            status = 503
        elif isinstance(err, (QuotaExceeded, DescribeLimited)) or (isinstance(err, Restricted)
                                                                    and err.reason == "too_soon"):
            status = 429
        elif isinstance(err, (NotAllowed, Restricted, BlockedPrompt)):
            status = 403
        if isinstance(retry, (int, float)) and retry > 0:
            headers["Retry-After"] = str(math.ceil(retry))
        return JSONResponse({"detail": str(err), "error": type(err).__name__}, status, headers=headers)
    ref = new_reference()
    logger.error("web request failed (reference %s)", ref, exc_info=err)
    return JSONResponse({"detail": apology(ref)}, 500)
