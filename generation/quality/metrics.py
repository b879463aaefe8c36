"""FID, KID, Inception Score and precision/recall of generated images against real ones.

FID, KID and IS are torchmetrics' (``FrechetInceptionDistance``, ``KernelInceptionDistance``,
``InceptionScore``), not re-written: the features are extracted once
(:mod:`generation.quality.extractors`) and handed to each metric through :class:`Given`, a
feature "module" that returns what it is given, so every metric sees the same features.

Precision and recall (torchmetrics has none) are the k-nearest-neighbour manifold estimate of
Kynkäänniemi, Karras, Laine, Lehtinen and Aila, "Improved Precision and Recall Metric for
Assessing Generative Models", NeurIPS 2019 (arXiv:1904.06991), k = 3: a generated sample counts
toward precision when it lies inside the k-NN ball of some real sample, a real sample toward
recall when it lies inside that of some generated one. When torch-fidelity is installed its
implementation (``calculate_precision_recall_full``, the same method) is used instead.

Bootstrap intervals (:func:`bootstrap`) resample the images of both sets with replacement and
recompute a figure; the 2.5th and 97.5th percentiles make a 95% interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["FeatureSet", "Given", "bootstrap", "figures", "fid", "inception_score", "kid", "precision_recall"]

NEIGHBOURHOOD = 3  # k of the k-NN manifold (the paper's default)


@dataclass(frozen=True)
class FeatureSet:
    """The features (FID, KID, precision/recall) and logits (IS) of one set of images."""

    features: torch.Tensor  # N x D
    logits: torch.Tensor  # N x C

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def take(self, index: torch.Tensor) -> FeatureSet:
        return FeatureSet(self.features[index], self.logits[index])


class Given(torch.nn.Module):
    """A torchmetrics ``feature`` module that returns the features it is given (computed once)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return features


def fid(generated: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet distance between the two feature sets (torchmetrics; at least 2 of each)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=Given(int(real.shape[1])))
    metric.update(real.double(), real=True)
    metric.update(generated.double(), real=False)
    return float(metric.compute())


def kid(generated: torch.Tensor, real: torch.Tensor, *, subsets: int = 100, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over ``subsets`` random subsets; torchmetrics)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(1000, len(generated), len(real))
    with warnings.catch_warnings():  # "will save all extracted features": they are few, and wanted
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=Given(int(real.shape[1])), subsets=subsets, subset_size=size)
    metric.update(real, real=True)
    metric.update(generated, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the subsets are drawn from torch's random stream
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score (mean, std over ``splits``; torchmetrics), from classifier logits."""
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=Given(int(logits.shape[1])), splits=max(1, min(splits, len(logits))))
    metric.update(logits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the splits shuffle the images first
        mean, std = metric.compute()
    return float(mean), float(std) if not math.isnan(float(std)) else 0.0


def precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = NEIGHBOURHOOD) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, see the module docstring)."""
    if min(len(generated), len(real)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images in each set")
    generated, real = generated.float(), real.float()
    try:
        from torch_fidelity.metric_prc import calculate_precision_recall_full
    except ImportError:  # torch-fidelity is optional: the same method, written out
        def radii(x: torch.Tensor) -> torch.Tensor:  # distance of each sample to its k-th neighbour
            return torch.cdist(x, x).kthvalue(k + 1, dim=1).values

        precision = (torch.cdist(generated, real) <= radii(real).unsqueeze(0)).any(dim=1).float().mean()
        recall = (torch.cdist(real, generated) <= radii(generated).unsqueeze(0)).any(dim=1).float().mean()
        return float(precision), float(recall)
    precision, recall = calculate_precision_recall_full(generated, real, neighborhood=k)
    return float(precision), float(recall)


def figures(generated: FeatureSet, real: FeatureSet | None, *, seed: int = 0,
            kid_subsets: int = 100) -> dict[str, float]:
    """Every figure the sets allow: IS always; FID, KID, precision and recall with real images."""
    found: dict[str, float] = {}
    found["inception_score"], found["inception_std"] = inception_score(generated.logits, seed=seed)
    if real is not None:
        found["fid"] = fid(generated.features, real.features)
        found["kid"], found["kid_std"] = kid(generated.features, real.features, subsets=kid_subsets, seed=seed)
        if min(len(generated), len(real)) > NEIGHBOURHOOD:
            found["precision"], found["recall"] = precision_recall(generated.features, real.features)
    return found


def bootstrap(
    generated: FeatureSet,
    real: FeatureSet | None,
    statistic: Callable[[FeatureSet, FeatureSet | None, torch.Tensor], dict[str, float]],
    *,
    rounds: int = 100,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of each figure ``statistic(generated, real, picked)`` returns,
    over ``rounds`` resamplings with replacement (``picked``: the generated indices drawn)."""
    rng = torch.Generator().manual_seed(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(rounds):
        picked = torch.randint(len(generated), (len(generated),), generator=rng)
        other = None if real is None else real.take(torch.randint(len(real), (len(real),), generator=rng))
        for name, value in statistic(generated.take(picked), other, picked).items():
            if not math.isnan(value):
                draws.setdefault(name, []).append(value)
    return {name: (_quantile(values, 0.025), _quantile(values, 0.975)) for name, values in draws.items()}


def _quantile(values: list[float], q: float) -> float:
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))
