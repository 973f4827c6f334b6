"""The study: a grid of configurations → runs from the store → per-run evaluation → tables,
figures and findings grouped by any field.

:func:`run_study` takes a grid (any :class:`mexlib.config.RunConfig` field or
:func:`mexlib.config.make_config` override, each with a list of values: regime × method × arch
× ...) and seeds, gets or trains every run through the run store, counts each distinct model's
exit FLOPs once, and evaluates every run offline. The :class:`Study` it returns builds every
table by grouping its runs on any of the grid's fields; its findings are computed from the
numbers, never assumed. Notebooks call these and plot; they hold no logic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import evaluate
from .config import ALL_REGIMES, BACKBONE_ALONE, REGIMES, RunConfig, grid_points, make_config, profile_seeds
from .data import dataset_spec
from .methods import get_method
from .store import RunStore, StoredRun
from .sweep import sweep
from .train import build_model

#: Confidence thresholds of the sweep (STUDY.md §3: 100 evenly spaced in [0, 1]).
THRESHOLDS = torch.linspace(0, 1, 100)
#: The label of the reference row (the plain backbone, phase 1 alone) in the budget tables.
BACKBONE_ROW = "backbone alone (no exits)"
#: How a budget's operating point is picked: the best test point, or a threshold fixed on validation.
PICKED = ("test", "validation")


@dataclass
class StudyRun:
    """One finished run of the grid, evaluated: its grid values, seed, stored run and curves."""

    values: dict[str, Any]  # the grid's values for this run (the seed apart)
    seed: int
    config: RunConfig
    run: StoredRun
    backbone: StoredRun | None  # its phase-1 run, where the regime has one
    policy: str
    costs: evaluate.ExitCosts
    curve: pd.DataFrame = field(repr=False)  # the test set's accuracy-cost sweep
    val_curve: pd.DataFrame = field(repr=False)
    control: bool = False  # an equal-compute control: its backbone is not the study's reference one

    def logits(self, split: str = "test"):
        return self.run.logits(split)

    @property
    def num_exits(self) -> int:
        return len(self.costs.relative)


class SeedTables:
    """The per-seed side of :class:`Study`'s tables: every run's accuracy at each budget, picked
    on the test curve or on validation (what the means, stds and intervals are computed from)."""

    def seed_table(self, by=None, picked: str = "test") -> pd.DataFrame:
        """Each run's accuracy at each budget, the values the budget tables average: the grid
        fields ``by``, ``seed``, ``budget``, ``accuracy`` (NaN where no point fits) and the
        test ``cost`` of the point. ``picked``: ``"test"``, the best test point within the
        budget (:meth:`budget_table`), or ``"validation"``, the threshold fixed on validation
        (:meth:`validation_budget_table`)."""
        if picked not in PICKED:
            raise ValueError(f"unknown picked {picked!r}; valid: {', '.join(PICKED)}")
        by = self.by_fields(by)
        rows = []
        for run in self.runs:
            if picked == "validation":
                points = evaluate.choose_on_validation(run.val_curve, run.curve)
                accuracy, cost = points["accuracy"].to_numpy(), points["cost"].to_numpy()
            else:
                points = evaluate.best_points(run.curve)
                accuracy, cost = points["accuracy"].to_numpy(), points["cost"].to_numpy()
            for budget, a, c in zip(evaluate.BUDGETS, accuracy, cost):
                rows.append({**{f: run.values[f] for f in by}, "seed": run.seed, "budget": budget,
                             "accuracy": float(a), "cost": float(c)})
        return pd.DataFrame(rows)

    def validation_budget_table(self, by=None) -> pd.DataFrame:
        """As :meth:`budget_table`, but each seed's threshold is fixed on the validation split
        (:func:`mexlib.evaluate.choose_on_validation`) and its test accuracy reported; a
        ``cost`` column pair gives the mean test cost of the chosen points."""
        by = self.by_fields(by)
        groups = self.groups(by)
        rows = []
        for runs in groups.values():
            picks = [evaluate.choose_on_validation(r.val_curve, r.curve) for r in runs]
            accuracy = np.stack([p["accuracy"].to_numpy() for p in picks])
            cost = np.stack([p["cost"].to_numpy() for p in picks])
            std = accuracy.std(axis=0, ddof=1) if len(picks) > 1 else np.full(accuracy.shape[1], np.nan)
            values = []
            for b in range(accuracy.shape[1]):
                values += [accuracy[:, b].mean(), std[b], cost[:, b].mean()]
            rows.append(values)
        columns = pd.MultiIndex.from_product([list(evaluate.BUDGETS), ["mean", "std", "cost"]],
                                             names=["budget", "stat"])
        return pd.DataFrame(rows, index=self._index(list(groups), by), columns=columns)


class Study(SeedTables):
    """Evaluated runs of a grid; every table groups them by grid fields (``by``)."""

    def __init__(self, runs: list[StudyRun], fields: Sequence[str], seconds: float = 0.0,
                 trained: Sequence[str] = ()):
        if not runs:
            raise ValueError("a study needs at least one run")
        self.runs = list(runs)
        self.fields = tuple(fields)
        self.seconds = seconds
        self.trained = list(trained)

    # --- structure -----------------------------------------------------------------------

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(r.seed for r in self.runs))

    def values(self, name: str) -> list:
        """The values of grid field ``name`` in grid order."""
        self._check_fields([name])
        return list(dict.fromkeys(r.values[name] for r in self.runs))

    @property
    def regimes(self) -> list[str]:
        return self.values("regime")

    @property
    def num_exits(self) -> int:
        counts = {r.num_exits for r in self.runs}
        if len(counts) > 1:
            raise ValueError(f"the runs have different numbers of exits {sorted(counts)}; select one model first")
        return counts.pop()

    @property
    def costs(self) -> evaluate.ExitCosts:
        """The exit costs shared by every run (raises when the grid holds different models)."""
        distinct = {tuple(r.costs.flops_per_exit) for r in self.runs}
        if len(distinct) > 1:
            raise ValueError("the runs' models differ in cost; use cost_table(by=...) or select one model")
        return self.runs[0].costs

    @property
    def policy(self) -> str:
        policies = list(dict.fromkeys(r.policy for r in self.runs))
        return policies[0] if len(policies) == 1 else ", ".join(policies)

    def select(self, **criteria) -> "Study":
        """The runs whose grid values (or ``seed``) match ``criteria``: a value or a list of them."""
        self._check_fields([k for k in criteria if k != "seed"])
        wanted = {k: [v] if self._is_value(k, v) or not isinstance(v, (list, tuple, set)) else v
                  for k, v in criteria.items()}
        runs = [r for r in self.runs
                if all((r.seed if k == "seed" else r.values[k]) in v for k, v in wanted.items())]
        if not runs:
            raise ValueError(f"no run matches {criteria}")
        return Study(runs, self.fields, self.seconds, self.trained)

    def _is_value(self, name: str, value) -> bool:
        """Whether ``value`` is itself one of field ``name``'s values (a tuple can be one)."""
        return any((r.seed if name == "seed" else r.values[name]) == value for r in self.runs)

    def groups(self, by: str | Sequence[str] | None = None) -> dict[Any, list[StudyRun]]:
        """Runs grouped by the grid fields ``by`` (default: all of them), in grid order. A key
        is the value itself for one field, a tuple for several."""
        by = self.by_fields(by)
        grouped: dict[Any, list[StudyRun]] = {}
        for run in self.runs:
            key = tuple(run.values[f] for f in by)
            grouped.setdefault(key[0] if len(by) == 1 else key, []).append(run)
        return grouped

    def run(self, seed: int, **values) -> StudyRun:
        """The one run with these grid values and seed."""
        (found,) = self.select(seed=seed, **values).runs
        return found

    def by_fields(self, by) -> list[str]:
        by = list(self.fields) if by is None else [by] if isinstance(by, str) else list(by)
        self._check_fields(by)
        return by

    def _check_fields(self, names) -> None:
        unknown = [n for n in names if n not in self.fields]
        if unknown:
            raise ValueError(f"unknown grid fields {unknown}; this study's fields: {', '.join(self.fields)}")

    def _index(self, keys: list, by: list[str]) -> pd.Index:
        if len(by) == 1:  # a field whose values are tuples (exit_after_blocks) stays one level
            return pd.Index(keys, name=by[0], tupleize_cols=False)
        return pd.MultiIndex.from_tuples(keys, names=by)

    # --- tables --------------------------------------------------------------------------

    def backbone_accuracy(self) -> list[float]:
        """The plain backbones (phase 1, no heads) on the test set, one value per distinct
        backbone (one per seed when the grid varies only regime and method)."""
        backbones = {r.backbone.path: r.backbone for r in self.runs if r.backbone is not None and not r.control}
        return [float(evaluate.per_exit_accuracy(*b.logits("test"))[-1]) for b in backbones.values()]

    def budget_table(self, by=None, reference: bool = True) -> pd.DataFrame:
        """Accuracy at 25/50/75/100 % of the backbone's cost, mean and std over seeds, a row
        per group; with ``reference``, the plain backbone as a last row (it costs exactly
        100 %). Where the first of several ``by`` fields changes phase 1 (an architecture,
        a dataset), each of its values gets its own backbone row after its groups, as in the
        paper's Table 1."""
        by = self.by_fields(by)
        groups = self.groups(by)
        table = evaluate.budget_table({i: [r.curve for r in runs] for i, runs in enumerate(groups.values())})
        table.index = self._index(list(groups), by)
        if not reference:
            return table
        blocks = {}  # by[0]'s value -> the part of the study with it, where phase 1 differs between values
        if len(by) > 1:
            blocks = {v: self.select(**{by[0]: v}) for v in self.values(by[0])}
            backbones = {frozenset(r.backbone.path for r in part.runs if r.backbone is not None)
                         for part in blocks.values()}
            if len(backbones) < len(blocks):  # the values share their backbones: one row for all
                blocks = {}
        if not blocks:
            accuracy = self.backbone_accuracy()
            if not accuracy:
                return table
            label = BACKBONE_ROW if len(by) == 1 else (BACKBONE_ROW,) + ("",) * (len(by) - 1)
            return pd.concat([table, self._backbone_row(accuracy, label, by)])
        parts = []
        for value, part in blocks.items():
            parts.append(table[[key[0] == value for key in table.index]])
            accuracy = part.backbone_accuracy()
            if accuracy:
                parts.append(self._backbone_row(accuracy, (value, BACKBONE_ROW) + ("",) * (len(by) - 2), by))
        return pd.concat(parts)

    def _backbone_row(self, accuracy: list[float], label, by: list[str]) -> pd.DataFrame:
        rows = [pd.DataFrame({"cost": [1.0], "accuracy": [a]}) for a in accuracy]
        extra = evaluate.budget_table({0: rows})
        extra.index = self._index([label], by)
        return extra

    def cost_table(self, by=None) -> pd.DataFrame:
        """Each exit's cost relative to the plain backbone, a row per group (its first run's
        model: the runs of a group share their model unless the grid varies it within)."""
        by = self.by_fields(by)
        groups = self.groups(by)
        width = max(r.num_exits for r in self.runs)
        rows = [[float(c) for c in runs[0].costs.relative] + [np.nan] * (width - runs[0].num_exits)
                for runs in groups.values()]
        return pd.DataFrame(rows, index=self._index(list(groups), by), columns=[f"exit {k}" for k in range(width)])

    def per_exit_accuracy(self) -> pd.DataFrame:
        """Long table: the grid's fields, seed, exit, relative cost, accuracy."""
        rows = []
        for run in self.runs:
            logits, labels = run.logits("test")
            for k, acc in enumerate(evaluate.per_exit_accuracy(logits, labels).tolist()):
                rows.append(dict(**run.values, seed=run.seed, exit=k,
                                 cost=float(run.costs.relative[k]), accuracy=acc))
        return pd.DataFrame(rows)

    def exit_distribution(self, threshold: float, by=None) -> pd.DataFrame:
        """Share of test samples leaving at each exit at one threshold of each run's policy,
        averaged over seeds: a row per group, a column per exit."""
        by = self.by_fields(by)
        groups = self.groups(by)
        rows = []
        for runs in groups.values():
            shares = []
            for run in runs:
                logits, _ = run.logits("test")
                decision = evaluate.run_policy(run.policy, logits, [threshold])
                shares.append(evaluate.exit_distribution(decision.exit_index[0], run.num_exits))
            rows.append(torch.stack(shares).mean(0).numpy())
        return pd.DataFrame(rows, index=self._index(list(groups), by),
                            columns=[f"exit {k}" for k in range(len(rows[0]))])

    def summary(self, by=None, auc_range: tuple[float, float] = (0.25, 1.0)) -> pd.DataFrame:
        """Per group, mean and std over seeds: final-exit accuracy, area under the curve over
        ``auc_range`` of relative cost, oracle accuracy and overthinking (all fractions)."""
        by = self.by_fields(by)
        rows = []
        for run in self.runs:
            logits, labels = run.logits("test")
            rows.append(dict(
                **{f: run.values[f] for f in by},
                final_exit_accuracy=float(evaluate.per_exit_accuracy(logits, labels)[-1]),
                auc=evaluate.area_under_curve(run.curve, auc_range),
                oracle_accuracy=evaluate.oracle_accuracy(logits, labels),
                overthinking=evaluate.overthinking(logits, labels).fraction))
        return pd.DataFrame(rows).groupby(by, sort=False).agg(["mean", "std"])

    def training_history(self, seed: int) -> pd.DataFrame:
        """Long table of one seed's training curves: the grid's fields, phase, epoch, exit,
        metric, value (phase 1 from the shared backbone run)."""
        rows = []
        for run in self.runs:
            if run.seed != seed:
                continue
            phases = [p for p in run.run.history if "history" in p]
            if run.backbone is not None:
                phases = run.backbone.history + phases
            for phase in phases:
                for row in phase["history"]:
                    for metric in ("train_loss", "val_loss", "val_acc"):
                        for k, value in enumerate(row.get(metric, [])):
                            exit_index = run.num_exits - 1 if phase["phase"] in BACKBONE_ALONE else k
                            rows.append(dict(**run.values, phase=phase["phase"], epoch=row["epoch"],
                                             exit=exit_index, metric=metric, value=value))
        return pd.DataFrame(rows)

    def wall_times(self) -> pd.DataFrame:
        """Training seconds per stored run, from the runs' provenance: phase-1 backbones once
        each, and a run that several grid points read (PBEE reads SDN's) once, under the first;
        ``run`` labels it, ``stored`` names its folder in the store, and a column per grid field
        holds its values (empty for the backbones)."""
        rows, seen = [], set()
        for run in self.runs:
            if run.backbone is not None and run.backbone.path not in seen:
                seen.add(run.backbone.path)
                label = f"backbone (phase 1, {run.config.backbone_phase.epochs} epochs)" if run.control else \
                    "backbone (phase 1)"
                rows.append(dict(run=label, seed=run.seed,
                                 seconds=run.backbone.provenance["wall_time_seconds"],
                                 stored=run.backbone.path.name, **dict.fromkeys(self.fields)))
        for run in self.runs:
            if run.run.path in seen:
                continue
            seen.add(run.run.path)
            rows.append(dict(run=" ".join(str(run.values[f]) for f in self.fields), seed=run.seed,
                             seconds=run.run.provenance["wall_time_seconds"], stored=run.run.path.name,
                            **run.values))
        return pd.DataFrame(rows)


