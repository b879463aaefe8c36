"""What an evaluation leaves beside its JSON report: a grid of samples and plots (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["plot_history", "sample_grid"]


def sample_grid(paths: Sequence[Path], *, columns: int = 4, cell: int = 256, limit: int = 16) -> Image.Image:
    """The first ``limit`` images in rows of ``columns``, each fitted into a ``cell`` square."""
    shown = list(paths)[:limit]
    if not shown:
        raise ValueError("no images to put in a grid")
    columns = min(columns, len(shown))
    rows = -(-len(shown) // columns)
    grid = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for n, path in enumerate(shown):
        with Image.open(path) as image:
            thumb = image.convert("RGB")
            thumb.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        x, y = (n % columns) * cell + (cell - thumb.width) // 2, (n // columns) * cell + (cell - thumb.height) // 2
        grid.paste(thumb, (x, y))
    return grid


def plot_history(series: Mapping[str, Mapping[str, Sequence[tuple[Any, float]]]], path: Path) -> Path:
    """One panel per metric; in each, a line per model version of (date, value) points."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    metrics = [m for m in series if any(series[m].values())]
    if not metrics:
        raise ValueError("no figures to plot")
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.6 * len(metrics)), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        for version, points in sorted(series[metric].items()):
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=version)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("evaluated at")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
