"""Comparisons over seeds: a difference in accuracy with its 95 % confidence interval.

Runs of one seed share their initialisation across regimes, and disjoint and mixed share their
phase-1 backbone, so two groups trained on the same seeds are compared **paired**: the
per-seed differences, their mean and a Student-t interval with n − 1 degrees of freedom (n the
number of seeds both have). Groups without common seeds are compared with Welch's interval
(unpaired, Welch–Satterthwaite degrees of freedom). A t interval rather than a bootstrap: with
3 to 5 seeds a bootstrap over seeds has only 10 to 126 distinct resamples and its percentile
interval is too narrow (it cannot reach beyond the observed differences).

A comparison's verdict is ``ahead`` or ``behind`` only when its interval excludes zero, else
``not distinguishable``; with fewer than two seeds there is no interval (``one seed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import stats as _scipy_stats

#: The confidence level of every interval.
LEVEL = 0.95
VERDICTS = ("ahead", "behind", "not distinguishable", "one seed")


@dataclass(frozen=True)
class Comparison:
    """``a − b``: the mean difference, its interval, the seeds behind it and the verdict."""

    difference: float
    low: float
    high: float
    n: int
    paired: bool
    level: float = LEVEL

    @property
    def verdict(self) -> str:
        if math.isnan(self.low):
            return "one seed" if self.n < 2 else "not distinguishable"
        return "ahead" if self.low > 0 else "behind" if self.high < 0 else "not distinguishable"

    def words(self, ahead: str = "ahead", scale: float = 100.0, unit: str = " points", behind: str = "behind",
              digits: int = 2) -> str:
        """The verdict with its numbers, e.g. ``ahead (+0.39 points, 95 % CI +0.12 to +0.66,
        paired, n = 5)``; ``ahead`` and ``behind`` may be renamed (``best``, ``higher``)."""
        verdict = {"ahead": ahead, "behind": behind}.get(self.verdict, self.verdict)
        if verdict == "not distinguishable":
            verdict = f"not distinguishable with {self.n} seeds"
        if self.n < 2:
            return f"{verdict} ({scale * self.difference:+.{digits}f}{unit}, n = {self.n})"
        return (f"{verdict} ({scale * self.difference:+.{digits}f}{unit}, {100 * self.level:.0f} % CI "
                f"{scale * self.low:+.{digits}f} to {scale * self.high:+.{digits}f}, "
                f"{'paired' if self.paired else 'unpaired'}, n = {self.n})")


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float]:
    """The mean of ``values`` and its two-sided Student-t interval (NaN bounds below 2 values)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = _scipy_stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def compare(a: Mapping[int, float], b: Mapping[int, float], level: float = LEVEL) -> Comparison:
    """``a − b`` from per-seed values (``{seed: value}``): paired over the seeds both have,
    Welch's interval when they have none in common. A NaN value (no operating point within a
    budget) leaves its seed out."""
    a = {s: float(v) for s, v in a.items() if not math.isnan(v)}
    b = {s: float(v) for s, v in b.items() if not math.isnan(v)}
    common = [s for s in a if s in b]
    if common:
        mean, low, high = t_interval([a[s] - b[s] for s in common], level)
        return Comparison(mean, low, high, len(common), True, level)
    if not a or not b:
        return Comparison(math.nan, math.nan, math.nan, 0, False)
    return welch(list(a.values()), list(b.values()), level)


def welch(a, b, level: float = LEVEL) -> Comparison:
    """Mean(a) − mean(b) with Welch's interval (unequal variances; NaN bounds when either
    side has one value). ``n`` is the smaller of the two sizes."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    difference = float(a.mean() - b.mean())
    n = int(min(len(a), len(b)))
    if n < 2:
        return Comparison(difference, math.nan, math.nan, n, False, level)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Comparison(difference, difference, difference, n, False, level)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = _scipy_stats.t.ppf(0.5 + level / 2, df) * se
    return Comparison(difference, difference - half, difference + half, n, False, level)


__all__ = ["Comparison", "LEVEL", "VERDICTS", "compare", "t_interval", "welch"]
