"""Intervals over seeds (mexlib.stats): their coverage, the pairing by seed, Welch's fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mexlib.stats import Comparison, compare, t_interval, welch


def test_a_95_percent_interval_covers_the_true_mean_95_percent_of_the_time():
    """Coverage measured on 20,000 normal samples of 3 and of 5 values (the seeds the chapters
    have): within 1 point of 95 %, and far from what a normal quantile (1.96) would give."""
    rng = np.random.default_rng(0)
    for n in (3, 5):
        samples = rng.normal(0.4, 1.3, size=(20_000, n))
        covered = 0
        for sample in samples:
            _, low, high = t_interval(sample)
            covered += low <= 0.4 <= high
        assert abs(covered / len(samples) - 0.95) < 0.01, (n, covered / len(samples))
        # the same samples with the normal quantile instead of Student's: clearly below 95 %
        half = 1.96 * samples.std(axis=1, ddof=1) / math.sqrt(n)
        naive = np.mean(np.abs(samples.mean(axis=1) - 0.4) <= half)
        assert naive < 0.93


def test_two_values_use_the_cauchy_quantile():
    """With one degree of freedom Student's t is the Cauchy distribution: its 97.5 % quantile is
    tan(0.475 π), so the interval of two values is their mean ± that × sd / √2."""
    mean, low, high = t_interval([0.1, 0.3])
    sd = np.std([0.1, 0.3], ddof=1)
    assert mean == pytest.approx(0.2)
    assert high - mean == pytest.approx(math.tan(0.475 * math.pi) * sd / math.sqrt(2), rel=1e-9)
    assert mean - low == pytest.approx(high - mean)


def test_pairing_by_seed_removes_what_the_seeds_share():
    """Seeds that differ a lot from each other but where ``a`` is always 0.5 points above ``b``:
    paired, a clear lead; unpaired, the seeds' spread hides it."""
    levels = {0: 0.80, 1: 0.90, 2: 0.85, 3: 0.70, 4: 0.95}
    noise = {0: 0.001, 1: -0.001, 2: 0.0005, 3: 0.0, 4: -0.0005}
    a = {s: v + 0.005 + noise[s] for s, v in levels.items()}
    b = dict(levels)
    paired = compare(a, b)
    assert paired.paired and paired.n == 5 and paired.verdict == "ahead"
    assert paired.difference == pytest.approx(np.mean([a[s] - b[s] for s in levels]))
    unpaired = welch(list(a.values()), list(b.values()))
    assert not unpaired.paired and unpaired.verdict == "not distinguishable"
    assert compare(b, a).verdict == "behind"
    assert "ahead (+0.50 points, 95 % CI" in paired.words() and "paired, n = 5" in paired.words()


def test_seeds_only_one_side_has_are_left_out_and_no_common_seed_falls_back_to_welch():
    a = {0: 0.9, 1: 0.8, 2: 0.85, 7: 0.1}
    b = {0: 0.88, 1: 0.79, 2: float("nan"), 3: 0.5}
    paired = compare(a, b)
    assert paired.paired and paired.n == 2  # seeds 0 and 1: 7 and 3 are one-sided, 2 has no point in b
    assert paired.difference == pytest.approx(np.mean([0.02, 0.01]))
    apart = compare({0: 0.9, 1: 0.8, 2: 0.85}, {5: 0.7, 6: 0.75, 7: 0.72})
    expected = welch([0.9, 0.8, 0.85], [0.7, 0.75, 0.72])
    assert not apart.paired and apart == expected


def test_welch_with_equal_sizes_and_variances_is_the_pooled_interval():
    """Equal sizes and equal sample variances: Welch's degrees of freedom are 2(n − 1) and its
    interval is the pooled two-sample one."""
    from scipy import stats

    a, b = np.array([1.0, 2.0, 4.0]), np.array([0.0, 1.0, 3.0]) + 0.5
    result = welch(a, b)
    pooled_sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    half = stats.t.ppf(0.975, 4) * pooled_sd * math.sqrt(2 / 3)
    assert result.difference == pytest.approx(0.5)
    assert (result.low, result.high) == pytest.approx((0.5 - half, 0.5 + half))


def test_one_seed_has_no_interval_and_says_so():
    one = compare({0: 0.9}, {0: 0.8})
    assert one.n == 1 and math.isnan(one.low) and one.verdict == "one seed"
    assert one.words() == "one seed (+10.00 points, n = 1)"
    assert compare({}, {0: 0.5}).n == 0
    tied = Comparison(0.001, -0.002, 0.004, 3, True)
    assert tied.verdict == "not distinguishable"
    assert tied.words().startswith("not distinguishable with 3 seeds (+0.10 points, 95 % CI -0.20 to +0.40")
