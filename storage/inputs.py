"""The image a job starts from (``job_inputs``): a user's upload, stored like a result."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from storage.clock import to_text, utcnow
from storage.db import Executor

__all__ = ["JobInput", "add", "for_job", "for_jobs"]


@dataclass(frozen=True)
class JobInput:
    """One job's input image: its store path and size."""

    job_id: str
    path: str
    sha256: str
    width: int
    height: int
    bytes: int
    source: str


async def add(db: Executor, job_id: str, path: str, sha256: str, width: int, height: int, size: int,
              *, source: str = "upload", now: datetime | None = None) -> JobInput:
    """Record the input of ``job_id`` (in the transaction that creates the job)."""
    await db.execute(
        "INSERT INTO job_inputs (job_id, path, sha256, width, height, bytes, source, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (job_id, path, sha256, width, height, size, source, to_text(now or utcnow())),
    )
    return JobInput(job_id, path, sha256, width, height, size, source)


def _row(row: object) -> JobInput:
    r = dict(row)  # type: ignore[call-overload]
    return JobInput(r["job_id"], r["path"], r["sha256"], r["width"], r["height"], r["bytes"], r["source"])


async def for_job(db: Executor, job_id: str) -> JobInput | None:
    """The input of ``job_id``, or None when it started from a prompt (or one of our images)."""
    row = await db.fetchone("SELECT * FROM job_inputs WHERE job_id = ?", (job_id,))
    return _row(row) if row else None


async def for_jobs(db: Executor, job_ids: Iterable[str]) -> dict[str, JobInput]:
    """The inputs of those of ``job_ids`` that have one."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return {}
    marks = ", ".join("?" * len(ids))
    rows = await db.fetchall(f"SELECT * FROM job_inputs WHERE job_id IN ({marks})", ids)
    return {row["job_id"]: _row(row) for row in rows}
