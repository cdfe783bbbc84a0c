"""Mean, 95% confidence interval (Student t) and coefficient of variation of repeated trials."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30; beyond 30 the normal 1.96 is within 2%
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: int) -> float:
    if df < 1:
        raise ValueError(f"df: needs at least 1 degree of freedom, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Summary:
    """Summary of n trials: `ci95` is the half-width of the 95% interval of the mean; `cv` is std / mean."""

    n: int
    mean: float | None
    std: float | None
    ci95: float | None
    cv: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(values: Sequence[float | None]) -> Summary:
    """Summary of the non-None values; fields that need two values are None with fewer."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = sum(xs) / n
    if n == 1:
        return Summary(1, mean, None, None, None)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Summary(n, mean, std, t_quantile_975(n - 1) * std / math.sqrt(n), std / abs(mean) if mean else None)


@dataclass(frozen=True)
class RatioInterval:
    """A paired ratio a / b over `n` rounds: `ratio` is the geometric mean of the per-round ratios and
    [`low`, `high`] its 95% interval (a Student-t interval of the mean log ratio, transformed back). Fields that
    need two rounds are None with fewer."""

    n: int
    ratio: float | None
    low: float | None
    high: float | None

    def excludes_one(self) -> bool:
        """Whether the interval lies wholly above or below 1 (False without an interval)."""
        return self.low is not None and self.high is not None and (self.high < 1 or self.low > 1)

    def half_width(self) -> float | None:
        """The interval's largest distance from 1 as a fraction (an A/A control's noise bound), None without one."""
        return None if self.low is None or self.high is None else max(self.high - 1, 1 - self.low)

    def to_dict(self) -> dict:
        return asdict(self)


def paired_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> RatioInterval:
    """The ratio of `a` to `b` from pairs (`a[i]`, `b[i]`): one per round, both measured in it. A pair with a
    missing or non-positive value is left out."""
    if len(a) != len(b):
        raise ValueError(f"paired_ratio: {len(a)} values against {len(b)}; pairs need one of each")
    logs = [math.log(x / y) for x, y in zip(a, b) if x is not None and y is not None and x > 0 and y > 0]
    n = len(logs)
    if n == 0:
        return RatioInterval(0, None, None, None)
    mean = sum(logs) / n
    if n == 1:
        return RatioInterval(1, math.exp(mean), None, None)
    half = t_quantile_975(n - 1) * math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1)) / math.sqrt(n)
    return RatioInterval(n, math.exp(mean), math.exp(mean - half), math.exp(mean + half))
