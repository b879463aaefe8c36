"""Seeded request traces for ``bench/queue_bench.py``: who asks for what, and when.

Shapes as a bot's users ask (:data:`MIX`): mostly 1:1, some 16:9 and 9:16; 1 to 4 images;
4 or 8 steps. Users are heavy (a few people sending many requests: each gets ``heavy_share /
heavy_users`` of the traffic, 10+ requests in any trace of 100+) or light (one request each).

- :func:`poisson`: arrivals with exponential gaps at ``rate`` requests/s;
- :func:`with_burst`: a trace plus ``size`` light users of one group asking within ``window``
  seconds (a busy Telegram group after someone shares the bot);
- :func:`rate_for_load`: the request rate that keeps ``executors`` GPUs ``load`` busy when every
  batch is full, from the cost model and the mix.

The same seed gives the same trace, on any machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cost_model import CostModel

from generation.core.request import ModelCaps

__all__ = ["MIX", "Arrival", "Mix", "poisson", "rate_for_load", "with_burst"]

SIZES = ModelCaps(base_resolution=1024).sizes()


@dataclass(frozen=True)
class Mix:
    """Weights of what users ask for; each part drawn independently."""

    aspects: tuple[tuple[str, float], ...] = (("1:1", 0.7), ("16:9", 0.15), ("9:16", 0.15))
    counts: tuple[tuple[int, float], ...] = ((1, 0.4), (2, 0.2), (3, 0.1), (4, 0.3))
    steps: tuple[tuple[int, float], ...] = ((4, 0.8), (8, 0.2))

    def mean_count(self) -> float:
        return _mean(self.counts)


MIX = Mix()


@dataclass(frozen=True)
class Arrival:
    """One request: when (seconds from the start), who, and the shape asked for."""

    at: float
    user: str
    kind: str  # "heavy", "light" or "burst"
    aspect: str
    count: int
    steps: int
    group: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return SIZES[self.aspect]

    def text(self, index: int) -> str:
        """The /imagine text a user would type."""
        return f"a lighthouse at dawn, request {index} --ar {self.aspect} --n {self.count} --steps {self.steps}"

    def idle_seconds(self, model: CostModel) -> float:
        """How long this request takes alone on an idle GPU."""
        width, height = self.size
        return model.batch_seconds(width, height, self.steps, self.count)


def poisson(rate: float, requests: int, seed: int, *, mix: Mix = MIX, heavy_users: int = 4,
            heavy_share: float = 0.4, start: float = 0.0) -> list[Arrival]:
    """``requests`` arrivals at ``rate``/s; ``heavy_share`` of them from ``heavy_users`` users."""
    if rate <= 0 or requests < 0:
        raise ValueError(f"a trace needs a positive rate and a request count >= 0, not {rate} and {requests}")
    rng = random.Random(seed)
    out: list[Arrival] = []
    now = start
    for i in range(requests):
        now += rng.expovariate(rate)
        if heavy_users and rng.random() < heavy_share:
            user, kind = f"heavy{rng.randrange(heavy_users)}", "heavy"
        else:
            user, kind = f"light{seed}-{i}", "light"
        out.append(Arrival(now, user, kind, *_shape(rng, mix)))
    return out


def with_burst(trace: Sequence[Arrival], seed: int, *, size: int = 15, window: float = 20.0,
               at: float | None = None, mix: Mix = MIX, group: str = "group-1") -> list[Arrival]:
    """``trace`` plus ``size`` one-request users of ``group`` within ``window`` seconds from ``at``
    (default: the middle of the trace), in arrival order."""
    rng = random.Random(seed)
    start = at if at is not None else (trace[-1].at / 2 if trace else 0.0)
    burst = [Arrival(start + rng.uniform(0, window), f"{group}-member{i}", "burst", *_shape(rng, mix), group=group)
             for i in range(size)]
    return sorted([*trace, *burst], key=lambda a: a.at)


def rate_for_load(load: float, model: CostModel, *, executors: int = 1, max_batch: int = 8,
                  mix: Mix = MIX) -> float:
    """Requests/s that keep ``executors`` GPUs ``load`` busy with full batches of the mix."""
    seconds_per_image = sum(
        wa * ws * model.batch_seconds(*SIZES[aspect], steps, max_batch) / max_batch
        for aspect, wa in _normal(mix.aspects) for steps, ws in _normal(mix.steps)
    )
    return load * executors / seconds_per_image / mix.mean_count()


def shifted(trace: Sequence[Arrival], seconds: float) -> list[Arrival]:
    return [replace(a, at=a.at + seconds) for a in trace]


def _shape(rng: random.Random, mix: Mix) -> tuple[str, int, int]:
    return _choice(rng, mix.aspects), _choice(rng, mix.counts), _choice(rng, mix.steps)


def _choice(rng: random.Random, weighted: tuple[tuple[object, float], ...]):  # type: ignore[no-untyped-def]
    values, weights = zip(*weighted)
    return rng.choices(values, weights)[0]


def _normal(weighted: tuple[tuple[object, float], ...]) -> list[tuple[object, float]]:
    total = sum(w for _, w in weighted)
    return [(v, w / total) for v, w in weighted]


def _mean(weighted: tuple[tuple[int, float], ...]) -> float:
    return sum(v * w for v, w in _normal(weighted))  # type: ignore[operator]
