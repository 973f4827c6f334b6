"""Chapter 01 · Disjoint, joint or mixed? The main regime comparison (``notebooks/01_regimes``).

:func:`run` trains (or loads from the run store) the regimes of one early-exit method for the
profile's seeds, evaluates every exit once on the test set, simulates the exit rule offline and
returns the chapter's tables (exit costs, accuracy at each budget on test and with thresholds
fixed on validation, the summary metrics, training times), its findings and its figures.
"""

from __future__ import annotations

import pandas as pd

from .. import plots, verdicts
from ..config import profile_settings
from ..evaluate import format_budget_table
from ..study import compare_regimes
from .base import Result, against_the_paper

NOTEBOOK = "01_regimes"
TITLE = "Disjoint, joint or mixed? The main regime comparison"
TABLES = ("regimes_exit_costs", "regimes_budget_table", "regimes_budget_table_raw", "regimes_against_the_paper",
          "regimes_budget_table_validation", "regimes_budget_table_validation_raw", "regimes_summary",
          "regimes_wall_times", "regimes_findings")


def run(profile: str = "cpu", seeds=None, regimes=("disjoint", "joint", "mixed"), method: str = "sdn",
        policy: str | None = None, distribution_threshold: float = 0.9, device: str = "auto",
        executor: str = "inline", workers: int = 2, **overrides) -> Result:
    """The regime comparison of ``method`` (``policy``: its exit rule unless given) over ``seeds``
    (None: the profile's); ``distribution_threshold``: where the exits taken are counted."""
    comparison = compare_regimes(profile, seeds=seeds, regimes=list(regimes), method=method, policy=policy,
                                 device=device, progress=profile_settings(profile).progress, executor=executor,
                                 workers=workers, **overrides)
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
    validation = comparison.validation_budget_table()
    result.add("regimes_budget_table_validation", format_budget_table(validation))
    result.add("regimes_budget_table_validation_raw", validation, percent=True)
    result.add("regimes_summary", comparison.summary(), percent=True)  # every column a fraction
    result.add("regimes_wall_times", wall_table(comparison))
    result.findings.append(("Regimes", verdicts.regime_findings(comparison)))
    return result


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
