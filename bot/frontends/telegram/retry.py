"""Bot API calls that fail on the way are retried in process, with a bounded exponential backoff.

:class:`RetryingLimiter` is :class:`~.pacing.FloodPacer` (it keeps Telegram's flood limits in
every sliding window and waits out a 429's ``retry_after``) plus one more rule:

* a 5xx answer or a connection error (PTB: :class:`~telegram.error.NetworkError`) is tried
  again after ``backoff``, ``2·backoff``, ``4·backoff`` … seconds (capped at ``max_delay``),
  at most ``attempts`` more times, then raised;
* a timeout (:class:`~telegram.error.TimedOut`) is retried only for calls that are safe to
  repeat (edits, deletes, reads): a send that timed out may have arrived, and sending it
  again could make a second message;
* a 4xx (:class:`~telegram.error.BadRequest`, :class:`~telegram.error.Forbidden`,
  :class:`~telegram.error.InvalidToken`) cannot succeed by trying again: raised at once.

getUpdates never comes here (the Updater has its own retry loop), nor is getMe retried: start-up
has its own loop (:meth:`TelegramFrontEnd.start`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.error import BadRequest, NetworkError, TimedOut

from bot.frontends.telegram.pacing import FloodLimits, FloodPacer

__all__ = ["RetryingLimiter", "is_repeatable"]

logger = logging.getLogger(__name__)

_REPEATABLE = ("edit", "delete", "get", "set", "answer")


def is_repeatable(endpoint: str) -> bool:
    """Whether calling ``endpoint`` twice has the effect of calling it once."""
    return endpoint.startswith(_REPEATABLE)


class RetryingLimiter(FloodPacer):
    """FloodPacer that also retries transient failures (see the module docstring)."""

    def __init__(self, *, max_retries: int = 2, attempts: int = 4, backoff: float = 0.5,
                 max_delay: float = 30.0, limits: FloodLimits | None = None) -> None:
        super().__init__(limits, max_retries=max_retries)
        self.attempts = attempts
        self.backoff = backoff
        self.max_delay = max_delay

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        delay = self.backoff
        for attempt in range(self.attempts + 1):
            try:
                return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
            except BadRequest:
                raise
            except NetworkError as err:
                if (attempt == self.attempts or endpoint == "getMe"
                        or (isinstance(err, TimedOut) and not is_repeatable(endpoint))):
                    raise
                logger.warning("telegram: %s failed (%s); trying again in %.1f s (%d/%d)",
                               endpoint, err, delay, attempt + 1, self.attempts)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)
        raise AssertionError("unreachable")  # pragma: no cover
