"""Jobs: the state machine of one accepted request, recovery after restarts, history, stats.

States and the only transitions allowed (anything else is a no-op returning False)::

    queued ──> running ──> done ──> delivered
       │          │          │
       └──────────┴──────────┴──> failed          (done -> failed: delivery gave up)
       └──────────┴──> cancelled
    queued -> done (a dedupe hit)   running -> running (picked up again after a restart)

Every ``mark_*`` is one conditional ``UPDATE … WHERE status IN (…)``, so when two tasks race
for the same transition exactly one of them gets True — e.g. a result is delivered once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from storage import inbox
from storage.clock import to_text, utcnow
from storage.db import Database, Executor
from storage.records import JOB_STATUSES, HistoryPage, Job, Recovery

__all__ = [
    "ALLOWED_FROM",
    "active_count",
    "create",
    "escape_like",
    "find_by_origin",
    "find_by_request_key",
    "get",
    "history",
    "ids_of",
    "mark_cancelled",
    "mark_delivered",
    "mark_done",
    "mark_failed",
    "mark_running",
    "mark_told",
    "recoverable",
    "refund_in",
    "repair_unrefunded",
    "request_key",
    "settle",
    "stats",
    "stuck",
    "untold",
    "withdraw",
    "update_target",
]

log = logging.getLogger(__name__)

# target status -> the statuses it may be reached from
ALLOWED_FROM: dict[str, tuple[str, ...]] = {
    "running": ("queued", "running"),
    "done": ("queued", "running"),
    "delivered": ("done",),
    "failed": ("queued", "running", "done"),
    "cancelled": ("queued", "running"),
}


def request_key(
    request: dict[str, Any],
    model_id: str,
    checkpoint_hash: str | None = None,
    ignore: Iterable[str] = ("user_id", "platform"),
) -> str:
    """SHA-256 of the canonical request (minus who asked) and the model: equal keys, equal images.

    Only meaningful for requests with a resolved seed; the caller decides whether to dedupe.
    """
    skip = set(ignore)
    canonical = {
        "request": {k: v for k, v in request.items() if k not in skip},
        "model_id": model_id,
        "checkpoint_hash": checkpoint_hash or "",
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def escape_like(text: str) -> str:
    """``text`` as a literal inside a ``LIKE … ESCAPE '\\'`` pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- creating and reading ----------------------------------------------------------------------


async def create(
    db: Executor,
    *,
    user_id: int,
    request: dict[str, Any],
    model_id: str,
    charged: int = 0,
    quota_window: str | None = None,
    priority: int = 0,
    target: dict[str, Any] | None = None,
    key: str | None = None,
    checkpoint_hash: str | None = None,
    job_id: str | None = None,
    now: datetime | None = None,
    origin: str | None = None,
) -> Job:
    """Insert a ``queued`` job charged ``charged`` images to ``quota_window``.

    ``origin`` names the platform request it came from (see :mod:`storage.inbox`); it is
    unique, so a second insert for the same origin raises ``sqlite3.IntegrityError``.
    """
    row = await db.fetchone(
        "INSERT INTO jobs (id, user_id, request, request_key, model_id, checkpoint_hash,"
        " charged, quota_window, priority, target, created_at, origin, told)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) RETURNING *",
        (
            job_id or uuid.uuid4().hex,
            user_id,
            json.dumps(request, ensure_ascii=False),
            key or request_key(request, model_id, checkpoint_hash),
            model_id,
            checkpoint_hash,
            charged,
            quota_window,
            priority,
            json.dumps(target or {}, ensure_ascii=False),
            to_text(now),
            origin,
        ),
    )
    if row is None:  # pragma: no cover - INSERT … RETURNING always returns the row
        raise LookupError("the new job row was not returned")
    return Job.from_row(row)


async def find_by_origin(db: Executor, origin: str) -> Job | None:
    """The job made from platform request ``origin``, or None."""
    row = await db.fetchone("SELECT * FROM jobs WHERE origin = ?", (origin,))
    return Job.from_row(row) if row else None


async def get(db: Executor, job_id: str) -> Job | None:
    """The job with this id, or None."""
    row = await db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    return Job.from_row(row) if row else None


async def find_by_request_key(db: Executor, key: str, user_id: int | None = None) -> Job | None:
    """The newest finished job (done/delivered, with images) made from an identical request.

    With ``user_id``: only that account's own jobs, or jobs whose every image is publicly shared
    (another account's private result is never served, nor its existence told).
    """
    mine = ""
    params: tuple[Any, ...] = (key,)
    if user_id is not None:
        mine = (" AND (user_id = ? OR NOT EXISTS (SELECT 1 FROM images i WHERE i.job_id = jobs.id"
                " AND NOT EXISTS (SELECT 1 FROM shares s WHERE s.image_id = i.id)))")
        params = (key, user_id)
    row = await db.fetchone(
        "SELECT * FROM jobs WHERE request_key = ? AND status IN ('done', 'delivered')"
        " AND EXISTS (SELECT 1 FROM images WHERE images.job_id = jobs.id)" + mine +
        " ORDER BY finished_at DESC, rowid DESC LIMIT 1",
        params,
    )
    return Job.from_row(row) if row else None


