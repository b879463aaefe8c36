"""UTC timestamps as sortable text, the one time format stored in the database."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["from_text", "to_text", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def to_text(moment: datetime | None = None) -> str:
    """``moment`` (default now) as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``; naive means UTC."""
    moment = utcnow() if moment is None else moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    """Parse a stored timestamp back into an aware UTC datetime."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
