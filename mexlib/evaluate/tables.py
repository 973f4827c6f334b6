"""From curves to the study's numbers: accuracy at each budget (on test, or with the operating
point fixed on validation), budget tables over seeds and their formatting, and the summary
metrics (area under the curve, oracle accuracy, overthinking, where samples leave)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import Tensor

from .common import BUDGETS, COST_TOLERANCE, _check_curve, _correct

# --- budgets ---------------------------------------------------------------------------------

def accuracy_at_budgets(curve: pd.DataFrame, budgets: Sequence[float] = BUDGETS) -> pd.Series:
    """Best accuracy among the curve's points whose cost does not exceed each budget.

    Returns a Series indexed by budget; NaN where no point fits (tables show "—").
    """
    _check_curve(curve)
    cost = curve["cost"].to_numpy(dtype=np.float64)
    accuracy = curve["accuracy"].to_numpy(dtype=np.float64)
    best = []
    for budget in budgets:
        fits = (cost <= budget + COST_TOLERANCE) & ~np.isnan(accuracy)
        best.append(accuracy[fits].max() if fits.any() else np.nan)
    return pd.Series(best, index=pd.Index(list(budgets), name="budget"), name="accuracy")


def best_points(curve: pd.DataFrame, budgets: Sequence[float] = BUDGETS) -> pd.DataFrame:
    """The points :func:`accuracy_at_budgets` picks: per budget, the most accurate point of the
    curve within it (the cheapest of equally accurate ones), its ``accuracy`` and ``cost``;
    NaN where no point fits. Rows: budgets."""
    _check_curve(curve)
    cost = curve["cost"].to_numpy(dtype=np.float64)
    accuracy = curve["accuracy"].to_numpy(dtype=np.float64)
    rows = []
    for budget in budgets:
        fits = np.flatnonzero((cost <= budget + COST_TOLERANCE) & ~np.isnan(accuracy))
        if len(fits) == 0:
            rows.append(dict(budget=budget, accuracy=np.nan, cost=np.nan))
            continue
        best = fits[accuracy[fits] == accuracy[fits].max()]
        pick = best[np.argmin(cost[best])]
        rows.append(dict(budget=budget, accuracy=accuracy[pick], cost=cost[pick]))
    return pd.DataFrame(rows).set_index("budget")


def choose_on_validation(val_curve: pd.DataFrame, test_curve: pd.DataFrame,
                         budgets: Sequence[float] = BUDGETS) -> pd.DataFrame:
    """Operating points fixed on validation data, reported on the test set.

    ``accuracy_at_budgets`` picks the best point of the *test* curve, which is the protocol of
    STUDY.md §3 but optimistic: the threshold is tuned on the data it is scored on. Here, for
    each budget, the threshold is the one whose *validation* point is the most accurate among
    those with validation cost within the budget; its test cost (which may then exceed the
    budget slightly) and test accuracy are reported. Both curves must come from the same
    thresholds, in the same order. Rows: budgets; NaN where no validation point fits.
    """
    _check_curve(val_curve)
    _check_curve(test_curve)
    if len(val_curve) != len(test_curve) or not np.array_equal(
            val_curve["threshold"].to_numpy(), test_curve["threshold"].to_numpy()):
        raise ValueError("the validation and test curves must share their thresholds")
    val_cost = val_curve["cost"].to_numpy(dtype=np.float64)
    val_acc = val_curve["accuracy"].to_numpy(dtype=np.float64)
    rows = []
    for budget in budgets:
        fits = np.flatnonzero(val_cost <= budget + COST_TOLERANCE)
        if len(fits) == 0:
            rows.append(dict(budget=budget, threshold=np.nan, val_cost=np.nan, val_accuracy=np.nan,
                             cost=np.nan, accuracy=np.nan))
            continue
        pick = fits[np.argmax(val_acc[fits])]  # the first of equally accurate points
        rows.append(dict(budget=budget, threshold=float(val_curve["threshold"].iloc[pick]),
                         val_cost=val_cost[pick], val_accuracy=val_acc[pick],
                         cost=float(test_curve["cost"].iloc[pick]),
                         accuracy=float(test_curve["accuracy"].iloc[pick])))
    return pd.DataFrame(rows).set_index("budget")


def budget_table(curves_by_group: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]],
                 budgets: Sequence[float] = BUDGETS) -> pd.DataFrame:
    """Accuracy at each budget, mean and std over seeds, one row per group (e.g. regime).

    ``curves_by_group`` maps a group name to its per-seed curves (one curve alone is one seed).
    Columns are a MultiIndex ``(budget, "mean" | "std")``; the std is the sample std (ddof 1),
    NaN with a single seed. If any seed has no point within a budget, that budget's mean is NaN
    rather than a mean over the seeds that happen to fit.
    """
    rows = {}
    for group, curves in curves_by_group.items():
        if isinstance(curves, pd.DataFrame):
            curves = [curves]
        if not curves:
            raise ValueError(f"group {group!r} has no curves")
        per_seed = np.stack([accuracy_at_budgets(c, budgets).to_numpy() for c in curves])
        # a plain mean/std propagates NaN, so one seed without a fitting point blanks the cell
        mean = per_seed.mean(axis=0)
        std = per_seed.std(axis=0, ddof=1) if len(per_seed) > 1 else np.full(len(budgets), np.nan)
        rows[group] = [value for pair in zip(mean, std) for value in pair]
    columns = pd.MultiIndex.from_product([list(budgets), ["mean", "std"]],
                                         names=["budget", "stat"])
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def format_budget_table(table: pd.DataFrame) -> pd.DataFrame:
    """Render :func:`budget_table` as strings "mean ± std" in percent, one decimal.

    "—" where the mean is NaN (no point within the budget); the mean alone when the std is NaN
    (a single seed). Columns are labelled "25 %", "50 %", ...
    """
    budgets = list(dict.fromkeys(table.columns.get_level_values("budget")))
    text = {}
    for budget in budgets:
        cells = zip(table[(budget, "mean")], table[(budget, "std")])
        text[f"{100 * budget:g} %"] = [format_mean_std(mean, std) for mean, std in cells]
    formatted = pd.DataFrame(text, index=table.index)
    formatted.columns.name = "accuracy (%) at budget (share of the backbone's cost)"
    return formatted


def format_mean_std(mean: float, std: float | None = None, percent: bool = True) -> str:
    """The text "mean ± std" for a reader: fractions in percent with one decimal (``percent``), other
    numbers to three significant digits; "—" when the mean is NaN, the mean alone when the
    std is None or NaN (a single seed)."""
    def show(value) -> str:
        if percent:
            return f"{100 * value:.1f}"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    if np.isnan(mean):
        return "—"
    if std is None or np.isnan(std):
        return show(mean)
    return f"{show(mean)} ± {show(std)}"


# --- summary metrics -------------------------------------------------------------------------

def area_under_curve(curve: pd.DataFrame, cost_range: tuple[float, float] = (0.25, 1.0)
                     ) -> float:
    """Normalised area under the accuracy–cost curve over a fixed cost range.

    The curve is read as the best accuracy achievable at cost <= c: a non-decreasing step
    function of c built from the points (their upper envelope, steps at the points' costs, no
    interpolation between points because a policy cannot be mixed for free). Where no point
    costs <= c the accuracy counts as 0. The step function is integrated exactly over
    ``cost_range`` and divided by its width, so the result is a mean accuracy in [0, 1] and
    curves are comparable whatever their thresholds. The default range spans the budgets of
    STUDY.md's table (25 % .. 100 % of the backbone's cost).
    """
    _check_curve(curve)
    low, high = (float(c) for c in cost_range)
    if not low < high:
        raise ValueError(f"cost_range must be (low, high) with low < high, got {cost_range}")
    points = curve[["cost", "accuracy"]].dropna().sort_values("cost", kind="stable")
    cost = points["cost"].to_numpy(dtype=np.float64)
    envelope = np.maximum.accumulate(points["accuracy"].to_numpy(dtype=np.float64))
    edges = np.concatenate([[low], cost[(cost > low) & (cost < high)], [high]])
    # value on [edges[i], edges[i + 1]): the envelope at the last point costing <= edges[i]
    last_within = np.searchsorted(cost, edges[:-1] + COST_TOLERANCE, side="right") - 1
    height = np.where(last_within >= 0, envelope[np.maximum(last_within, 0)], 0.0)
    return float(np.sum(height * np.diff(edges)) / (high - low))


def oracle_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of samples that at least one exit classifies correctly."""
    return float(_correct(logits, labels).any(dim=0).double().mean())


@dataclass(frozen=True)
class Overthinking:
    """SDN's destructive overthinking: an earlier exit is right, the final exit is wrong.

    ``fraction`` is over all samples; ``share_of_final_errors`` over the samples the final exit
    gets wrong (NaN when it gets none wrong).
    """

    fraction: float
    share_of_final_errors: float


def overthinking(logits: Tensor, labels: Tensor) -> Overthinking:
    """Samples some internal classifier gets right and the final exit gets wrong."""
    correct = _correct(logits, labels)
    final_wrong = ~correct[-1]
    overthought = correct[:-1].any(dim=0) & final_wrong
    errors = int(final_wrong.sum())
    share = float(overthought.sum()) / errors if errors else math.nan
    return Overthinking(float(overthought.double().mean()), share)
