"""What every front end shares: texts, error references, settings parsing, pacing, image rendering.

Platform-neutral (no discord, no telegram imports), so each front end imports it and none
imports another. What lives here is what more than one front end had its own copy of::

    clip(text, limit)             cut to ``limit`` characters with "…"
    new_reference() apology(ref)  the reference id of an unexpected error, and the user's apology
    on_off(value)                 a setting's value as shown ("on"/"off" for booleans)
    settings_changes(text)        "key=value …" → dict, None when a word has no "="
    FORGET_WARNING forgotten_counts(outcome)   the /forget confirmation and its summary
    meter(filled, total)          ▰▰▱▱ progress bar
    Pacer                         at most one progress edit per interval
    Coalescer                     progress edits of one message: newest only, paced, out of the result's way
    render_grid render_single thumbnail   images under an upload limit (a 2-column grid), thumbnails
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from bot.service import FORGET_KEEPS, StoredImage
from storage.files import fit_under

__all__ = [
    "FORGET_WARNING",
    "Coalescer",
    "Pacer",
    "apology",
    "clip",
    "forgotten_counts",
    "meter",
    "new_reference",
    "on_off",
    "render_grid",
    "render_single",
    "settings_changes",
    "thumbnail",
]

FORGET_WARNING = ("This deletes your history, ratings, settings and images for good. "
                  "Blocks, strikes, cooldowns, this window's used quota and personal limits stay.")


def clip(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters (the last one an ellipsis) when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def new_reference() -> str:
    """A short id that ties the user's apology to the logged traceback."""
    return uuid.uuid4().hex[:8]


def apology(ref: str) -> str:
    return f"Sorry, something went wrong (reference {ref})."


def on_off(value: Any) -> Any:
    """A setting's value as shown to the user: booleans as on/off."""
    return "on" if value is True else "off" if value is False else value


def settings_changes(text: str) -> dict[str, str] | None:
    """``key=value …`` (shell quoting) as {key: value}; None when a word has no ``=``.

    Raises ValueError for unbalanced quotes.
    """
    changes: dict[str, str] = {}
    for pair in shlex.split(text):
        key, eq, value = pair.partition("=")
        if not eq:
            return None
        changes[key.strip().lower()] = value
    return changes


def forgotten_counts(outcome: Any) -> str:
    """The tail of the /forget summary: what was cancelled and removed, and what is kept."""
    return (f"({outcome.jobs_cancelled} running request(s) cancelled, "
            f"{outcome.files_deleted} file(s) removed). {FORGET_KEEPS}")


def meter(filled: int, total: int) -> str:
    """A progress bar of ``total`` cells, ``filled`` of them full."""
    return "▰" * filled + "▱" * max(0, total - filled)


class Pacer:
    """Lets through at most one event per ``interval`` seconds (the first one at once)."""

    def __init__(self, interval: float, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last = -math.inf

    def ready(self) -> bool:
        """True (and the interval starts again) when the last event is ``interval`` ago or more."""
        now = self._clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True


class Coalescer:
    """Progress edits of one message, coalesced: at most one per ``interval``, only the newest text.

    ``show(text)`` never waits for the platform: the text is kept and an edit task sends it
    (the first at once, then one per interval). Updates that arrive meanwhile replace the waiting
    text. ``settle()`` before the result: drops the waiting text and waits for an edit already on
    its way, so the result always goes after it and is never overwritten by progress.
    """

    def __init__(self, send: Callable[[str], Awaitable[Any]], interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self.interval = interval
        self._clock = clock
        self._last = -math.inf
        self._pending: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._sending = False
        self.edits = 0
        self.coalesced = 0  # texts replaced before they were sent

    def show(self, text: str) -> None:
        if self._pending is not None:
            self.coalesced += 1
        self._pending = text
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._pending is not None:
            wait = self._last + self.interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            text, self._pending = self._pending, None
            self._last = self._clock()
            self._sending = True
            try:
                await self._send(text)
                self.edits += 1
            except Exception:  # progress is best effort
                logging.getLogger(__name__).warning("progress edit failed", exc_info=True)
            finally:
                self._sending = False

    def close(self) -> None:
        """Stop at once (the job is no longer followed)."""
        self._pending = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def settle(self) -> None:
        """Drop the waiting text; let an edit on its way finish."""
        self._pending = None
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if self._sending:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# -- images ------------------------------------------------------------------------------------


def render_grid(images: Sequence[StoredImage], limit: int) -> tuple[bytes, str]:
    """(bytes, extension): the single image, or the images as a 2-column grid; fit under ``limit``."""
    if len(images) == 1:
        return render_single(images[0].path, limit)
    opened = [Image.open(image.path).convert("RGB") for image in images]
    try:
        width = max(i.width for i in opened)
        height = max(i.height for i in opened)
        columns = 2
        rows = math.ceil(len(opened) / columns)
        grid = Image.new("RGB", (columns * width, rows * height), (0, 0, 0))
        for n, image in enumerate(opened):
            grid.paste(image, ((n % columns) * width, (n // columns) * height))
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
    finally:
        for image in opened:
            image.close()
    return fit_under(buffer.getvalue(), limit)


def render_single(path: Path, limit: int) -> tuple[bytes, str]:
    """One stored image, re-encoded only when it is over ``limit`` bytes."""
    return fit_under(path.read_bytes(), limit)


def thumbnail(path: Path) -> bytes:
    """A JPEG at most 160x160 of a stored image (for history listings)."""
    with Image.open(path) as image:
        thumb = image.convert("RGB")
        thumb.thumbnail((160, 160))
        buffer = io.BytesIO()
        thumb.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()