# --- building a study --------------------------------------------------------------------------

def run_study(profile: str = "cpu", grid: Mapping[str, Sequence] | None = None, seeds=None,
              policy: str | None = None, device: str = "auto", progress: bool = True,
              store: RunStore | None = None, executor: str = "inline", workers: int = 2,
              executor_options: Mapping[str, Any] | None = None, **overrides) -> Study:
    """Get or train every run of ``grid`` × ``seeds`` and evaluate it on the test set.

    ``grid`` maps configuration names (any :func:`mexlib.config.make_config` name: ``regime``,
    ``method``, ``arch``, ``epochs``, ...) to the values to cross; ``overrides`` fix names for
    every run. ``policy`` defaults to each run's method's exit rule; ``policy`` may also be a
    grid field, which evaluates the same stored runs under each exit rule. Runs come from the store
    when it has them; phase 1 is trained once per seed and shared by every regime and method
    that starts from it. ``store`` defaults to the run store in :func:`mexlib.paths.runs_dir`.

    ``executor`` trains the missing runs first as a sweep (:func:`mexlib.sweep.sweep`:
    ``"local"`` runs ``workers`` jobs at a time on this machine, ``"slurm"`` submits to a
    cluster with ``executor_options`` such as ``{"slurm": {"partition": "gpu"}}``); the default,
    ``"inline"``, trains them here one after another. A failed job stops the study with its
    error and log file; the runs that finished stay in the store.
    """
    grid = dict(grid or {"regime": list(REGIMES)})
    clash = set(grid) & (set(overrides) | {"seed", "profile"} | ({"policy"} if policy is not None else set()))
    if clash:
        raise ValueError(f"{sorted(clash)} cannot be both a grid field and fixed (seeds: use seeds=)")
    for name in ("policy",) if "policy" in grid else ():
        unknown = set(grid["policy"]) - set(evaluate.POLICIES)
        if unknown:
            raise ValueError(f"unknown policies {sorted(unknown)}; valid policies: {', '.join(evaluate.POLICIES)}")
    if "regime" in grid:
        unknown = set(grid["regime"]) - set(ALL_REGIMES)
        if unknown:
            raise ValueError(f"unknown regimes {sorted(unknown)}; valid regimes: {', '.join(ALL_REGIMES)}")
    if policy is not None and policy not in evaluate.POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid policies: {', '.join(evaluate.POLICIES)}")
    seeds = profile_seeds(profile, seeds)
    configs = grid_points(profile, grid, seeds, overrides)  # every configuration checked before training
    store = store or RunStore(device=device, progress=progress)
    started = time.perf_counter()
    if executor != "inline":
        state = sweep([c for _, _, c in configs], executor, workers, store=store, progress=progress,
                      **dict(executor_options or {}))
        store.trained += [f"{row.kind}-{row.key}" for row in state.itertuples()
                          if row.submitted and row.status == "done"]
        # a task another process is training (or that is queued on a cluster) is read below,
        # once its lock is free; one that failed or stopped stops the study
        failed = state[state["status"].isin(["failed", "interrupted"])]
        if len(failed):
            raise RuntimeError(f"{len(failed)} tasks of the sweep did not finish:\n"
                               + failed.drop(columns=["key"]).to_string(index=False))
    costs: dict[tuple, evaluate.ExitCosts] = {}
    runs = []
    for point, seed, config in configs:
        stored = store.get_or_run(config)
        backbone = store.get_or_run_backbone(config) if "backbone" in config.phases else None
        model_key = (config.dataset, config.arch, config.exit_after_blocks, config.head, config.method)
        if model_key not in costs:
            spec = dataset_spec(config.dataset)
            costs[model_key] = evaluate.exit_costs(build_model(config), spec.input_shape)
        run_policy = point.get("policy") or policy or get_method(config.method).policy
        thresholds = None if run_policy == "patience" else THRESHOLDS
        curves = {split: evaluate.tradeoff_curve(*stored.logits(split), costs[model_key].relative,
                                                 run_policy, thresholds) for split in ("test", "val")}
        runs.append(StudyRun(point, seed, config, stored, backbone, run_policy, costs[model_key],
                             curves["test"], curves["val"]))
    return Study(runs, tuple(grid), time.perf_counter() - started, store.trained)


