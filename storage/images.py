"""Image files, content-addressed on disk, and their rows in ``images``.

Files live at ``root/ab/cd/<sha256>.<ext>``: the name is the content's hash, so identical images
(a dedupe hit, another user's identical request) share one file, paths never contain user
text, and writing the same bytes twice is a no-op. The file methods are blocking; call them
with ``asyncio.to_thread`` from the event loop when the images are large.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Iterable

from storage.clock import to_text
from storage.db import Executor
from storage.records import Image

__all__ = [
    "ImageStore",
    "add_image",
    "get_image",
    "images_for_job",
    "images_for_jobs",
    "is_referenced",
    "referenced_paths",
]

log = logging.getLogger(__name__)

_TEMP_SUFFIX = ".tmp"
_VARIANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")


class ImageStore:
    """A directory of content-addressed image files."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._absolute_root = self.root.resolve()  # once: resolving every path costs a stat per part
        self._directories: set[Path] = set()  # shard directories known to exist (see _temp_file)
        # made from stored files (thumbnails, format conversions, public copies): beside the
        # store, keyed by the source's content hash, removed with the source (delete, GC)
        self.derived_root = self.root.parent / f"{self.root.name}-derived"

    def derive(self, source: Path, variant: str, make: Callable[[Path], bytes]) -> Path:
        """The file ``make(source)`` wrote for ``variant`` of a stored file, made once and kept.

        Blocking (run it in a thread). ``variant`` names what was made (``thumb384.jpg``); it is
        kept until the source is deleted from the store.
        """
        if not _VARIANT.fullmatch(variant):
            raise ValueError(f"`variant` must be letters, digits, '-' and '.', not {variant!r}")
        relative = Path(source).resolve().relative_to(self.root.resolve()).as_posix()
        target = self._derived_dir(relative) / variant
        if target.is_file():
            return target
        data = make(self.path_for(relative))
        fd, temp = self._temp_file(target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return target

    def _derived_dir(self, relative: str) -> Path:
        return self.derived_root / Path(relative).name.split(".", 1)[0]

    def _drop_derived(self, relative: str) -> None:
        directory = self._derived_dir(relative)
        if directory.is_dir():
            for path in directory.iterdir():
                path.unlink(missing_ok=True)
            directory.rmdir()

    def put(self, data: bytes, ext: str = "png") -> tuple[str, str]:
        """Store ``data``; returns ``(relative_path, sha256)``. Atomic and idempotent."""
        if not ext.isalnum():
            raise ValueError(f"`ext` must be alphanumeric, not {ext!r}")
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{digest[:2]}/{digest[2:4]}/{digest}.{ext.lower()}"
        final = self.root / relative
        if final.is_file() and final.stat().st_size == len(data):
            return relative, digest
        fd, temp = self._temp_file(final.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        log.debug("stored %s (%d bytes)", relative, len(data))
        return relative, digest

    def _temp_file(self, directory: Path) -> tuple[int, str]:
        """A temp file in ``directory``, recreating it if a concurrent prune just removed it.

        Directories this store made or found are remembered, so a put costs no ``mkdir``."""
        for attempt in range(3):
            if attempt or directory not in self._directories:
                directory.mkdir(parents=True, exist_ok=True)
                self._directories.add(directory)
            try:
                return tempfile.mkstemp(dir=directory, prefix=".", suffix=_TEMP_SUFFIX)
            except FileNotFoundError:
                self._directories.discard(directory)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def path_for(self, relative: str) -> Path:
        """The absolute path of a stored file (under the resolved root); refuses paths that leave the root."""
        candidate = Path(relative)
        if candidate.is_absolute() or ".." in candidate.parts or not candidate.parts:
            raise ValueError(f"not a store path: {relative!r}")
        return self._absolute_root / candidate

    def open(self, relative: str) -> bytes:
        """The bytes of a stored file."""
        return self.path_for(relative).read_bytes()

    def exists(self, relative: str) -> bool:
        return self.path_for(relative).is_file()

    def delete(self, paths: Iterable[str]) -> int:
        """Delete these stored files (missing ones are skipped); how many were removed."""
        removed = 0
        for relative in paths:
            target = self.path_for(relative)
            self._drop_derived(relative)
            try:
                target.unlink()
            except FileNotFoundError:
                continue
            removed += 1
            self._prune(target.parent)
        return removed

    def files(self) -> list[str]:
        """Every stored file, as relative paths (temporary files excluded)."""
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in self.root.rglob("*")
            if path.is_file() and not path.name.endswith(_TEMP_SUFFIX)
        )

    async def delete_unreferenced(
        self, db: Executor, grace: timedelta = timedelta(hours=1)
    ) -> list[str]:
        """Garbage-collect files no image row points to, older than ``grace``; their paths.

        The grace period spares files written a moment ago whose row is not inserted yet.
        """
        keep = await referenced_paths(db)
        cutoff = time.time() - grace.total_seconds()
        removed: list[str] = []
        for path in list(self.root.rglob("*")):
            if not path.is_file() or path.stat().st_mtime > cutoff:
                continue
            relative = path.relative_to(self.root).as_posix()
            if relative in keep:
                continue
            path.unlink(missing_ok=True)
            self._drop_derived(relative)
            self._prune(path.parent)
            removed.append(relative)
        if removed:
            log.info("removed %d unreferenced image file(s)", len(removed))
        return sorted(removed)

    def _prune(self, directory: Path) -> None:
        """Remove empty shard directories up to the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent


# -- rows --------------------------------------------------------------------------------------


async def add_image(
    db: Executor,
    job_id: str,
    idx: int,
    seed: int,
    path: str,
    sha256: str,
    width: int,
    height: int,
    bytes: int,  # noqa: A002 - the column's name
    safety: str = "ok",
    now: datetime | None = None,
) -> Image:
    """Record image ``idx`` of a job (one row per job and index)."""
    row = await db.fetchone(
        "INSERT INTO images (job_id, idx, seed, path, sha256, width, height, bytes, safety,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        (job_id, idx, seed, path, sha256, width, height, bytes, safety, to_text(now)),
    )
    if row is None:
        raise LookupError("the written row was not returned")
    return Image.from_row(row)


async def images_for_job(db: Executor, job_id: str) -> list[Image]:
    """A job's images in index order."""
    rows = await db.fetchall("SELECT * FROM images WHERE job_id = ? ORDER BY idx", (job_id,))
    return [Image.from_row(r) for r in rows]


async def images_for_jobs(db: Executor, job_ids: Iterable[str]) -> dict[str, list[Image]]:
    """Images of several jobs (e.g. a history page), keyed by job id."""
    ids = list(dict.fromkeys(job_ids))
    found: dict[str, list[Image]] = {job_id: [] for job_id in ids}
    if not ids:
        return found
    rows = await db.fetchall(
        f"SELECT * FROM images WHERE job_id IN ({', '.join('?' * len(ids))}) ORDER BY job_id, idx",
        ids,
    )
    for row in rows:
        found[row["job_id"]].append(Image.from_row(row))
    return found


async def get_image(db: Executor, image_id: int) -> Image | None:
    """The image with this id, or None."""
    row = await db.fetchone("SELECT * FROM images WHERE id = ?", (image_id,))
    return Image.from_row(row) if row else None


async def referenced_paths(db: Executor) -> set[str]:
    """Every file path some image row (or a job's input image) points to."""
    return {row[0] for row in await db.fetchall("SELECT path FROM images UNION SELECT path FROM job_inputs")}


async def is_referenced(db: Executor, path: str) -> bool:
    """Whether any image row (or a job's input image) points to ``path``."""
    return bool(await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM images WHERE path = ?) OR EXISTS (SELECT 1 FROM job_inputs WHERE path = ?)",
        (path, path)))
