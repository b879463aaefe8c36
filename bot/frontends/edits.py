"""What every front end shares for 🖌️ Vary (Region) and /describe: the texts, the `what -> new` split,
and the small picture of the mask an edit used.

    split_edit("the cat -> a small red fox")  ->  ("the cat", "a small red fox"), None when malformed
    mask_overlay(delivery)                     ->  JPEG bytes of the mask over the source, or None
    describe_lines(described)                  ->  the /describe answer, numbered as its buttons
    suggestion_from(text, n)                   ->  prompt n read back from that answer (the buttons)
"""

from __future__ import annotations

import io
import re
from typing import Any

from PIL import Image

from generation.tools.masks import overlay, unpack

__all__ = ["EDIT_BUTTON", "EDIT_USAGE", "describe_lines", "mask_overlay", "split_edit", "suggestion_from"]

EDIT_BUTTON = "🖌️ Vary (Region)"
EDIT_USAGE = ("Say what to change and what to paint there instead, separated by ->, e.g. "
              "/edit the cat -> a small red fox")
_ARROW = re.compile(r"\s*(?:->|→|=>)\s*")
_LINE = re.compile(r"^\s*(\d)\.\s+(.+?)\s*$")


def split_edit(text: str) -> tuple[str, str] | None:
    """(what to change, the new text) of ``what -> new``; None when either side is missing."""
    parts = _ARROW.split(text or "", maxsplit=1)
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        return None
    return parts[0].strip(), parts[1].strip()


def mask_overlay(delivery: Any, max_side: int = 320) -> bytes | None:
    """A small JPEG of the region an edit repainted, tinted over the image it started from (blocking)."""
    path = getattr(delivery, "mask", None)
    if path is None or not path.is_file():
        return None
    with Image.open(path) as stored:
        image, mask = unpack(stored)
    out = io.BytesIO()
    overlay(image, mask, max_side).save(out, format="JPEG", quality=85)
    return out.getvalue()


def describe_lines(described: Any) -> str:
    """The /describe answer: what the picture shows, then the numbered prompts (the buttons' numbers)."""
    lines = [f"🔎 I see: {described.caption}", "", "Prompts to start from:"]
    lines += [f"{n}. {prompt}" for n, prompt in enumerate(described.suggestions, 1)]
    return "\n".join(lines)


def suggestion_from(text: str, number: int) -> str | None:
    """Prompt ``number`` (from 1) of a /describe answer the bot showed, or None when it has none."""
    for line in (text or "").splitlines():
        match = _LINE.match(line)
        if match and int(match.group(1)) == number:
            return match.group(2).strip("`* ")
    return None
