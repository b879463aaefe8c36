"""Which sent message shows which job (and image): one indexed table for every front end.

A front end records each message it sends for a job; a reaction or a reply to that message
finds the job again with one primary-key lookup. Rows go with their job (ON DELETE CASCADE).
"""

from __future__ import annotations

from storage.clock import to_text
from storage.db import Executor

__all__ = ["find", "for_job", "remember"]


async def remember(db: Executor, platform: str, chat_id: str | int | None, message_id: str | int,
                   job_id: str, image_index: int | None = None) -> None:
    """Record that ``message_id`` in ``chat_id`` shows image ``image_index`` of a job (None: all)."""
    if image_index is not None and image_index < 0:
        raise ValueError(f"`image_index` must be 0 or more, or None, not {image_index}")
    await db.execute(
        "INSERT INTO job_messages (platform, chat_id, message_id, job_id, image_index, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (platform, chat_id, message_id) DO UPDATE"
        " SET job_id = excluded.job_id, image_index = excluded.image_index",
        (platform, _chat(chat_id), str(message_id), job_id, image_index, to_text()),
    )


async def find(db: Executor, platform: str, chat_id: str | int | None,
               message_id: str | int) -> tuple[str, int | None] | None:
    """(job id, image index or None for all) of a recorded message, or None."""
    row = await db.fetchone(
        "SELECT job_id, image_index FROM job_messages"
        " WHERE platform = ? AND chat_id = ? AND message_id = ?",
        (platform, _chat(chat_id), str(message_id)),
    )
    return None if row is None else (row["job_id"], row["image_index"])


async def for_job(db: Executor, job_id: str) -> list[tuple[str, str, str, int | None]]:
    """Every recorded message of a job: (platform, chat id, message id, image index)."""
    rows = await db.fetchall(
        "SELECT platform, chat_id, message_id, image_index FROM job_messages WHERE job_id = ?"
        " ORDER BY created_at, message_id",
        (job_id,),
    )
    return [(r["platform"], r["chat_id"], r["message_id"], r["image_index"]) for r in rows]


def _chat(chat_id: str | int | None) -> str:
    return "" if chat_id is None else str(chat_id)
