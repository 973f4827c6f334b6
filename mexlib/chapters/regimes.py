"""Chapter 01 · Disjoint, joint or mixed? The main regime comparison (``notebooks/01_regimes``).

:func:`run` trains (or loads from the run store) the regimes of one early-exit method for the
profile's seeds, evaluates every exit once on the test set, simulates the exit rule offline and
returns the chapter's tables (exit costs, accuracy at each budget on test and with thresholds
fixed on validation, each seed's values behind them, the epochs each phase trained, the summary
metrics, training times), its findings and its figures.

Beside the three regimes stand the **equal-compute controls** (:func:`mexlib.study.equal_compute_controls`):
mixed trains its backbone for phase 1 and phase 2 together, twice as many epochs as joint's
phase or disjoint's backbone, so joint trained as long and disjoint on a backbone trained as long
say whether mixed's lead is its schedule or its extra training. The verdicts are paired
intervals over seeds on the thresholds fixed on validation (:mod:`mexlib.verdicts`).
"""

from __future__ import annotations

import pandas as pd

from .. import plots, verdicts
from ..config import profile_seeds, profile_settings
from ..evaluate import format_budget_table
from ..study import BACKBONE_ROW, compare_regimes
from .base import Result, against_the_paper, records_stale_runs

NOTEBOOK = "01_regimes"
TITLE = "Disjoint, joint or mixed? The main regime comparison"
TABLES = ("regimes_exit_costs", "regimes_budget_table", "regimes_budget_table_raw", "regimes_against_the_paper",
          "regimes_budget_table_validation", "regimes_budget_table_validation_raw", "regimes_budget_table_seeds",
          "regimes_epochs_trained", "regimes_summary", "regimes_wall_times", "regimes_findings")


@records_stale_runs
def run(profile: str = "cpu", seeds=None, regimes=("disjoint", "joint", "mixed"), method: str = "sdn",
        policy: str | None = None, distribution_threshold: float = 0.9, controls: bool = True, control_seeds=None,
        device: str = "auto", executor: str = "inline", workers: int = 2, **overrides) -> Result:
    """The regime comparison of ``method`` (``policy``: its exit rule unless given) over ``seeds``
    (None: the profile's for this chapter), with the equal-compute controls unless ``controls``
    is False, for ``control_seeds`` (None: the regimes' seeds, so every control is paired with
    every seed of mixed; each control trains twice as long as a regime's phase);
    ``distribution_threshold``: where the exits taken are counted."""
    seeds = profile_seeds(profile, seeds, chapter="regimes")
    comparison = compare_regimes(profile, seeds=seeds,
                                 regimes=list(regimes), method=method, policy=policy, device=device,
                                 progress=profile_settings(profile).progress, executor=executor, workers=workers,
                                 controls=controls and "mixed" in regimes,
                                 control_seeds=seeds if control_seeds is None else tuple(control_seeds), **overrides)
    result = Result(profile, "regimes_findings", FIGURES, flat_findings=True,
                    data=dict(study=comparison, threshold=distribution_threshold))
    result.add("regimes_exit_costs", comparison.costs.table())
    budget = comparison.budget_table()
    result.data["budget"] = budget
    result.add("regimes_budget_table", format_budget_table(budget))
    result.add("regimes_budget_table_raw", budget, percent=True)
    beside = against_the_paper(comparison, budget)  # the paper profile of a Table 1 setting
    if beside is not None:
        result.add("regimes_against_the_paper", beside)
    validation = result.add_paired_tables("regimes", comparison)
    result.add("regimes_budget_table_validation_raw", validation, percent=True)
    result.add("regimes_epochs_trained", epochs_trained(comparison))
    result.add("regimes_summary", comparison.summary(), percent=True)  # every column a fraction
    result.add("regimes_wall_times", wall_table(comparison))
    result.findings.append(("Regimes", verdicts.regime_findings(comparison)))
    return result


def epochs_trained(study) -> pd.DataFrame:
    """The epochs each phase of each regime trained (its history; STUDY.md §2: equal compute is
    counted in epochs trained, not caps), its cap, whether it stopped early and the epoch it
    ended on (its best), over seeds: a row per regime and phase."""
    rows = []
    for run in study.runs:
        phases = list(run.backbone.history) if run.backbone is not None else []
        phases += [p for p in run.run.history if "history" in p]
        for phase in phases:
            settings = getattr(run.config, f"{phase['phase']}_phase")
            rows.append(dict(regime=run.values["regime"], phase=phase["phase"], seed=run.seed,
                             trained=len(phase["history"]), cap=settings.epochs,
                             stopped_early=bool(phase.get("stopped_early")), best_epoch=phase.get("best_epoch")))
    frame = pd.DataFrame(rows).drop_duplicates(["regime", "phase", "seed"])
    table = frame.groupby(["regime", "phase"], sort=False).agg(
        cap=("cap", "first"), trained_min=("trained", "min"), trained_max=("trained", "max"),
        stopped_early=("stopped_early", "sum"), seeds=("seed", "nunique"),
        best_epoch_mean=("best_epoch", lambda e: round(float(pd.Series(e, dtype=float).mean()) + 1, 1)))
    return table.rename(columns={"best_epoch_mean": "ended on epoch (mean, 1-based)"})


def wall_table(study) -> pd.DataFrame:
    """Training seconds per stored run, as the chapters save them: by run label and seed."""
    return study.wall_times()[["run", "seed", "seconds", "stored"]].set_index(["run", "seed"])


def draw_tradeoff(result: Result):
    return plots.plot_tradeoff(result["study"])


def draw_exits(result: Result):
    return plots.plot_exits(result["study"], result["threshold"])


def draw_training_curves(result: Result):
    study = result["study"]
    return plots.plot_training_curves(study.training_history(study.seeds[0]), study.num_exits)


FIGURES = {"regimes_tradeoff": draw_tradeoff, "regimes_exits": draw_exits,
           "regimes_training_curves": draw_training_curves}

__all__ = ["FIGURES", "NOTEBOOK", "TABLES", "TITLE", "run", "wall_table"]
