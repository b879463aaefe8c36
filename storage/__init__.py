"""SQLite storage: users, quotas, jobs, images, ratings.

The bottom layer: plain dicts, str, bytes and ints in and out; it imports nothing of the bot,
generation, torch or the chat platforms. Repositories are modules of async functions whose
first argument is a :class:`Database` or the :class:`Transaction` of ``db.transaction()``::

    async with Database.open("data/bot.db") as db:
        user = await users.get_or_create(db, "discord", "1234", "ada")
        window = quotas.window_start()
        async with db.transaction() as tx:
            if await quotas.consume(tx, user.id, 2, limit, window) is None:
                ...  # over quota: nothing was written
            job = await jobs.create(tx, user_id=user.id, request=request.to_dict(),
                                    model_id="sdxl-lightning", charged=2, quota_window=window)
"""

from __future__ import annotations

from storage import images, inbox, inputs, jobs, messages, model_stats, model_versions, privacy, quotas, ratings, users
from storage.clock import from_text, to_text, utcnow
from storage.db import Database, Executor, MigrationError, Transaction
from storage.files import fit_under, png_with_metadata, read_metadata, read_png_metadata
from storage.images import ImageStore
from storage.privacy import export, forget
from storage.records import HistoryPage, Image, Job, ModelVersion, Rating, Recovery, User

__all__ = [
    "Database",
    "Executor",
    "HistoryPage",
    "Image",
    "ImageStore",
    "Job",
    "MigrationError",
    "ModelVersion",
    "Rating",
    "Recovery",
    "Transaction",
    "User",
    "export",
    "fit_under",
    "forget",
    "from_text",
    "images",
    "inbox",
    "inputs",
    "messages",
    "jobs",
    "model_stats",
    "model_versions",
    "png_with_metadata",
    "privacy",
    "quotas",
    "ratings",
    "read_metadata",
    "read_png_metadata",
    "to_text",
    "users",
    "utcnow",
]