async def update_target(db: Executor, job_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge delivery refs into the job's target (JSON merge patch); the new target."""
    text = await db.fetchval(
        "UPDATE jobs SET target = json_patch(target, ?) WHERE id = ? RETURNING target",
        (json.dumps(changes, ensure_ascii=False), job_id),
    )
    if text is None:
        raise LookupError(f"no job with id {job_id}")
    return json.loads(text)


# -- transitions -------------------------------------------------------------------------------


async def _transition(
    db: Executor, job_id: str, status: str, assignments: str = "", params: tuple[Any, ...] = ()
) -> bool:
    allowed = ALLOWED_FROM[status]
    marks = ", ".join("?" * len(allowed))
    extra = f", {assignments}" if assignments else ""
    rows = await db.execute(
        f"UPDATE jobs SET status = ?{extra} WHERE id = ? AND status IN ({marks}) RETURNING id",
        (status, *params, job_id, *allowed),
    )
    if not rows:
        log.debug("job %s: no transition to %s", job_id, status)
    return bool(rows)


async def mark_running(db: Executor, job_id: str, now: datetime | None = None) -> bool:
    """queued/running -> running; True if this call moved it."""
    return await _transition(db, job_id, "running", "started_at = ?", (to_text(now),))


async def mark_done(
    db: Executor, job_id: str, checkpoint_hash: str | None = None, now: datetime | None = None
) -> bool:
    """queued/running -> done (images stored, not yet delivered)."""
    return await _transition(
        db,
        job_id,
        "done",
        "finished_at = ?, checkpoint_hash = coalesce(?, checkpoint_hash)",
        (to_text(now), checkpoint_hash),
    )


async def mark_delivered(db: Executor, job_id: str, now: datetime | None = None) -> bool:
    """done -> delivered (and told); True only for the one call that delivered it."""
    return await _transition(db, job_id, "delivered", "delivered_at = ?, told = 1", (to_text(now),))


async def mark_told(db: Executor, job_id: str) -> bool:
    """Record that a failed/cancelled job's message was shown; True for the call that did it."""
    rows = await db.execute(
        "UPDATE jobs SET told = 1 WHERE id = ? AND told = 0 AND status IN ('failed', 'cancelled')"
        " RETURNING id", (job_id,))
    return bool(rows)


async def untold(db: Executor) -> list[Job]:
    """Failed or cancelled jobs whose message was never shown (a crash in between), oldest first."""
    rows = await db.fetchall(
        "SELECT * FROM jobs WHERE told = 0 AND status IN ('failed', 'cancelled')"
        " ORDER BY finished_at, created_at, rowid")
    return [Job.from_row(r) for r in rows]


async def mark_failed(db: Executor, job_id: str, error: str, now: datetime | None = None) -> bool:
    """queued/running/done -> failed with ``error`` (refund it with quotas.refund)."""
    return await _transition(
        db, job_id, "failed", "error = ?, finished_at = ?", (error, to_text(now))
    )


async def mark_cancelled(db: Executor, job_id: str, now: datetime | None = None) -> bool:
    """queued/running -> cancelled (refund it with quotas.refund)."""
    return await _transition(db, job_id, "cancelled", "finished_at = ?", (to_text(now),))


async def settle(db: Database, job_id: str, status: str, error: str = "",
                 now: datetime | None = None) -> tuple[bool, int]:
    """Fail (``status`` "failed", with ``error``) or cancel a job and refund it, in ONE transaction.

    (whether this call moved it, images refunded): a crash leaves the job either active and
    charged, or settled and refunded, never settled and still charged.
    """
    if status not in ("failed", "cancelled"):
        raise ValueError(f"`status` must be failed or cancelled, not {status!r}")
    async with db.transaction() as tx:
        if status == "failed":
            moved = await mark_failed(tx, job_id, error, now)
        else:
            moved = await mark_cancelled(tx, job_id, now)
        refunded = await refund_in(tx, job_id)
    if refunded:
        log.info("refunded %s image(s) of job %s", refunded, job_id)
    return moved, refunded


async def refund_in(tx: Executor, job_id: str) -> int:
    """Inside a transaction: give a job's charged images back, once (never a delivered job's)."""
    job = await tx.fetchone(
        "UPDATE jobs SET refunded = 1"
        " WHERE id = ? AND refunded = 0 AND charged > 0 AND status != 'delivered'"
        " RETURNING user_id, charged, quota_window",
        (job_id,),
    )
    if job is None:
        return 0
    if job["quota_window"] is not None:
        await tx.execute(
            "UPDATE quota_usage SET used = max(used - ?, 0) WHERE user_id = ? AND window_start = ?",
            (job["charged"], job["user_id"], job["quota_window"]),
        )
    return int(job["charged"])


async def withdraw(db: Database, job_id: str, origin: tuple[str, str] | None = None) -> int:
    """Undo an accepted job the queue refused at once: refund, delete the row and reopen its
    platform request, in one transaction; images refunded.

    The request is then answered like any refusal (told, then closed); a crash before that
    finds it unhandled and runs it again, so the refusal is never lost.
    """
    async with db.transaction() as tx:
        refunded = await refund_in(tx, job_id)
        await tx.execute("DELETE FROM jobs WHERE id = ? AND status IN ('queued', 'failed')", (job_id,))
        if origin is not None:
            await inbox.reopen(tx, origin[0], origin[1])
    return refunded


async def repair_unrefunded(db: Database) -> list[str]:
    """Refund failed/cancelled jobs still charged (left by a crash in an older version); their ids."""
    rows = await db.fetchall(
        "SELECT id FROM jobs WHERE refunded = 0 AND charged > 0 AND status IN ('failed', 'cancelled')")
    repaired = []
    for row in rows:
        async with db.transaction() as tx:
            if await refund_in(tx, row["id"]):
                repaired.append(row["id"])
    if repaired:
        log.warning("refunded %d failed job(s) that were still charged", len(repaired))
    return repaired


# -- queries for the service, the sweeper and admins -------------------------------------------


async def recoverable(db: Executor) -> Recovery:
    """After a restart: queued/running jobs to run again and done jobs to deliver, oldest first."""
    to_run = await db.fetchall(
        "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at, rowid"
    )
    to_deliver = await db.fetchall(
        "SELECT * FROM jobs WHERE status = 'done' ORDER BY finished_at, created_at, rowid"
    )
    return Recovery(
        to_run=tuple(Job.from_row(r) for r in to_run),
        to_deliver=tuple(Job.from_row(r) for r in to_deliver),
    )


async def active_count(db: Executor, user_id: int) -> int:
    """The user's jobs still queued or running."""
    return int(
        await db.fetchval(
            "SELECT count(*) FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')",
            (user_id,),
        )
    )


async def ids_of(db: Executor, user_id: int) -> list[str]:
    """The ids of all of the user's jobs, oldest first."""
    rows = await db.fetchall("SELECT id FROM jobs WHERE user_id = ? ORDER BY created_at, rowid", (user_id,))
    return [row["id"] for row in rows]


async def history(
    db: Executor,
    user_id: int,
    *,
    limit: int = 10,
    offset: int = 0,
    search: str | None = None,
    statuses: Iterable[str] | None = None,
) -> HistoryPage:
    """A page of the user's jobs, newest first; ``search`` matches the prompt as literal text."""
    where = ["user_id = ?"]
    params: list[Any] = [user_id]
    if search:
        where.append("prompt LIKE ? ESCAPE '\\'")
        params.append(f"%{escape_like(search)}%")
    if statuses is not None:
        wanted = list(statuses)
        unknown = set(wanted) - set(JOB_STATUSES)
        if unknown:
            raise ValueError(f"unknown job status {sorted(unknown)}")
        where.append(f"status IN ({', '.join('?' * len(wanted))})" if wanted else "0")
        params.extend(wanted)
    clause = " AND ".join(where)
    total = await db.fetchval(f"SELECT count(*) FROM jobs WHERE {clause}", params)
    rows = await db.fetchall(
        f"SELECT * FROM jobs WHERE {clause} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    return HistoryPage(
        jobs=tuple(Job.from_row(r) for r in rows), total=int(total), offset=offset, limit=limit
    )


async def stuck(
    db: Executor,
    older_than: timedelta,
    *,
    statuses: Iterable[str] = ("queued", "running"),
    now: datetime | None = None,
) -> list[Job]:
    """Jobs in ``statuses`` whose last state change is older than ``older_than``."""
    wanted = list(statuses)
    cutoff = to_text((now or utcnow()) - older_than)
    rows = await db.fetchall(
        "SELECT * FROM jobs WHERE status IN (" + ", ".join("?" * len(wanted)) + ")"
        " AND coalesce(finished_at, started_at, created_at) < ?"
        " ORDER BY created_at, rowid",
        (*wanted, cutoff),
    )
    return [Job.from_row(r) for r in rows]


async def stats(db: Executor, now: datetime | None = None) -> dict[str, Any]:
    """Counts for an admin: jobs by status, jobs and images since UTC midnight, users."""
    moment = (now or utcnow()).astimezone(timezone.utc)
    today = to_text(moment.replace(hour=0, minute=0, second=0, microsecond=0))
    by_status = {status: 0 for status in JOB_STATUSES}
    for row in await db.fetchall("SELECT status, count(*) AS n FROM jobs GROUP BY status"):
        by_status[row["status"]] = row["n"]
    return {
        "jobs": by_status,
        "jobs_today": await db.fetchval(
            "SELECT count(*) FROM jobs WHERE created_at >= ?", (today,)
        ),
        "images_today": await db.fetchval(
            "SELECT count(*) FROM images WHERE created_at >= ?", (today,)
        ),
        "images": await db.fetchval("SELECT count(*) FROM images"),
        "users": await db.fetchval("SELECT count(*) FROM users"),
        "blocked_users": await db.fetchval("SELECT count(*) FROM users WHERE blocked = 1"),
    }
