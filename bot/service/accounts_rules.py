"""Per-user things the service keeps: saved settings (validated), quota status, data exports.

Pure helpers (no database): the service reads and writes the rows, these decide what is valid
and how it looks. Settings are stored in ``users.settings`` as plain JSON values::

    aspect   one of the model's aspect ratios ("16:9")      default for --ar
    style    a style preset name                           default for --style
    count    1 .. MAX_COUNT                                 default for --n
    steps    one of the loaded step counts                  default for --steps
    private  true/false: deliver results in a direct message
    refine   true/false: --refine on every request (a small LLM details the prompt)
    model    one of the bot's models (when it has several)        default for --model
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from bot.options import Defaults
from generation.core.catalogue import Catalogue
from generation.core.errors import InvalidRequest
from generation.core.request import MAX_COUNT, ModelCaps
from generation.core.styles import STYLES

__all__ = [
    "SETTING_KEYS",
    "QuotaStatus",
    "defaults_from",
    "effective_settings",
    "validate_settings",
    "write_export_zip",
]

SETTING_KEYS = ("aspect", "style", "count", "steps", "private", "refine", "model")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_RESET = ("default", "reset", "none", "")


class QuotaStatus(NamedTuple):
    """Images used and allowed in the current window, and when it resets (aware UTC)."""

    used: int
    limit: int
    remaining: int
    resets_at: datetime


def validate_settings(changes: Mapping[str, Any], caps: ModelCaps, models: Catalogue | None = None) -> dict[str, Any]:
    """Normalise ``changes`` (strings from a chat are fine); None means "back to default".

    Raises InvalidRequest naming the key and its allowed values.
    """
    if "model" in changes and changes["model"] is not None:
        if models is None or len(models) < 2:
            raise InvalidRequest("model", f"This bot has one model ({caps.name}); there is nothing to choose.")
        text = str(changes["model"]).strip()
        chosen = None if text.lower() in _RESET else (models.resolve(text) or None)
        changes = {**changes, "model": None}
        return {**validate_settings(changes, caps), "model": chosen}
    clean: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in SETTING_KEYS:
            raise InvalidRequest(
                "settings", f"Unknown setting {key!r}; the settings are {', '.join(SETTING_KEYS)}."
            )
        if value is None or (isinstance(value, str) and value.strip().lower() in _RESET
                             and key != "style"):
            clean[key] = None
            continue
        clean[key] = _validate_one(key, value, caps)
    return clean


def _validate_one(key: str, value: Any, caps: ModelCaps) -> Any:
    if key == "aspect":
        text = value.strip() if isinstance(value, str) else value
        if text not in caps.sizes():
            try:
                caps.size_for(text)  # any W:H up to 4:1
            except InvalidRequest as err:
                raise InvalidRequest("aspect", f"aspect: {err}") from None
        return text
    if key == "style":
        name = value.strip().lower() if isinstance(value, str) else value
        if name in ("default", "reset"):
            return None
        if name not in STYLES:
            raise InvalidRequest("style", f"style must be one of {', '.join(STYLES)}, not {value!r}.")
        return name
    if key in ("count", "steps"):
        allowed = list(range(1, MAX_COUNT + 1)) if key == "count" else sorted(caps.steps)
        number = _as_int(value)
        if number not in allowed:
            raise InvalidRequest(
                key, f"{key} must be one of {', '.join(map(str, allowed))}, not {value!r}."
            )
        return number
    # private, refine
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidRequest(key, f"{key} must be on or off (true/false, yes/no), not {value!r}.")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdecimal() and len(value.strip()) < 10:
        return int(value.strip())
    return None


def effective_settings(saved: Mapping[str, Any], caps: ModelCaps, models: Catalogue | None = None) -> dict[str, Any]:
    """Every setting with its value: saved ones, defaults for the rest (``model`` when the bot
    has several)."""
    extra = {"model": saved.get("model") or models.default} if models is not None and len(models) > 1 else {}
    return {
        "aspect": saved.get("aspect", "1:1"),
        "style": saved.get("style", "none"),
        "count": saved.get("count", 1),
        "steps": saved.get("steps", caps.default_steps),
        "private": bool(saved.get("private", False)),
        "refine": bool(saved.get("refine", False)),
    } | extra


def defaults_from(saved: Mapping[str, Any], *, refine: bool = True) -> Defaults:
    """The parser's defaults from saved settings; ``refine=False`` (no refiner on this bot)
    ignores a saved ``refine`` setting instead of failing every request."""
    return Defaults(
        aspect=saved.get("aspect", "1:1"),
        style=saved.get("style", "none"),
        count=saved.get("count", 1),
        steps=saved.get("steps"),
        refine=refine and bool(saved.get("refine", False)),
        model=saved.get("model") or None,
    )


def write_export_zip(data: dict[str, Any], files: Mapping[str, Path], dest: Path) -> Path:
    """Write ``export.json`` and the image ``files`` (zip name -> source path) to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.json", json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True))
        for name, source in files.items():
            if source.is_file():
                archive.write(source, name, compress_type=zipfile.ZIP_STORED)
    partial.replace(dest)
    return dest
