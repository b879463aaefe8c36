"""Frozen rows as the repositories return them: plain values, JSON columns decoded."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["HistoryPage", "Image", "Job", "ModelVersion", "Rating", "Recovery", "User"]

JOB_STATUSES = ("queued", "running", "done", "delivered", "failed", "cancelled")
RATING_SOURCES = ("reaction", "button", "command")


@dataclass(frozen=True)
class User:
    """One person on one platform."""

    id: int
    platform: str
    platform_user_id: str
    display_name: str
    settings: dict[str, Any]
    blocked: bool
    dm_closed: bool
    created_at: str
    # other identities are linked to this account (read by users.get_by_platform; False elsewhere)
    linked: bool = False

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> User:
        return cls(
            id=row["id"],
            platform=row["platform"],
            platform_user_id=row["platform_user_id"],
            display_name=row["display_name"],
            settings=json.loads(row["settings"]),
            blocked=bool(row["blocked"]),
            dm_closed=bool(row["dm_closed"]),
            created_at=row["created_at"],
            linked=bool(row["linked"]) if "linked" in row.keys() else False,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """One accepted /imagine request and where its result goes."""

    id: str
    user_id: int
    request: dict[str, Any]
    request_key: str
    model_id: str
    checkpoint_hash: str | None
    status: str
    charged: int
    quota_window: str | None
    refunded: bool
    priority: int
    target: dict[str, Any]
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    delivered_at: str | None
    origin: str | None = None  # the platform request it came from (storage.inbox)
    told: bool = True  # its outcome (images, or the failure/cancel message) was shown to the user

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", ""))

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            request=json.loads(row["request"]),
            request_key=row["request_key"],
            model_id=row["model_id"],
            checkpoint_hash=row["checkpoint_hash"],
            status=row["status"],
            charged=row["charged"],
            quota_window=row["quota_window"],
            refunded=bool(row["refunded"]),
            priority=row["priority"],
            target=json.loads(row["target"]),
            error=row["error"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            delivered_at=row["delivered_at"],
            origin=row["origin"] if "origin" in row.keys() else None,
            told=bool(row["told"]) if "told" in row.keys() else True,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Image:
    """One stored image of a job; ``path`` is relative to the image store root."""

    id: int
    job_id: str
    idx: int
    seed: int
    path: str
    sha256: str
    width: int
    height: int
    bytes: int
    safety: str
    created_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Image:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rating:
    """One user's stars for one image."""

    image_id: int
    user_id: int
    stars: int
    source: str
    comment: str | None
    updated_at: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Rating:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelVersion:
    """A model checkpoint the bot has run, and when."""

    model_id: str
    checkpoint_hash: str
    first_seen: str
    last_seen: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ModelVersion:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class HistoryPage:
    """One page of a user's jobs, newest first."""

    jobs: tuple[Job, ...]
    total: int
    offset: int
    limit: int

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.jobs) < self.total


@dataclass(frozen=True)
class Recovery:
    """What a restart must finish: jobs to run again and results to deliver again."""

    to_run: tuple[Job, ...]
    to_deliver: tuple[Job, ...]
