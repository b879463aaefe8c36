"""``imagine-bot eval --compare A B``: two models on the same prompts and seeds, side by side.

Each model is evaluated as ``imagine-bot eval`` does (``<out>/a-<A>`` and ``<out>/b-<B>``, each
resumable). Then every figure gets a 95% bootstrap interval (the images of each set resampled
with replacement, :func:`generation.quality.metrics.bootstrap`), each prompt the difference of
its mean CLIP score (B minus A), and ``<out>/history.png`` plots every figure of both models'
versions over time from the stored evaluations. ``<out>/compare.json`` holds it all.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from bot.config import Config
    from generation.quality.metrics import FeatureSet

__all__ = ["compare", "compare_text"]


# bot.cli.evaluate's EvalOptions and Evaluation: it calls this module (and hands over its
# ``evaluate``), so naming them here would make an import circle.
EvalOptions = Any
Evaluation = Any


async def compare(config: Config, options: EvalOptions, model_a: str, model_b: str,
                  evaluate: Callable[[Config, EvalOptions], Awaitable[Evaluation]]) -> dict[str, Any]:
    """Evaluate both with ``evaluate`` (bot.cli.evaluate's), then the intervals, the per-prompt
    CLIP differences and the plot."""
    runs: dict[str, Evaluation] = {}
    for label, model in (("a", model_a), ("b", model_b)):
        runs[label] = await evaluate(config, replace(options, model=model, out=options.out / f"{label}-{model}"))
    sides = {label: {"model": model, "model_id": run.report["model_id"],
                     "checkpoint_hash": run.report["checkpoint_hash"], "figures": run.report["figures"],
                     "intervals": _intervals(run, options.bootstrap, options.seed), "report": run.report["report"]}
             for (label, run), model in zip(runs.items(), (model_a, model_b))}
    a_clip, b_clip = runs["a"].report["clip_by_prompt"], runs["b"].report["clip_by_prompt"]
    per_prompt = sorted(({"prompt": prompt, "a": a_clip[prompt], "b": b_clip[prompt],
                          "difference": b_clip[prompt] - a_clip[prompt]} for prompt in a_clip),
                        key=lambda row: row["difference"])
    result = {"a": sides["a"], "b": sides["b"], "prompt_set": runs["a"].report["prompt_set"], "n": options.n,
              "seed": options.seed, "bootstrap_rounds": options.bootstrap, "clip_by_prompt": per_prompt,
              "history": str(await _plot(config, options, runs)), "compare": str(options.out / "compare.json")}
    (options.out / "compare.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
    return result


def _intervals(run: Evaluation, rounds: int, seed: int) -> dict[str, list[float]]:
    """95% bootstrap intervals of every figure of ``run`` (KID with 10 subsets per round)."""
    import torch

    from generation.quality.metrics import bootstrap, figures

    clip = torch.tensor(run.clip, dtype=torch.float64)

    def statistic(generated: FeatureSet, real: FeatureSet | None, picked: torch.Tensor) -> dict[str, float]:
        found = figures(generated, real, seed=seed, kid_subsets=10)
        found["clip_score"] = float(clip[picked].mean())
        return found

    if rounds < 1:
        return {}
    found = bootstrap(run.generated, run.real, statistic, rounds=rounds, seed=seed)
    return {name: [low, high] for name, (low, high) in found.items() if not name.endswith("_std")}


async def _plot(config: Config, options: EvalOptions, runs: dict[str, Evaluation]) -> Any:
    """Every stored figure of both models' versions over time (``history.png``)."""
    from generation.quality.report import plot_history
    from storage import Database
    from storage.model_versions import EVAL_METRICS, evals

    model_ids = {run.report["model_id"] for run in runs.values()}
    series: dict[str, dict[str, list[tuple[datetime, float]]]] = {m: {} for m in EVAL_METRICS
                                                                  if not m.endswith("_std")}
    async with Database.open(config.storage.database) as db:
        for model_id in sorted(model_ids):
            for row in await evals(db, model_id):
                version = f"{row.model_id}@{row.checkpoint_hash[:12]} ({row.extractor.split('+')[0]})"
                for metric in series:
                    value = getattr(row, metric)
                    if value is not None:
                        series[metric].setdefault(version, []).append((datetime.fromisoformat(row.created_at),
                                                                       value))
    return plot_history(series, options.out / "history.png")


def compare_text(result: dict[str, Any]) -> str:
    """The comparison as lines: each figure for A and B with its interval, then the prompts that
    moved most."""
    a, b = result["a"], result["b"]
    lines = [f"A = {a['model_id']}@{a['checkpoint_hash'][:12]}, B = {b['model_id']}@{b['checkpoint_hash'][:12]} "
             f"on {result['prompt_set']} (n={result['n']}, seed {result['seed']}, "
             f"{result['bootstrap_rounds']} bootstrap rounds, 95% intervals)"]
    for name, value in a["figures"].items():
        if name.endswith("_std") or name not in b["figures"]:
            continue
        lines.append(f"  {name:16} A {value:10.4f} {_interval(a, name)}   B {b['figures'][name]:10.4f} "
                     f"{_interval(b, name)}")
    rows = result["clip_by_prompt"]
    if rows:
        lines.append("CLIP score by prompt, B - A (largest drops and gains):")
        shown = rows if len(rows) <= 6 else rows[:3] + rows[-3:]
        lines.extend(f"  {row['difference']:+7.2f}  {row['prompt']}" for row in shown)
    lines.append(f"plot: {result['history']}\nreport: {result['compare']}")
    return "\n".join(lines)


def _interval(side: dict[str, Any], name: str) -> str:
    found = side["intervals"].get(name)
    return f"[{found[0]:.4f}, {found[1]:.4f}]" if found else ""