def compare_regimes(profile: str = "cpu", seeds=None, regimes=("disjoint", "joint", "mixed"),
                    method: str = "sdn", policy: str | None = None, device: str = "auto",
                    progress: bool = True, store: RunStore | None = None, controls: bool = False,
                    control_seeds=None, **overrides) -> Study:
    """The regime comparison of one method: :func:`run_study` over ``regimes``; with
    ``controls``, and the equal-compute controls of :func:`equal_compute_controls` beside them
    (as values of the ``regime`` field, labelled as :data:`CONTROLS` says), for ``control_seeds``
    (None: ``seeds``)."""
    how = {k: overrides.pop(k) for k in ("executor", "workers", "executor_options") if k in overrides}
    study = run_study(profile, {"regime": list(regimes)}, seeds, policy, device, progress, store,
                      method=method, **how, **overrides)
    if not controls:
        return study
    control = equal_compute_controls(profile, seeds if control_seeds is None else control_seeds, method, policy,
                                     device, progress, store, **how, **overrides)
    return Study(study.runs + control.runs, study.fields, study.seconds + control.seconds,
                 list(dict.fromkeys(study.trained + control.trained)))


#: The equal-compute controls (STUDY.md §2, "epochs trained, not caps"): mixed trains the
#: backbone for the epochs of phase 1 and phase 2 together, so joint gets that many epochs, and
#: disjoint a backbone trained that long (then its heads, as disjoint's are trained).
CONTROLS = {"joint": "joint, {epochs} epochs", "disjoint": "disjoint, {epochs}-epoch backbone"}


