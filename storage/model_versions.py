"""Model checkpoints the bot has run (first and last time each was seen) and their evaluations.

An evaluation (``imagine-bot eval``) is one row of ``model_evals`` per run: FID, KID, Inception
Score, CLIP score, precision and recall on a prompt set, with n and the date, so the figures of
one version can be followed over time and versions compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from storage.clock import to_text
from storage.db import Executor
from storage.records import ModelVersion

__all__ = ["EVAL_METRICS", "ModelEval", "add_eval", "all_versions", "evals", "latest_evals", "record_seen"]

# the figure columns of model_evals, in the order they are shown
EVAL_METRICS = ("fid", "kid", "kid_std", "inception_score", "inception_std", "clip_score", "precision", "recall")


@dataclass(frozen=True)
class ModelEval:
    """One evaluation run of a model version; a figure is None when the run could not measure it."""

    id: int
    model_id: str
    checkpoint_hash: str
    prompt_set: str
    n: int
    seed: int
    extractor: str
    fid: float | None
    kid: float | None
    kid_std: float | None
    inception_score: float | None
    inception_std: float | None
    clip_score: float | None
    precision: float | None
    recall: float | None
    report: str
    created_at: str

    @classmethod
    def from_row(cls, row: Any) -> ModelEval:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def figures(self) -> dict[str, float]:
        """The figures this run measured, by name."""
        return {name: value for name in EVAL_METRICS if (value := getattr(self, name)) is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def record_seen(
    db: Executor, model_id: str, checkpoint_hash: str, now: datetime | None = None
) -> ModelVersion:
    """Note that this checkpoint is in use now (first_seen is kept, last_seen moves)."""
    moment = to_text(now)
    row = await db.fetchone(
        "INSERT INTO model_versions (model_id, checkpoint_hash, first_seen, last_seen)"
        " VALUES (?, ?, ?, ?)"
        " ON CONFLICT (model_id, checkpoint_hash) DO UPDATE SET last_seen = excluded.last_seen"
        " RETURNING *",
        (model_id, checkpoint_hash, moment, moment),
    )
    if row is None:
        raise LookupError("the written row was not returned")
    return ModelVersion.from_row(row)


async def all_versions(db: Executor) -> list[ModelVersion]:
    """Every recorded checkpoint, most recently seen first."""
    rows = await db.fetchall("SELECT * FROM model_versions ORDER BY last_seen DESC")
    return [ModelVersion.from_row(r) for r in rows]


async def add_eval(
    db: Executor,
    model_id: str,
    checkpoint_hash: str,
    *,
    prompt_set: str,
    n: int,
    seed: int,
    extractor: str,
    figures: dict[str, float | None],
    report: str = "",
    now: datetime | None = None,
) -> ModelEval:
    """Store one evaluation run of a version (the version row is made or touched too)."""
    unknown = set(figures) - set(EVAL_METRICS)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)}; the columns are {', '.join(EVAL_METRICS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a whole number of images, 1 or more, not {n!r}")
    moment = to_text(now)
    await db.execute(
        "INSERT INTO model_versions (model_id, checkpoint_hash, first_seen, last_seen) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (model_id, checkpoint_hash) DO NOTHING",
        (model_id, checkpoint_hash, moment, moment),
    )
    values = [None if figures.get(name) is None else float(figures[name]) for name in EVAL_METRICS]  # type: ignore[arg-type]
    row = await db.fetchone(
        f"INSERT INTO model_evals (model_id, checkpoint_hash, prompt_set, n, seed, extractor, "
        f"{', '.join(EVAL_METRICS)}, report, created_at) "
        f"VALUES (?, ?, ?, ?, ?, ?, {', '.join('?' * len(EVAL_METRICS))}, ?, ?) RETURNING *",
        (model_id, checkpoint_hash, prompt_set, n, seed, extractor, *values, report, moment),
    )
    if row is None:  # pragma: no cover - INSERT … RETURNING always returns the row
        raise LookupError("the new evaluation row was not returned")
    return ModelEval.from_row(row)


async def evals(db: Executor, model_id: str | None = None) -> list[ModelEval]:
    """Every evaluation (of ``model_id``'s versions, when given), oldest first."""
    if model_id is None:
        rows = await db.fetchall("SELECT * FROM model_evals ORDER BY created_at, id")
    else:
        rows = await db.fetchall("SELECT * FROM model_evals WHERE model_id = ? ORDER BY created_at, id",
                                 (model_id,))
    return [ModelEval.from_row(r) for r in rows]


async def latest_evals(db: Executor) -> list[tuple[ModelVersion, ModelEval | None]]:
    """Each recorded version (most recently seen first) with its newest evaluation, or None."""
    found: list[tuple[ModelVersion, ModelEval | None]] = []
    for version in await all_versions(db):
        row = await db.fetchone(
            "SELECT * FROM model_evals WHERE model_id = ? AND checkpoint_hash = ? ORDER BY created_at DESC, id DESC",
            (version.model_id, version.checkpoint_hash),
        )
        found.append((version, ModelEval.from_row(row) if row else None))
    return found
