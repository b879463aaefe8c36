"""LoRA tags in prompt text (``<lora:name:0.8>``, ``<lora:name>`` = weight 1) and the typed
``lora`` option (``"name:0.8, other"``). Names are checked against the loaded LoRAs later
(``ModelCaps.check``); weights are bounded by ``GenerationRequest``.
"""

from __future__ import annotations

import math
import re

from generation.core.errors import InvalidRequest

__all__ = ["extract_loras", "has_lora_tag", "lora_tag", "parse_lora_option"]

_TAG = re.compile(r"<lora:([^:<>\s]*)(?::([^<>\s]*))?>", re.IGNORECASE)


def extract_loras(words: list[str]) -> tuple[list[str], list[tuple[str, float]]]:
    """Prompt words without their LoRA tags, and the tags' (name, weight) pairs in order."""
    kept: list[str] = []
    found: list[tuple[str, float]] = []
    for word in words:
        for match in _TAG.finditer(word):
            found.append(_pair(match.group(1), match.group(2), match.group(0)))
        rest = _TAG.sub("", word)
        if rest:
            kept.append(rest)
    return kept, found


def has_lora_tag(text: str) -> bool:
    return _TAG.search(text) is not None


def parse_lora_option(text: str) -> list[tuple[str, float]]:
    """The typed option: ``name``, ``name:0.8``, or several separated by commas."""
    pairs = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        match = _TAG.fullmatch(part) or _TAG.fullmatch(f"<lora:{part}>")
        if match is None:
            raise InvalidRequest("lora", f"{part!r} is not a LoRA; write name or name:0.8.")
        pairs.append(_pair(match.group(1), match.group(2), part))
    return pairs


def lora_tag(name: str, weight: float) -> str:
    """The tag that parses back to (name, weight)."""
    return f"<lora:{name}>" if weight == 1.0 else f"<lora:{name}:{weight:g}>"


def _pair(name: str, weight: str | None, tag: str) -> tuple[str, float]:
    if not name:
        raise InvalidRequest("lora", f"{tag!r} names no LoRA; write <lora:name:0.8>.")
    if weight is None or weight == "":
        return name, 1.0
    try:
        value = float(weight)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidRequest("lora", f"The weight in {tag!r} must be a number, e.g. <lora:{name}:0.8>.")
    return name, value
