"""What a user may ask for about their data: forget everything, or export it."""

from __future__ import annotations

import logging
from typing import Any

from storage.clock import to_text
from storage.db import Database, Executor
from storage.records import Image, Job, Rating, User

__all__ = ["export", "forget"]

log = logging.getLogger(__name__)


async def forget(db: Database, user_id: int, *, keep_quota_from: str | None = None) -> list[str]:
    """Delete what the user made and said; keep what protects others. Returns orphaned paths.

    Deleted: jobs (prompts, history), their images, the images they started from (uploads) and every rating of them, the user's own
    ratings, saved settings and display name, and quota rows of windows before
    ``keep_quota_from`` (all of them when it is None). Their API keys are revoked.
    Kept, keyed by the platform identity: the user row itself with its block, the quota used
    in the current window (``window_start >= keep_quota_from``), the per-user limit, and the
    moderation standing (strikes, cooldowns, appeals live in ``moderation_*`` by user key).
    So ``/forget`` never lifts a block, a cooldown or a spent quota.

    Files are content-addressed and may be shared with other users' identical requests, so
    only paths without any remaining image row (or another job's input, ``job_inputs``) come back
    for the caller to delete; the user's uploaded pictures are among them.
    """
    async with db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT images.path FROM images JOIN jobs ON jobs.id = images.job_id WHERE jobs.user_id = ?"
            " UNION SELECT job_inputs.path FROM job_inputs JOIN jobs ON jobs.id = job_inputs.job_id"
            " WHERE jobs.user_id = ?",
            (user_id, user_id),
        )
        paths = [row["path"] for row in rows]
        await tx.execute("DELETE FROM ratings WHERE user_id = ?", (user_id,))
        # images, the ratings others gave them and message refs go with the jobs (ON DELETE CASCADE)
        await tx.execute("DELETE FROM jobs WHERE user_id = ?", (user_id,))
        if keep_quota_from is None:
            await tx.execute("DELETE FROM quota_usage WHERE user_id = ?", (user_id,))
        else:
            await tx.execute("DELETE FROM quota_usage WHERE user_id = ? AND window_start < ?",
                             (user_id, keep_quota_from))
        scrubbed = await tx.execute(
            "UPDATE users SET display_name = '', settings = '{}', dm_closed = 0 WHERE id = ? RETURNING id",
            (user_id,))
        # their API keys stop working with the rest (kept, revoked: a key seen later is recognised)
        await tx.execute("UPDATE api_keys SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                         (to_text(), user_id))
        orphans = [
            path
            for path in paths
            if not await tx.fetchval("SELECT EXISTS (SELECT 1 FROM images WHERE path = ?)"
                                     " OR EXISTS (SELECT 1 FROM job_inputs WHERE path = ?)", (path, path))
        ]
    log.info("forgot user %s (%s); %d file(s) unreferenced", user_id, bool(scrubbed), len(orphans))
    return sorted(orphans)


async def export(db: Executor, user_id: int) -> dict[str, Any]:
    """Everything stored about the user as JSON-ready plain data (for a zip export)."""
    user_row = await db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
    if user_row is None:
        raise LookupError(f"no user with id {user_id}")
    user = User.from_row(user_row)
    jobs = [
        Job.from_row(r)
        for r in await db.fetchall(
            "SELECT * FROM jobs WHERE user_id = ? ORDER BY created_at, rowid", (user_id,)
        )
    ]
    images: dict[str, list[Image]] = {job.id: [] for job in jobs}
    for row in await db.fetchall(
        "SELECT images.* FROM images JOIN jobs ON jobs.id = images.job_id"
        " WHERE jobs.user_id = ? ORDER BY images.job_id, images.idx",
        (user_id,),
    ):
        images[row["job_id"]].append(Image.from_row(row))
    sent = {
        row["job_id"]: {"path": row["path"], "sha256": row["sha256"], "width": row["width"],
                        "height": row["height"], "bytes": row["bytes"], "source": row["source"]}
        for row in await db.fetchall(
            "SELECT job_inputs.* FROM job_inputs JOIN jobs ON jobs.id = job_inputs.job_id WHERE jobs.user_id = ?",
            (user_id,),
        )
    }
    ratings = await db.fetchall(
        "SELECT ratings.*, images.job_id, images.idx, images.sha256 FROM ratings"
        " JOIN images ON images.id = ratings.image_id"
        " WHERE ratings.user_id = ? ORDER BY ratings.updated_at",
        (user_id,),
    )
    quota = await db.fetchall(
        "SELECT window_start, used FROM quota_usage WHERE user_id = ? ORDER BY window_start",
        (user_id,),
    )
    override = await db.fetchval(
        "SELECT daily_limit FROM quota_overrides WHERE user_id = ?", (user_id,)
    )
    return {
        "exported_at": to_text(),
        "user": {
            "platform": user.platform,
            "platform_user_id": user.platform_user_id,
            "display_name": user.display_name,
            "settings": user.settings,
            "blocked": user.blocked,
            "created_at": user.created_at,
        },
        "jobs": [
            {
                "id": job.id,
                "request": job.request,
                "status": job.status,
                "model_id": job.model_id,
                "checkpoint_hash": job.checkpoint_hash,
                "charged": job.charged,
                "refunded": job.refunded,
                "error": job.error,
                "created_at": job.created_at,
                "finished_at": job.finished_at,
                "delivered_at": job.delivered_at,
                "images": [
                    {
                        "idx": image.idx,
                        "seed": image.seed,
                        "sha256": image.sha256,
                        "path": image.path,
                        "width": image.width,
                        "height": image.height,
                        "bytes": image.bytes,
                        "safety": image.safety,
                    }
                    for image in images[job.id]
                ],
                "input": sent.get(job.id),  # the picture the user sent to start from, if any
            }
            for job in jobs
        ],
        "ratings": [
            {
                **Rating.from_row(row).to_dict(),
                "job_id": row["job_id"],
                "idx": row["idx"],
                "sha256": row["sha256"],
            }
            for row in ratings
        ],
        "quota": {
            "usage": [{"window_start": r["window_start"], "used": r["used"]} for r in quota],
            "daily_limit_override": override,
        },
    }
