"""Average rating and count by what made the image: model version, step count, style, LoRA.

Read-only queries over ``ratings`` -> ``images`` -> ``jobs``; the request JSON of the job holds
steps, style and LoRAs (``[[name, weight], ...]``), so no migration is needed. A job with several
LoRAs counts toward each of them; a job without LoRAs counts as ``(none)``. Beside each group,
the mean CLIP score (``image_scores``, when [eval] clip_model is set) of the group's scored images.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Executor

__all__ = ["DIMENSIONS", "RatingGroup", "ratings_by"]

_KEYS = {
    "model": "j.model_id || COALESCE(' @' || substr(j.checkpoint_hash, 1, 12), '')",
    "steps": "CAST(json_extract(j.request, '$.steps') AS TEXT)",
    "style": "COALESCE(json_extract(j.request, '$.style'), 'none')",
    "lora": "COALESCE(json_extract(l.value, '$[0]'), '(none)')",
}
DIMENSIONS = tuple(_KEYS)


@dataclass(frozen=True)
class RatingGroup:
    """One row of the table: the value (e.g. a LoRA name), average stars, ratings, images rated."""

    key: str
    average: float
    ratings: int
    images: int
    clip: float | None = None  # mean CLIP score of the group's scored images
    scored: int = 0

    def __str__(self) -> str:
        text = f"{self.key}: {self.average:.2f}★ ({self.ratings} rating{'s' if self.ratings != 1 else ''})"
        return text if self.clip is None else f"{text}, CLIP {self.clip:.1f} ({self.scored} scored)"


async def ratings_by(db: Executor, by: str) -> list[RatingGroup]:
    """Groups for dimension ``by`` (one of DIMENSIONS), best average first."""
    if by not in _KEYS:
        raise ValueError(f"by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    loras = "LEFT JOIN json_each(j.request, '$.loras') AS l" if by == "lora" else ""
    rows = await db.fetchall(
        f"SELECT {_KEYS[by]} AS k, avg(r.stars) AS average, count(*) AS n, "
        f"count(DISTINCT r.image_id) AS images "
        f"FROM ratings r JOIN images i ON i.id = r.image_id JOIN jobs j ON j.id = i.job_id {loras} "
        f"GROUP BY k ORDER BY average DESC, n DESC, k"
    )
    clip = {str(row["k"]): (float(row["clip"]), int(row["n"])) for row in await db.fetchall(
        f"SELECT {_KEYS[by]} AS k, avg(s.clip) AS clip, count(*) AS n "
        f"FROM image_scores s JOIN images i ON i.id = s.image_id JOIN jobs j ON j.id = i.job_id {loras} "
        f"GROUP BY k"
    )}
    return [RatingGroup(str(row["k"]), float(row["average"]), int(row["n"]), int(row["images"]),
                        *clip.get(str(row["k"]), (None, 0)))
            for row in rows]