def control_epochs(profile: str, method: str = "sdn", **overrides) -> int:
    """The epochs mixed trains its backbone for (phase 1 and phase 2 together): the controls'."""
    config = make_config(profile, method=method, regime="mixed", **overrides)
    return config.backbone_phase.epochs + config.joint_phase.epochs


def equal_compute_controls(profile: str = "cpu", seeds=None, method: str = "sdn", policy: str | None = None,
                           device: str = "auto", progress: bool = True, store: RunStore | None = None,
                           **overrides) -> Study:
    """Joint trained for as many epochs as mixed trains its backbone in total, and disjoint on a
    backbone trained that long: the pretraining splits k = 0 and k = N of N =
    :func:`control_epochs` (:func:`mexlib.config.with_pretraining_split`). Their long phase has no
    early stopping (``patience=None``), so it trains every one of the N epochs (a stopper on a
    schedule far from its end stops on a noisy peak: STUDY.md §2) and ends on its best epoch, as
    every phase does. The study's ``regime`` field holds the labels of :data:`CONTROLS`."""
    how = {k: overrides.pop(k) for k in ("executor", "workers", "executor_options") if k in overrides}
    phases = {}
    for phase in ("backbone_phase", "joint_phase"):
        given = overrides.pop(phase, {})
        if not isinstance(given, Mapping):
            raise ValueError(f"with controls, give {phase} as a dict of changes (e.g. {{'lr': 0.01}}), not {given!r}")
        phases[phase] = {**given, "patience": None}
    epochs = control_epochs(profile, method, **{k: {x: y for x, y in v.items() if x != "patience"}
                                                for k, v in phases.items()}, **overrides)
    study = run_study(profile, {"backbone_epochs": [0, epochs]}, seeds, policy, device, progress, store,
                      method=method, total_epochs=epochs, **how, **phases, **overrides)
    labels = {0: CONTROLS["joint"].format(epochs=epochs), epochs: CONTROLS["disjoint"].format(epochs=epochs)}
    runs = [replace(run, values={"regime": labels[run.values["backbone_epochs"]]}, control=True) for run in study.runs]
    return Study(runs, ("regime",), study.seconds, study.trained)


__all__ = ["BACKBONE_ROW", "CONTROLS", "PICKED", "SeedTables", "control_epochs", "equal_compute_controls", "Study", "StudyRun", "THRESHOLDS", "compare_regimes", "run_study"]
