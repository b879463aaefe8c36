"""Average rating and count by what made the image: model version, step count, style, LoRA.

Read-only queries over ``ratings`` -> ``images`` -> ``jobs``; the request JSON of the job holds
steps, style and LoRAs (``[[name, weight], ...]``), so no migration is needed. A job with several
LoRAs counts toward each of them; a job without LoRAs counts as ``(none)``. Beside each group,
the mean CLIP score (``image_scores``, when [eval] clip_model is set) of the group's scored images,
and how many of its ratings carry a comment; :func:`recent_comments` lists the comments themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Executor

__all__ = ["DIMENSIONS", "RatedComment", "RatingGroup", "ratings_by", "recent_comments"]

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
    comments: int = 0  # ratings with a comment

    def __str__(self) -> str:
        text = f"{self.key}: {self.average:.2f}★ ({self.ratings} rating{'s' if self.ratings != 1 else ''})"
        if self.clip is not None:
            text += f", CLIP {self.clip:.1f} ({self.scored} scored)"
        return text + (f", {self.comments} comment{'s' if self.comments != 1 else ''}" if self.comments else "")


@dataclass(frozen=True)
class RatedComment:
    """A comment beside its rating: the model version that made the image, stars, words, when."""

    model: str
    stars: int
    comment: str
    updated_at: str

    def __str__(self) -> str:
        return f"{self.stars}★ {self.model}: “{self.comment}”"


async def ratings_by(db: Executor, by: str) -> list[RatingGroup]:
    """Groups for dimension ``by`` (one of DIMENSIONS), best average first."""
    if by not in _KEYS:
        raise ValueError(f"by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    loras = "LEFT JOIN json_each(j.request, '$.loras') AS l" if by == "lora" else ""
    rows = await db.fetchall(
        f"SELECT {_KEYS[by]} AS k, avg(r.stars) AS average, count(*) AS n, "
        f"count(DISTINCT r.image_id) AS images, count(r.comment) AS comments "
        f"FROM ratings r JOIN images i ON i.id = r.image_id JOIN jobs j ON j.id = i.job_id {loras} "
        f"GROUP BY k ORDER BY average DESC, n DESC, k"
    )
    clip = {str(row["k"]): (float(row["clip"]), int(row["n"])) for row in await db.fetchall(
        f"SELECT {_KEYS[by]} AS k, avg(s.clip) AS clip, count(*) AS n "
        f"FROM image_scores s JOIN images i ON i.id = s.image_id JOIN jobs j ON j.id = i.job_id {loras} "
        f"GROUP BY k"
    )}
    return [RatingGroup(str(row["k"]), float(row["average"]), int(row["n"]), int(row["images"]),
                        *clip.get(str(row["k"]), (None, 0)), int(row["comments"]))
            for row in rows]


async def recent_comments(db: Executor, limit: int = 10) -> list[RatedComment]:
    """The newest ``limit`` comments with their stars and the model version of the image."""
    rows = await db.fetchall(
        f"SELECT {_KEYS['model']} AS model, r.stars, r.comment, r.updated_at "
        "FROM ratings r JOIN images i ON i.id = r.image_id JOIN jobs j ON j.id = i.job_id "
        "WHERE r.comment IS NOT NULL ORDER BY r.updated_at DESC LIMIT ?",
        (limit,),
    )
    return [RatedComment(str(r["model"]), int(r["stars"]), str(r["comment"]), str(r["updated_at"])) for r in rows]
