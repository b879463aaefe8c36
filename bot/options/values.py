"""The values of parsed options: each checked against what it may be, with a message naming the fix."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from generation.core.errors import InvalidRequest
from generation.core.request import ModelCaps

__all__ = ["STRENGTH_BOUNDS", "Setting", "int_value", "refine_value", "steps_value", "strength_value",
           "text_value"]

MAX_INT_DIGITS = 30  # longer digit strings are out of range anyway; int() would be slow/refuse
STRENGTH_BOUNDS = (0.1, 1.0)  # what a user may ask for when starting from an image


class Setting(NamedTuple):
    """A value for one field and where it came from (for messages)."""

    value: object
    source: str  # "--ar", "the `aspect` option", "your saved defaults"
    subject: str  # the same, to start a sentence: "--ar", "The `aspect` option", ...


def text_value(settings: dict[str, Setting], field: str, default: str, what: str) -> str:
    setting = settings.get(field)
    if setting is None:
        return default
    if not isinstance(setting.value, str):
        raise InvalidRequest(field, f"{setting.subject} must be {what}, not {setting.value!r}.")
    return setting.value.strip() if field == "aspect" else setting.value


def _as_int(setting: Setting, field: str, allowed: str) -> int:
    """``setting.value`` as an int (ints and decimal strings), else an error naming ``allowed``."""
    value = setting.value
    if isinstance(value, str):
        digits = value.strip()
        if digits.isdecimal() and len(digits) <= MAX_INT_DIGITS:
            return int(digits)
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidRequest(field, f"{setting.subject} must be {allowed}, not {value!r}.")


def int_value(
    settings: dict[str, Setting], field: str, default: int | None, low: int, high: int
) -> int | None:
    setting = settings.get(field)
    if setting is None:
        return default
    allowed = f"a whole number from {low} to {high}"
    value = _as_int(setting, field, allowed)
    if not low <= value <= high:
        raise InvalidRequest(field, f"{setting.subject} must be {allowed}, not {value}.")
    return value


def refine_value(settings: dict[str, Setting], defaults: Any) -> bool:
    setting = settings.get("refine")
    if setting is None:
        return bool(defaults.refine)
    if not isinstance(setting.value, bool):
        raise InvalidRequest("refine", f"{setting.subject} must be true or false, not {setting.value!r}.")
    return setting.value


def strength_value(settings: dict[str, Setting], default: float) -> float:
    setting = settings.get("strength")
    if setting is None:
        return default
    low, high = STRENGTH_BOUNDS
    allowed = f"a number from {low:g} to {high:g} (how much of your image changes)"
    value = setting.value
    if isinstance(value, str) and len(value.strip()) <= MAX_INT_DIGITS:
        try:
            value = float(value.strip())
        except ValueError:
            pass
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not low <= value <= high):
        raise InvalidRequest("strength", f"{setting.subject} must be {allowed}, not {setting.value!r}.")
    return float(value)


def steps_value(settings: dict[str, Setting], caps: ModelCaps) -> int:
    setting = settings.get("steps")
    if setting is None:
        return caps.default_steps
    loaded = sorted(caps.steps)
    allowed = f"one of {', '.join(str(s) for s in loaded)} (the step counts loaded on this bot)"
    value = _as_int(setting, "steps", allowed)
    if value not in loaded:
        raise InvalidRequest("steps", f"{setting.subject} must be {allowed}, not {value}.")
    return value
