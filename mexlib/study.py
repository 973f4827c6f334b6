"""The regime comparison: every regime × seed from the store, evaluated offline.

:func:`compare_regimes` gets (or trains) the runs, counts every exit's FLOPs once, and returns
a :class:`RegimeComparison` whose methods build the study's tables and whose findings are
computed from the numbers, never assumed. Notebooks call these and plot; they hold no logic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from . import evaluate
from .config import REGIMES, RunConfig, make_config
from .data import dataset_spec
from .methods import get_method
from .store import RunStore, StoredRun
from .train import build_model

DEFAULT_SEEDS = {"smoke": (0, 1), "cpu": (0, 1, 2), "paper": (0, 1, 2)}
#: Confidence thresholds of the sweep (STUDY.md §3: 100 evenly spaced in [0, 1]).
THRESHOLDS = torch.linspace(0, 1, 100)


@dataclass
class RegimeComparison:
    configs: dict[tuple[str, int], RunConfig]
    runs: dict[tuple[str, int], StoredRun]
    backbones: dict[int, StoredRun]
    costs: evaluate.ExitCosts
    policy: str
    seconds: float
    trained: list[str]
    curves: dict[tuple[str, int], pd.DataFrame] = field(default_factory=dict)  # test set
    val_curves: dict[tuple[str, int], pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self):
        thresholds = THRESHOLDS if self.policy != "patience" else None
        for key, run in self.runs.items():
            for split, curves in (("test", self.curves), ("val", self.val_curves)):
                logits, labels = run.logits(split)
                curves[key] = evaluate.tradeoff_curve(logits, labels, self.costs.relative,
                                                      self.policy, thresholds)

    @property
    def regimes(self) -> list[str]:
        return list(dict.fromkeys(r for r, _ in self.runs))

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(s for _, s in self.runs))

    @property
    def num_exits(self) -> int:
        return len(self.costs.relative)

    def test_logits(self, regime: str, seed: int):
        return self.runs[(regime, seed)].logits("test")

    # --- tables ---------------------------------------------------------------------------

    def backbone_accuracy(self) -> list[float]:
        """The plain backbone (phase 1, no heads) on the test set, one value per seed."""
        values = []
        for run in self.backbones.values():
            values.append(float(evaluate.per_exit_accuracy(*run.logits("test"))[-1]))
        return values

    def budget_table(self) -> pd.DataFrame:
        """Accuracy at 25/50/75/100 % of the backbone's cost, mean and std over seeds, plus the
        plain backbone as a reference row (it costs exactly 100 %)."""
        table = evaluate.budget_table({r: [self.curves[(r, s)] for s in self.seeds]
                                       for r in self.regimes})
        if self.backbones:
            reference = [pd.DataFrame({"cost": [1.0], "accuracy": [a]}) for a in self.backbone_accuracy()]
            table = pd.concat([table, evaluate.budget_table({"backbone alone (no exits)": reference})])
        return table

    def validation_budget_table(self) -> pd.DataFrame:
        """As :meth:`budget_table`, but each seed's threshold is fixed on the validation split
        (:func:`mexlib.evaluate.choose_on_validation`) and its test accuracy reported; a
        ``cost`` column pair gives the mean test cost of the chosen points."""
        rows = {}
        for regime in self.regimes:
            picks = [evaluate.choose_on_validation(self.val_curves[(regime, s)], self.curves[(regime, s)])
                     for s in self.seeds]
            accuracy = np.stack([p["accuracy"].to_numpy() for p in picks])
            cost = np.stack([p["cost"].to_numpy() for p in picks])
            std = accuracy.std(axis=0, ddof=1) if len(picks) > 1 else np.full(accuracy.shape[1], np.nan)
            values = []
            for budget_index in range(accuracy.shape[1]):
                values += [accuracy[:, budget_index].mean(), std[budget_index],
                           cost[:, budget_index].mean()]
            rows[regime] = values
        columns = pd.MultiIndex.from_product([list(evaluate.BUDGETS), ["mean", "std", "cost"]],
                                             names=["budget", "stat"])
        return pd.DataFrame.from_dict(rows, orient="index", columns=columns)

    def per_exit_accuracy(self) -> pd.DataFrame:
        """Long table: regime, seed, exit, relative cost, accuracy."""
        rows = []
        for (regime, seed), run in self.runs.items():
            logits, labels = run.logits("test")
            for k, acc in enumerate(evaluate.per_exit_accuracy(logits, labels).tolist()):
                rows.append(dict(regime=regime, seed=seed, exit=k,
                                 cost=float(self.costs.relative[k]), accuracy=acc))
        return pd.DataFrame(rows)

    def exit_distribution(self, threshold: float) -> pd.DataFrame:
        """Share of test samples leaving at each exit at one confidence threshold, averaged
        over seeds: rows regimes, columns exits."""
        rows = {}
        for regime in self.regimes:
            shares = []
            for seed in self.seeds:
                logits, _ = self.test_logits(regime, seed)
                decision = evaluate.run_policy(self.policy, logits, [threshold])
                shares.append(evaluate.exit_distribution(decision.exit_index[0], self.num_exits))
            rows[regime] = torch.stack(shares).mean(0).numpy()
        return pd.DataFrame.from_dict(rows, orient="index",
                                      columns=[f"exit {k}" for k in range(self.num_exits)])

    def summary(self, auc_range: tuple[float, float] = (0.25, 1.0)) -> pd.DataFrame:
        """Per regime, mean and std over seeds: final-exit accuracy, area under the curve over
        ``auc_range`` of relative cost, oracle accuracy and overthinking (all fractions)."""
        rows = []
        for (regime, seed), run in self.runs.items():
            logits, labels = run.logits("test")
            rows.append(dict(
                regime=regime, seed=seed,
                final_exit_accuracy=float(evaluate.per_exit_accuracy(logits, labels)[-1]),
                auc=evaluate.area_under_curve(self.curves[(regime, seed)], auc_range),
                oracle_accuracy=evaluate.oracle_accuracy(logits, labels),
                overthinking=evaluate.overthinking(logits, labels).fraction))
        frame = pd.DataFrame(rows).drop(columns="seed")
        return frame.groupby("regime", sort=False).agg(["mean", "std"])

    def training_history(self, seed: int) -> pd.DataFrame:
        """Long table of one seed's training curves: regime, phase, epoch, exit, metric, value."""
        rows = []
        for regime in self.regimes:
            phases = list(self.runs[(regime, seed)].history)
            if "backbone" in self.configs[(regime, seed)].phases:
                phases = self.backbones[seed].history + [p for p in phases if "history" in p]
            for phase in phases:
                for row in phase["history"]:
                    for metric in ("train_loss", "val_loss", "val_acc"):
                        for k, value in enumerate(row[metric]):
                            exit_index = self.num_exits - 1 if phase["phase"] == "backbone" else k
                            rows.append(dict(regime=regime, phase=phase["phase"], epoch=row["epoch"],
                                             exit=exit_index, metric=metric, value=value))
        return pd.DataFrame(rows)

    def wall_times(self) -> pd.DataFrame:
        """Training seconds per run and phase, from the runs' provenance."""
        rows = []
        for seed, run in self.backbones.items():
            rows.append(dict(run="backbone (phase 1)", seed=seed,
                             seconds=run.provenance["wall_time_seconds"]))
        for (regime, seed), run in self.runs.items():
            rows.append(dict(run=regime, seed=seed, seconds=run.provenance["wall_time_seconds"]))
        return pd.DataFrame(rows)

    # --- findings ---------------------------------------------------------------------------

    def findings(self) -> list[str]:
        """Plain-language statements about the paper's claims, derived from this run's numbers."""
        table = self.budget_table()
        regimes = [r for r in ("disjoint", "joint", "mixed") if r in self.regimes]
        lines = []
        for budget in evaluate.BUDGETS:
            means = {r: table.loc[r, (budget, "mean")] for r in regimes}
            stds = {r: table.loc[r, (budget, "std")] for r in regimes}
            fitting = {r: m for r, m in means.items() if not np.isnan(m)}
            if not fitting:
                lines.append(f"At {budget:.0%} of the backbone's cost no regime has an operating point.")
                continue
            ranked = sorted(fitting, key=fitting.get, reverse=True)
            best = ranked[0]
            text = ", ".join(f"{r} {100 * fitting[r]:.2f} %" for r in ranked)
            if len(ranked) == 1:
                lines.append(f"At {budget:.0%} of the backbone's cost only {best} has an operating "
                             f"point: {text}.")
                continue
            gap = fitting[best] - fitting[ranked[1]]
            spread = max((s for s in stds.values() if not np.isnan(s)), default=np.nan)
            verdict = ""
            if not np.isnan(spread):
                verdict = (" (a clear lead: larger than the largest standard deviation over seeds)"
                           if gap > spread else " (within the seeds' spread: no clear winner)")
            lines.append(f"At {budget:.0%} of the backbone's cost: {text}; best {best}, ahead by "
                         f"{100 * gap:.2f} points{verdict}.")
        if "mixed" in regimes and len(regimes) > 1:
            lines.append(self._claim_mixed(table, regimes))
        if {"disjoint", "mixed", "joint"} <= set(regimes):
            lines.append(self._claim_early_exits())
        return lines

    def _claim_mixed(self, table: pd.DataFrame, regimes: list[str]) -> str:
        best_or_near = []
        for budget in evaluate.BUDGETS:
            means = {r: table.loc[r, (budget, "mean")] for r in regimes}
            if any(np.isnan(m) for m in means.values()):
                continue
            stds = [table.loc[r, (budget, "std")] for r in regimes]
            tolerance = np.nanmax(stds) if not all(np.isnan(stds)) else 0.0
            best_or_near.append(means["mixed"] >= max(means.values()) - tolerance)
        held = bool(best_or_near) and all(best_or_near)
        return ("Paper's claim 'mixed is best or near best (within the seeds' spread) at every "
                f"budget': {'holds' if held else 'does not hold'} here "
                f"({sum(best_or_near)} of {len(best_or_near)} budgets where every regime has a point).")

    def _claim_early_exits(self) -> str:
        accuracy = self.per_exit_accuracy().groupby(["regime", "exit"])["accuracy"].mean()
        first = {r: accuracy[(r, 0)] for r in ("disjoint", "joint", "mixed")}
        final = {r: accuracy[(r, self.num_exits - 1)] for r in ("disjoint", "joint", "mixed")}
        weakest_first = min(first, key=first.get)
        return (f"First exit: disjoint {100 * first['disjoint']:.2f} %, joint "
                f"{100 * first['joint']:.2f} %, mixed {100 * first['mixed']:.2f} % "
                f"(the paper expects disjoint's early exits to be the weakest: "
                f"{'so here' if weakest_first == 'disjoint' else 'not so here, ' + weakest_first + ' is'}). "
                f"Final exit: disjoint {100 * final['disjoint']:.2f} %, joint {100 * final['joint']:.2f} %, "
                f"mixed {100 * final['mixed']:.2f} %.")


