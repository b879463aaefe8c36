"""The model catalogue as operators see it: each model's share, what it served and how it rates;
comparing two models' ratings; changing a share live (issue 25).

Shared by ``imagine-bot models`` (the command line) and the admins' chat command
(:class:`~bot.service.admin.AdminPart`): plain functions over the database and the catalogue.
A share is stored in ``model_traffic`` and read on each request that names no model, so
``promote``/``retire`` act without a restart.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from generation.core.catalogue import Catalogue
from generation.core.errors import InvalidRequest
from generation.quality.significance import Summary, summary, welch
from storage import Database, model_stats
from storage.model_versions import latest_evals

__all__ = ["ModelRow", "compare_text", "models_text", "overview", "set_share"]


@dataclass(frozen=True)
class ModelRow:
    """One model of the catalogue, with what it served."""

    name: str
    kind: str
    model_id: str
    default: bool
    share: float  # of the requests that name no model (the default: what the candidates leave)
    images: int
    rating: Summary
    clip: float | None  # mean CLIP score of its images, else of its newest evaluation
    median_seconds: float | None  # per image, start to finish of each job
    versions: tuple[str, ...]  # checkpoint hashes seen (first 10 hex)


async def overview(db: Database, catalogue: Catalogue) -> list[ModelRow]:
    """Every model of ``catalogue`` with its live share and what it served."""
    shares = catalogue.shares(await model_stats.traffic(db))
    served = await model_stats.served(db)
    versions: dict[str, list[str]] = {}
    eval_clip: dict[str, float] = {}
    for version, run in await latest_evals(db):
        versions.setdefault(version.model_id, []).append(version.checkpoint_hash[:10])
        if run is not None and run.clip_score is not None and version.model_id not in eval_clip:
            eval_clip[version.model_id] = run.clip_score
    rows = []
    for name, info in catalogue.models.items():
        made = served.get(info.model_id, model_stats.ModelServed())
        share = shares.get(name, 0.0) if name != catalogue.default else 1.0 - sum(shares.values())
        clip = made.clip if made.clip is not None else eval_clip.get(info.model_id)
        median = statistics.median(made.seconds_per_image) if made.seconds_per_image else None
        rows.append(ModelRow(name, info.kind, info.model_id, name == catalogue.default, share, made.images,
                             summary(made.ratings), clip, median, tuple(versions.get(info.model_id, ()))))
    return rows


def models_text(rows: list[ModelRow]) -> str:
    """The listing: one block per model."""
    lines = []
    for row in rows:
        role = "default" if row.default else ("candidate" if row.share else "on request")
        lines.append(f"{row.name} ({row.kind}, {row.model_id}{', ' + ', '.join(row.versions) if row.versions else ''})"
                     f": {role}, {row.share:.0%} of requests that name no model")
        rating = row.rating
        if rating.mean is None:
            stars = "no ratings yet"
        elif rating.low is None:
            stars = f"rated {rating.mean:.2f}★ (1 rating)"
        else:
            stars = f"rated {rating.mean:.2f}★ (95 % {rating.low:.2f}–{rating.high:.2f}, {rating.n} ratings)"
        clip = f", CLIP {row.clip:.1f}" if row.clip is not None else ""
        seconds = f", {row.median_seconds:.2f} s per image (median)" if row.median_seconds is not None else ""
        lines.append(f"  {row.images} images, {stars}{clip}{seconds}")
    return "\n".join(lines)


async def compare_text(db: Database, catalogue: Catalogue, a: str, b: str) -> str:
    """Whether models ``a`` and ``b`` differ in their ratings (Welch's t-test, 5 % level)."""
    ids = {}
    for name in (a, b):
        ids[name] = catalogue.info(name).model_id
    served = await model_stats.served(db)
    ratings = {name: served.get(model_id, model_stats.ModelServed()).ratings for name, model_id in ids.items()}
    if any(len(r) < 2 for r in ratings.values()):
        counts = ", ".join(f"{name} has {len(r)}" for name, r in ratings.items())
        return f"Not enough ratings to compare: each model needs at least 2 ({counts})."
    result = welch(ratings[a], ratings[b])
    sa, sb = summary(ratings[a]), summary(ratings[b])
    head = (f"{a}: {sa.mean:.2f}★ (n={sa.n}); {b}: {sb.mean:.2f}★ (n={sb.n}); difference {result.difference:+.2f} "
            f"(Welch t = {result.t:.2f}, df = {result.df:.1f}, p = {result.p:.3g})")
    if result.significant:
        better = a if result.difference > 0 else b
        return f"{head}\nSignificant at the 5 % level: {better} is rated higher."
    return f"{head}\nNot significant at the 5 % level: no difference shown (more ratings may show one)."


async def set_share(db: Database, catalogue: Catalogue, name: str, share: float, *, by: str) -> str:
    """Give candidate ``name`` ``share`` of the requests that name no model, from the next request on."""
    if name not in catalogue:
        catalogue.resolve(name)  # raises, listing the models
    if name == catalogue.default:
        raise InvalidRequest("model", f"{name} is the default model: it gets every request no candidate takes. "
                                      f"Promote or retire a candidate instead.")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise InvalidRequest("traffic", f"A share is a number from 0 to 1 (0.1 = 10 %), not {share!r}.")
    live = await model_stats.traffic(db)
    others = sum(s for n, s in catalogue.shares(live).items() if n != name)
    if share + others > 1 + 1e-9:
        raise InvalidRequest("traffic", f"{name} at {share:.0%} and the other candidates' {others:.0%} add up to "
                                        f"more than 100 %; lower or retire another first.")
    await model_stats.set_traffic(db, name, float(share), by=by)
    return f"{name} now gets {share:.0%} of the requests that name no model (live, no restart)."
