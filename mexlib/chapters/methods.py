"""Chapter 02 · Does the best regime depend on the early-exit method? (``notebooks/02_methods``).

:func:`run` crosses the regimes with the early-exit methods (SDN, PBEE, GPF, ZTW, L2W), one
phase-1 backbone per seed shared by every method, and returns the study's central table in the
layout of the paper's Table 1, each method's exit costs, whether mixed is the best regime for
every method (a 95 % interval over seeds, paired by seed), per-exit accuracies, summaries and training
times.
"""

from __future__ import annotations

import pandas as pd

from .. import plots, verdicts
from ..config import profile_settings
from ..evaluate import format_budget_table
from ..study import run_study
from .base import Result, records_stale_runs
from .regimes import wall_table

NOTEBOOK = "02_methods"
TITLE = "Does the best regime depend on the early-exit method?"
TABLES = ("methods_exit_costs", "methods_budget_table", "methods_budget_table_raw", "methods_budget_table_validation",
          "methods_budget_table_seeds",
          "methods_mixed_advantage", "methods_per_exit_accuracy", "methods_summary", "methods_wall_times",
          "methods_findings")
ADVANTAGE_PERCENT = ["mixed", "best other accuracy", "gap", "low", "high"]


@records_stale_runs
def run(profile: str = "cpu", seeds=None, methods=("sdn", "pbee", "gpf", "ztw", "l2w"),
        regimes=("disjoint", "joint", "mixed"), device: str = "auto", executor: str = "inline", workers: int = 2,
        **overrides) -> Result:
    """Every method in every regime, for ``seeds`` (None: the profile's)."""
    study = run_study(profile, {"method": list(methods), "regime": list(regimes)}, seeds=seeds, device=device,
                      progress=profile_settings(profile).progress, executor=executor, workers=workers, **overrides)
    result = Result(profile, "methods_findings", FIGURES, flat_findings=True, data=dict(study=study))
    result.add("methods_exit_costs", study.cost_table("method"), percent=True)
    table = study.budget_table(["method", "regime"])
    result.data["budget"] = table
    result.add("methods_budget_table", format_budget_table(table))
    result.add("methods_budget_table_raw", table, percent=True)
    result.add_paired_tables("methods", study, ["method", "regime"])
    advantage = verdicts.advantage(study, "mixed", "regime", within="method")
    result.add("methods_mixed_advantage", advantage.set_index(["method", "budget"]), percent=ADVANTAGE_PERCENT)
    exits = study.per_exit_accuracy()
    per_exit = exits.groupby(["method", "regime", "exit"], sort=False)["accuracy"].mean().unstack("exit")
    per_exit.columns = [f"exit {k}" for k in per_exit.columns]
    result.add("methods_per_exit_accuracy", per_exit, percent=True)
    result.add("methods_summary", study.summary(["method", "regime"]), percent=True)
    result.add("methods_wall_times", wall_table(study))
    wall = study.wall_times()  # PBEE reads SDN's runs: no rows of its own
    wall["method"] = wall["method"].fillna("backbone (phase 1)")
    result.data["minutes"] = (wall.groupby("method", sort=False)["seconds"].sum() / 60).rename(
        "training minutes (all regimes and seeds)")
    result.findings.append(("Methods", _findings(study, advantage, list(methods))))
    return result


def _findings(study, advantage: pd.DataFrame, methods: list[str]) -> list[str]:
    lines = verdicts.advantage_findings(study, "mixed", "regime", within="method")
    ahead = int((advantage["verdict"] == "ahead").sum())
    never_behind = [m for m, part in advantage.groupby("method", sort=False) if (part["verdict"] != "behind").all()]
    lines.append(f"Mixed is not behind the best other regime at any budget for {len(never_behind)} of "
                 f"{len(methods)} methods ({', '.join(never_behind) or 'none'}); it is ahead (the 95 % interval "
                 f"over seeds above zero) at {ahead} of {len(advantage)} method-budget pairs.")
    return lines + verdicts.ranking(study, "method", within="regime", budgets=[0.25, 0.5])


def draw_tradeoff(result: Result):
    return plots.plot_tradeoff_panels(result["study"], panel="method", hue="regime")


FIGURES = {"methods_tradeoff": draw_tradeoff}

__all__ = ["FIGURES", "NOTEBOOK", "TABLES", "TITLE", "run"]