def compare_regimes(profile: str = "cpu", seeds=None, regimes=("disjoint", "joint", "mixed"),
                    method: str = "sdn", policy: str | None = None, device: str = "auto",
                    progress: bool = True, store: RunStore | None = None,
                    **overrides) -> RegimeComparison:
    """Get or train every regime for every seed, then evaluate them on the test set.

    ``policy`` defaults to the method's exit policy. Runs come from the store when it has them;
    phase 1 is trained once per seed and shared by disjoint and mixed. ``store`` defaults to
    the run store in :func:`mexlib.paths.runs_dir`.
    """
    unknown = set(regimes) - set(REGIMES)
    if unknown:
        raise ValueError(f"unknown regimes {sorted(unknown)}; valid regimes: {', '.join(REGIMES)}")
    seeds = tuple(DEFAULT_SEEDS[profile] if seeds is None else seeds)
    policy = policy or get_method(method).policy
    if policy not in evaluate.POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid policies: {', '.join(evaluate.POLICIES)}")
    store = store or RunStore(device=device, progress=progress)
    started = time.perf_counter()
    configs, runs, backbones = {}, {}, {}
    for seed in seeds:
        for regime in regimes:
            config = make_config(profile, regime=regime, seed=seed, method=method, **overrides)
            configs[(regime, seed)] = config
            runs[(regime, seed)] = store.get_or_run(config)
        backbones[seed] = store.get_or_run_backbone(configs[(regimes[0], seed)])
    first = configs[(regimes[0], seeds[0])]
    spec = dataset_spec(first.dataset)
    costs = evaluate.exit_costs(build_model(first), (spec.channels, spec.image_size, spec.image_size))
    return RegimeComparison(configs, runs, backbones, costs, policy,
                            time.perf_counter() - started, list(store.trained))
