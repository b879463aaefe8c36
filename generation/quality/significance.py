"""Is one model rated better than another? Means with 95 % intervals and Welch's t-test (pure Python).

    summary([5, 4, 4, 3])            -> Summary(n=4, mean=4.0, low=2.7, high=5.3)
    welch([5, 5, 4, ...], [3, 2, ...]) -> Comparison(difference, t, df, p, significant)

Welch's test does not assume equal variances (two models' ratings rarely have them); the p-value
comes from Student's t distribution, whose CDF is the regularized incomplete beta function
(a continued fraction, as in Numerical Recipes' ``betacf``), so no SciPy is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Comparison", "Summary", "student_t_cdf", "summary", "t_quantile", "welch"]


@dataclass(frozen=True)
class Summary:
    """Mean of ``n`` values with its 95 % confidence interval (None for fewer than 2 values)."""

    n: int
    mean: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Comparison:
    """Mean of A minus mean of B, Welch's t, its degrees of freedom and two-sided p."""

    difference: float
    t: float
    df: float
    p: float
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        return self.p < self.alpha


def _betacf(a: float, b: float, x: float) -> float:
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-12:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (bisection; p in (0, 1))."""
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def summary(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean and its ``confidence`` interval (t-based)."""
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None)
    if n == 1:
        return Summary(1, float(values[0]), None, None)
    mean, var = _mean_var(values)
    half = t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(var / n)
    return Summary(n, mean, mean - half, mean + half)


def welch(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> Comparison:
    """Welch's two-sided t-test of mean(a) = mean(b); ValueError with fewer than 2 values each."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each side needs at least 2 ratings, not {len(a)} and {len(b)}")
    mean_a, var_a = _mean_var(a)
    mean_b, var_b = _mean_var(b)
    se2_a, se2_b = var_a / len(a), var_b / len(b)
    difference = mean_a - mean_b
    if se2_a + se2_b == 0:  # no spread at all: equal means are no difference, others certain
        return Comparison(difference, 0.0 if difference == 0 else math.copysign(math.inf, difference),
                          float(len(a) + len(b) - 2), 1.0 if difference == 0 else 0.0, alpha)
    t = difference / math.sqrt(se2_a + se2_b)
    df = (se2_a + se2_b) ** 2 / ((se2_a ** 2 / (len(a) - 1) if len(a) > 1 else 0) + (se2_b ** 2 / (len(b) - 1)))
    p = 2 * (1 - student_t_cdf(abs(t), df))
    return Comparison(difference, t, df, max(min(p, 1.0), 0.0), alpha)
