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
