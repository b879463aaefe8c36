"""The model catalogue's live rollout shares and what each model served (issue 25).

``model_traffic`` holds the shares set by ``promote``/``retire`` (they win over the config's);
:func:`served` gathers, per model id, the images made, their ratings, the seconds per image of
each job and the mean CLIP score, for ``imagine-bot models`` and ``models compare``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from storage.clock import to_text
from storage.db import Executor

__all__ = ["ModelServed", "served", "set_traffic", "traffic"]


async def set_traffic(db: Executor, name: str, share: float, *, by: str = "", now: datetime | None = None) -> None:
    """Model ``name`` gets ``share`` (0 to 1) of the requests that name no model, from now on."""
    if isinstance(share, bool) or not 0 <= float(share) <= 1:
        raise ValueError(f"a traffic share is from 0 to 1, not {share!r}")
    await db.execute(
        "INSERT INTO model_traffic (name, traffic, updated_at, updated_by) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET traffic = excluded.traffic, updated_at = excluded.updated_at,"
        " updated_by = excluded.updated_by",
        (name, float(share), to_text(now), by),
    )


async def traffic(db: Executor) -> dict[str, float]:
    """The stored shares, by model name."""
    return {row["name"]: float(row["traffic"]) for row in await db.fetchall("SELECT name, traffic FROM model_traffic")}


@dataclass
class ModelServed:
    """What one model id made: images, their ratings (stars), seconds per image per job, CLIP mean."""

    images: int = 0
    ratings: list[int] = field(default_factory=list)
    seconds_per_image: list[float] = field(default_factory=list)
    clip: float | None = None


async def served(db: Executor) -> dict[str, ModelServed]:
    """Per model id: what it served (every job that made images, any status after done)."""
    out: dict[str, ModelServed] = {}
    for row in await db.fetchall(
        "SELECT j.model_id, COUNT(i.id) AS n FROM images i JOIN jobs j ON j.id = i.job_id GROUP BY j.model_id"
    ):
        out.setdefault(row["model_id"], ModelServed()).images = int(row["n"])
    for row in await db.fetchall(
        "SELECT j.model_id, r.stars FROM ratings r JOIN images i ON i.id = r.image_id JOIN jobs j ON j.id = i.job_id"
    ):
        out.setdefault(row["model_id"], ModelServed()).ratings.append(int(row["stars"]))
    for row in await db.fetchall(
        "SELECT j.model_id, (julianday(j.finished_at) - julianday(j.started_at)) * 86400.0"
        " / COUNT(i.id) AS per_image FROM jobs j JOIN images i ON i.job_id = j.id"
        " WHERE j.started_at IS NOT NULL AND j.finished_at IS NOT NULL AND j.charged > 0 GROUP BY j.id"
    ):
        if row["per_image"] is not None and row["per_image"] >= 0:
            out.setdefault(row["model_id"], ModelServed()).seconds_per_image.append(float(row["per_image"]))
    for row in await db.fetchall(
        "SELECT j.model_id, AVG(s.clip) AS clip FROM image_scores s JOIN images i ON i.id = s.image_id"
        " JOIN jobs j ON j.id = i.job_id GROUP BY j.model_id"
    ):
        out.setdefault(row["model_id"], ModelServed()).clip = float(row["clip"])
    return out
