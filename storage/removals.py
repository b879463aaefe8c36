"""Deleting one image a user no longer wants (the web studio's "delete")."""

from __future__ import annotations

from storage.db import Database

__all__ = ["delete_image"]


async def delete_image(db: Database, image_id: int) -> str | None:
    """Delete an image row (its ratings, share and scores go with it, ON DELETE CASCADE).

    Files are content-addressed and may be shared with other identical requests, so the file's
    path comes back only when no image row refers to it any more: the caller deletes it then.
    """
    async with db.transaction() as tx:
        path = await tx.fetchval("DELETE FROM images WHERE id = ? RETURNING path", (image_id,))
        if path is None:
            return None
        still = await tx.fetchval("SELECT 1 FROM images WHERE path = ? LIMIT 1", (path,))
    return None if still else str(path)
