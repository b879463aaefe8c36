"""Image quotas per user and time window: atomic consume, refund once per job, overrides.

``consume`` is one statement, so concurrent requests (tasks or processes) can never push a
window past its limit. ``refund`` is keyed by job id: the job row records what it was charged
and to which window, and its ``refunded`` flag flips 0→1 once, in the same transaction that
gives the images back.
"""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta, timezone, tzinfo

from storage import jobs
from storage.clock import to_text, utcnow
from storage.db import Database, Executor

__all__ = [
    "WINDOWS",
    "consume",
    "consume_with_override",
    "effective_limit",
    "get_override",
    "next_reset",
    "refund",
    "remaining",
    "set_override",
    "used",
    "window_start",
]

log = logging.getLogger(__name__)

WINDOWS = ("hourly", "daily", "weekly")

_CONSUME = """
INSERT INTO quota_usage (user_id, window_start, used)
SELECT :user_id, :window, :n WHERE :n <= :limit
ON CONFLICT (user_id, window_start) DO UPDATE
SET used = quota_usage.used + excluded.used
WHERE quota_usage.used + excluded.used <= :limit
RETURNING used
"""

_LIMIT = "coalesce((SELECT daily_limit FROM quota_overrides WHERE user_id = :user_id), :limit)"
_CONSUME_WITH_OVERRIDE = _CONSUME.replace(":limit", _LIMIT)


# -- windows -----------------------------------------------------------------------------------


def _window_bounds(now: datetime | None, window: str, tz: tzinfo) -> tuple[datetime, datetime]:
    if window not in WINDOWS:
        raise ValueError(f"`window` must be one of {', '.join(WINDOWS)}, not {window!r}")
    local = (now or utcnow()).astimezone(tz)
    if window == "hourly":
        start = local.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day = local.date()
    if window == "weekly":
        day -= timedelta(days=day.weekday())  # Monday
    length = 7 if window == "weekly" else 1
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=length), time(0), tzinfo=tz)
    return start, end


def window_start(
    now: datetime | None = None, window: str = "daily", tz: tzinfo = timezone.utc
) -> str:
    """The key of the window containing ``now``: its start (midnight in ``tz``) as UTC text."""
    return to_text(_window_bounds(now, window, tz)[0])


def next_reset(
    now: datetime | None = None, window: str = "daily", tz: tzinfo = timezone.utc
) -> datetime:
    """When the window containing ``now`` ends (aware, UTC)."""
    return _window_bounds(now, window, tz)[1].astimezone(timezone.utc)


# -- usage -------------------------------------------------------------------------------------


async def consume(db: Executor, user_id: int, n: int, limit: int, window_start: str) -> int | None:
    """Charge ``n`` images in one atomic statement; the new usage, or None if over ``limit``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive whole number, not {n!r}")
    used_now = await db.fetchval(
        _CONSUME, {"user_id": user_id, "window": window_start, "n": n, "limit": limit}
    )
    if used_now is None:
        log.debug("quota refused: user %s, n=%s, limit=%s, window %s", user_id, n, limit, window_start)
    return used_now


async def consume_with_override(
    db: Executor, user_id: int, n: int, default_limit: int, window_start: str
) -> int | None:
    """:func:`consume` against the user's own limit if an admin set one, else ``default_limit``.

    The override is read inside the same statement, so it costs no extra round trip.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive whole number, not {n!r}")
    return await db.fetchval(
        _CONSUME_WITH_OVERRIDE,
        {"user_id": user_id, "window": window_start, "n": n, "limit": default_limit},
    )


async def used(db: Executor, user_id: int, window_start: str) -> int:
    """Images charged in this window."""
    return int(
        await db.fetchval(
            "SELECT used FROM quota_usage WHERE user_id = ? AND window_start = ?",
            (user_id, window_start),
            default=0,
        )
    )


async def remaining(db: Executor, user_id: int, limit: int, window_start: str) -> int:
    """Images left in this window under ``limit`` (never negative)."""
    return max(0, limit - await used(db, user_id, window_start))


async def refund(db: Database, job_id: str) -> int:
    """Give a job's charged images back, once; returns how many (0 if already or not refundable).

    A delivered job is never refunded: each accepted job is delivered once or refunded once.
    Failing and refunding together is :func:`storage.jobs.settle` (one transaction).
    """
    async with db.transaction() as tx:
        charged = await jobs.refund_in(tx, job_id)
    if charged:
        log.info("refunded %s image(s) of job %s", charged, job_id)
    return charged


# -- overrides ---------------------------------------------------------------------------------


async def get_override(db: Executor, user_id: int) -> int | None:
    """The user's own daily limit, or None for the default."""
    return await db.fetchval("SELECT daily_limit FROM quota_overrides WHERE user_id = ?", (user_id,))


async def set_override(db: Executor, user_id: int, daily_limit: int | None) -> None:
    """Set the user's own limit; None removes it."""
    if daily_limit is None:
        await db.execute("DELETE FROM quota_overrides WHERE user_id = ?", (user_id,))
        return
    if daily_limit < 0:
        raise ValueError(f"`daily_limit` must be 0 or more, not {daily_limit}")
    await db.execute(
        "INSERT INTO quota_overrides (user_id, daily_limit) VALUES (?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET daily_limit = excluded.daily_limit",
        (user_id, daily_limit),
    )


async def effective_limit(db: Executor, user_id: int, default: int) -> int:
    """The user's override if set, else ``default``."""
    override = await get_override(db, user_id)
    return default if override is None else int(override)
