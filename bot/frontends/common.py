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
    render_grid render_single thumbnail   images under an upload limit (a 2-column grid), thumbnails
"""

from __future__ import annotations

import io
import math
import shlex
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from bot.service import FORGET_KEEPS, StoredImage
from storage.files import fit_under

__all__ = [
    "FORGET_WARNING",
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
    "stats_lines",
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


def stats_lines(stats: dict[str, Any]) -> list[str]:
    """``/admin stats`` as text lines: ``key: value``, a table as ``k=v, …``, and the ratings
    by model, steps, style and LoRA one line each."""
    lines: list[str] = []
    for key, value in stats.items():
        if key == "ratings" and isinstance(value, dict):
            lines.extend(f"ratings by {by}: " + ("; ".join(groups) or "none yet") for by, groups in value.items())
        elif isinstance(value, dict):
            lines.append(f"{key}: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            lines.append(f"{key}: {value}")
    return lines


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
