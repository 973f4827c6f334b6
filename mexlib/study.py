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

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from . import evaluate
from .config import REGIMES, RunConfig
from .data import dataset_spec
from .methods import get_method
from .store import RunStore, StoredRun
from .sweep import grid_points, sweep
from .train import build_model

DEFAULT_SEEDS = {"smoke": (0, 1), "cpu": (0, 1, 2), "paper": (0, 1, 2)}
#: Confidence thresholds of the sweep (STUDY.md §3: 100 evenly spaced in [0, 1]).
THRESHOLDS = torch.linspace(0, 1, 100)
#: The label of the reference row (the plain backbone, phase 1 alone) in the budget tables.
BACKBONE_ROW = "backbone alone (no exits)"


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

    def logits(self, split: str = "test"):
        return self.run.logits(split)

    @property
    def num_exits(self) -> int:
        return len(self.costs.relative)


class Study:
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
        by = self._by(by)
        grouped: dict[Any, list[StudyRun]] = {}
        for run in self.runs:
            key = tuple(run.values[f] for f in by)
            grouped.setdefault(key[0] if len(by) == 1 else key, []).append(run)
        return grouped

    def run(self, seed: int, **values) -> StudyRun:
        """The one run with these grid values and seed."""
        (found,) = self.select(seed=seed, **values).runs
        return found

    def _by(self, by) -> list[str]:
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
        backbones = {r.backbone.path: r.backbone for r in self.runs if r.backbone is not None}
        return [float(evaluate.per_exit_accuracy(*b.logits("test"))[-1]) for b in backbones.values()]

    def budget_table(self, by=None, reference: bool = True) -> pd.DataFrame:
        """Accuracy at 25/50/75/100 % of the backbone's cost, mean and std over seeds, a row
        per group; with ``reference``, the plain backbone as a last row (it costs exactly
        100 %). Where the first of several ``by`` fields changes phase 1 (an architecture,
        a dataset), each of its values gets its own backbone row after its groups, as in the
        paper's Table 1."""
        by = self._by(by)
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

    def validation_budget_table(self, by=None) -> pd.DataFrame:
        """As :meth:`budget_table`, but each seed's threshold is fixed on the validation split
        (:func:`mexlib.evaluate.choose_on_validation`) and its test accuracy reported; a
        ``cost`` column pair gives the mean test cost of the chosen points."""
        by = self._by(by)
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

    def cost_table(self, by=None) -> pd.DataFrame:
        """Each exit's cost relative to the plain backbone, a row per group (its first run's
        model: the runs of a group share their model unless the grid varies it within)."""
        by = self._by(by)
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
        by = self._by(by)
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
        by = self._by(by)
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
                            exit_index = run.num_exits - 1 if phase["phase"] == "backbone" else k
                            rows.append(dict(**run.values, phase=phase["phase"], epoch=row["epoch"],
                                             exit=exit_index, metric=metric, value=value))
        return pd.DataFrame(rows)

    def wall_times(self) -> pd.DataFrame:
        """Training seconds per stored run, from the runs' provenance: phase-1 backbones once
        each, and a run that several grid points read (PBEE reads SDN's) once, under the first;
        ``stored`` names the run's folder in the store."""
        rows, seen = [], set()
        for run in self.runs:
            if run.backbone is not None and run.backbone.path not in seen:
                seen.add(run.backbone.path)
                rows.append(dict(run="backbone (phase 1)", seed=run.seed,
                                 seconds=run.backbone.provenance["wall_time_seconds"],
                                 stored=run.backbone.path.name))
        for run in self.runs:
            if run.run.path in seen:
                continue
            seen.add(run.run.path)
            rows.append(dict(run=" ".join(str(run.values[f]) for f in self.fields), seed=run.seed,
                             seconds=run.run.provenance["wall_time_seconds"], stored=run.run.path.name))
        return pd.DataFrame(rows)

    # --- findings ------------------------------------------------------------------------

    def ranking(self, among: str = "regime", within=(), budgets: Sequence[float] = evaluate.BUDGETS,
                single_seed_spread: float | None = None) -> list[str]:
        """For each group of ``within`` and each budget: the values of ``among`` ranked by mean
        accuracy, the leader's margin, and whether it exceeds the seeds' spread (with one seed,
        ``single_seed_spread`` stands in for it, as in :meth:`advantage`)."""
        within = _names(within)
        table = self.budget_table(within + [among], reference=False)
        lines = []
        for key in _within_keys(self, within):
            prefix = f"{_label(_as_tuple(within, key))}: " if within else ""
            for budget in budgets:
                means = {a: _cell(table, key, a, budget, "mean", within) for a in self.values(among)}
                stds = {a: _cell(table, key, a, budget, "std", within) for a in self.values(among)}
                fitting = {a: m for a, m in means.items() if not np.isnan(m)}
                if not fitting:
                    lines.append(f"{prefix}at {budget:.0%} of the backbone's cost no {among} has an operating point.")
                    continue
                ranked = sorted(fitting, key=fitting.get, reverse=True)
                best = ranked[0]
                text = ", ".join(f"{a} {100 * fitting[a]:.2f} %" for a in ranked)
                if len(ranked) == 1:
                    lines.append(f"{prefix}at {budget:.0%} of the backbone's cost only {best} has an "
                                 f"operating point: {text}.")
                    continue
                gap = fitting[best] - fitting[ranked[1]]
                spread = max((s for s in stds.values() if not np.isnan(s)), default=np.nan)
                whose = "the largest standard deviation over seeds"
                if np.isnan(spread) and single_seed_spread is not None:
                    spread, whose = float(single_seed_spread), "the spread given for one-seed groups"
                verdict = " (one seed and no spread to judge by)"
                if not np.isnan(spread):
                    verdict = (f" (a clear lead: larger than {whose})"
                               if gap > spread else f" (within {whose}: no clear winner)")
                lines.append(f"{prefix}at {budget:.0%} of the backbone's cost: {text}; best {best}, "
                             f"ahead by {100 * gap:.2f} points{verdict}.")
        return [line[0].upper() + line[1:] for line in lines]

    def advantage(self, candidate: str = "mixed", among: str = "regime", within=(),
                  single_seed_spread: float | None = None) -> pd.DataFrame:
        """How ``candidate`` (a value of ``among``) fares against the best other value, per
        group of ``within`` and budget: both means, the gap in accuracy (candidate − best
        other; fractions), the largest std over seeds among them, and a verdict: ``best``
        (ahead by more than that spread), ``tied`` (within it) or ``behind``.

        Groups trained with one seed have no std: ``single_seed_spread`` (a fraction, e.g. the
        seeds' spread of a related configuration) stands in for it; without one, their verdict
        is ``one seed``."""
        within = _names(within)
        table = self.budget_table(within + [among], reference=False)
        others = [a for a in self.values(among) if a != candidate]
        rows = []
        for key in _within_keys(self, within):
            for budget in evaluate.BUDGETS:
                mine = _cell(table, key, candidate, budget, "mean", within)
                other_means = {a: _cell(table, key, a, budget, "mean", within) for a in others}
                other_means = {a: m for a, m in other_means.items() if not np.isnan(m)}
                if np.isnan(mine) or not other_means:
                    continue
                rival = max(other_means, key=other_means.get)
                stds = [_cell(table, key, a, budget, "std", within) for a in [candidate] + others]
                gap = mine - other_means[rival]
                spread, verdict = _judge(gap, stds, single_seed_spread, ahead="best")
                rows.append({**dict(zip(within, _as_tuple(within, key))), "budget": budget,
                             candidate: mine, "best other": rival, "best other accuracy": other_means[rival],
                             "gap": gap, "spread": spread, "verdict": verdict})
        return pd.DataFrame(rows)

    def advantage_findings(self, candidate: str = "mixed", among: str = "regime", within=(),
                           single_seed_spread: float | None = None) -> list[str]:
        """:meth:`advantage` in words: per group of ``within``, where ``candidate`` is best,
        tied or behind, and by how many points."""
        within = _names(within)
        frame = self.advantage(candidate, among, within, single_seed_spread)
        lines = []
        keys = frame.groupby(within, sort=False) if within else [((), frame)]
        for key, part in keys:
            name = _label(key) if within else "Overall"  # groupby on a list: keys are tuples
            parts = []
            for _, row in part.iterrows():
                rel = "ahead of" if row["gap"] >= 0 else "behind"
                spread = "no spread" if np.isnan(row["spread"]) else f"spread {100 * row['spread']:.2f}"
                parts.append(f"at {row['budget']:.0%} {row['verdict']} ({100 * abs(row['gap']):.2f} points "
                             f"{rel} {row['best other']}, {spread})")
            counts = part["verdict"].value_counts()
            headline = (f"{candidate} is best at {counts.get('best', 0)}, tied at {counts.get('tied', 0)} and "
                        f"behind at {counts.get('behind', 0)} of {len(part)} budgets")
            if counts.get("one seed", 0):
                headline += f" (one seed and no spread to judge by at {counts['one seed']})"
            lines.append(f"{name}: {headline}: " + "; ".join(parts) + ".")
        return lines

    def against(self, reference: Mapping[str, Any], budgets: Sequence[float] = evaluate.BUDGETS,
                single_seed_spread: float | None = None) -> pd.DataFrame:
        """Every group of the fields of ``reference`` (e.g. ``{"method": "sdn", "regime":
        "mixed"}``) against that one group, per budget where both have an operating point:
        both means, the gap (group − reference; fractions), the larger of their two stds over
        seeds and a verdict: ``ahead`` (by more than that spread), ``tied`` (within it) or
        ``behind``. One-seed groups have no std: ``single_seed_spread`` stands in, as in
        :meth:`advantage`; without it their verdict is ``one seed``."""
        by = self._by(list(reference))
        key = tuple(reference[f] for f in by)
        keys = [k if len(by) > 1 else (k,) for k in self.groups(by)]
        if key not in keys:
            raise ValueError(f"no runs with {dict(reference)}; this study's groups of {by}: "
                             + ", ".join(map(_label, keys)))
        table = self.budget_table(by, reference=False)  # a row per group, in the order of keys
        ref = table.iloc[keys.index(key)]
        rows = []
        for values, (_, row) in zip(keys, table.iterrows()):
            for budget in budgets if values != key else ():
                mine, theirs = row[(budget, "mean")], ref[(budget, "mean")]
                if np.isnan(mine) or np.isnan(theirs):
                    continue
                gap = mine - theirs
                spread, verdict = _judge(gap, [row[(budget, "std")], ref[(budget, "std")]], single_seed_spread)
                rows.append({**dict(zip(by, values)), "budget": budget, "accuracy": mine,
                             "reference accuracy": theirs, "gap": gap, "spread": spread, "verdict": verdict})
        return pd.DataFrame(rows, columns=by + ["budget", "accuracy", "reference accuracy", "gap", "spread",
                                                "verdict"])

    def best_versus(self, among: str, candidates: Sequence, rivals: Sequence,
                    budgets: Sequence[float] = evaluate.BUDGETS,
                    single_seed_spread: float | None = None) -> pd.DataFrame:
        """Per budget where both sides have an operating point: the best of ``candidates`` (values
        of ``among``) against the best of ``rivals``, their means, the gap, the larger of their two
        stds over seeds and a verdict as in :meth:`advantage` (``best``, ``tied``, ``behind`` or
        ``one seed``). E.g. the pretraining splits between 0 and N epochs against the two ends."""
        table = self.budget_table(among, reference=False)
        rows = []
        for budget in budgets:
            sides = [table.loc[[v for v in values if v in table.index], (budget, "mean")].dropna()
                     for values in (candidates, rivals)]
            if not all(len(side) for side in sides):
                continue
            best, rival = (side.idxmax() for side in sides)
            gap = sides[0][best] - sides[1][rival]
            spread, verdict = _judge(gap, table.loc[[best, rival], (budget, "std")].tolist(), single_seed_spread,
                                     ahead="best")
            rows.append({"budget": budget, "best": best, "accuracy": sides[0][best], "best rival": rival,
                         "rival accuracy": sides[1][rival], "gap": gap, "spread": spread, "verdict": verdict})
        return pd.DataFrame(rows, columns=["budget", "best", "accuracy", "best rival", "rival accuracy", "gap",
                                           "spread", "verdict"])

    def against_findings(self, reference: Mapping[str, Any], budgets: Sequence[float] = evaluate.BUDGETS,
                         single_seed_spread: float | None = None) -> list[str]:
        """:meth:`against` in words: a line per group, its verdict and gap at each budget."""
        by = list(reference)
        frame = self.against(reference, budgets, single_seed_spread)
        name = _label(tuple(reference[f] for f in by))
        lines = []
        rows = (row for _, row in frame.iterrows())
        for values, part in itertools.groupby(rows, key=lambda row: tuple(row[f] for f in by)):
            parts = []
            for row in part:
                spread = "no spread" if np.isnan(row["spread"]) else f"spread {100 * row['spread']:.2f}"
                parts.append(f"{row['verdict']} at {row['budget']:.0%} ({100 * row['gap']:+.2f} points, {spread})")
            lines.append(f"{_label(values)} against {name}: " + ", ".join(parts) + ".")
        return lines

    def paper_claim(self, within=(), single_seed_spread: float | None = None) -> str:
        """The study's central claim (STUDY.md §6), checked here: mixed is best or near best (not
        behind the best other regime by more than the seeds' spread, :meth:`advantage`) at every
        budget where it and another regime have an operating point, in every group of ``within``."""
        frame = self.advantage("mixed", "regime", within, single_seed_spread)
        judged = frame[frame["verdict"] != "one seed"]
        held = bool(len(judged)) and bool((judged["verdict"] != "behind").all())
        where = ("budgets and groups where mixed and another regime have a point" if _names(within)
                 else "budgets where every regime has a point")
        unjudged = len(frame) - len(judged)
        return ("Paper's claim 'mixed is best or near best (within the seeds' spread) at every budget': "
                f"{'holds' if held else 'does not hold' if len(judged) else 'cannot be judged'} here "
                f"({int((judged['verdict'] != 'behind').sum())} of {len(judged)} {where}"
                + (f"; {unjudged} one-seed comparisons without a spread to judge by" if unjudged else "") + ").")

    def findings(self) -> list[str]:
        """The regime comparison's statements (one method): per budget the ranking, the
        paper's claim that mixed is best or near best, and the early-exit claim."""
        lines = self.ranking("regime")
        regimes = self.regimes
        if "mixed" in regimes and len(regimes) > 1:
            lines.append(self.paper_claim())
        if {"disjoint", "mixed", "joint"} <= set(regimes):
            lines.append(self._claim_early_exits())
        return lines

    def _claim_early_exits(self) -> str:
        accuracy = self.per_exit_accuracy().groupby(["regime", "exit"])["accuracy"].mean()
        last = self.num_exits - 1
        first = {r: accuracy[(r, 0)] for r in ("disjoint", "joint", "mixed")}
        final = {r: accuracy[(r, last)] for r in ("disjoint", "joint", "mixed")}
        weakest_first = min(first, key=first.get)
        return (f"First exit: disjoint {100 * first['disjoint']:.2f} %, joint "
                f"{100 * first['joint']:.2f} %, mixed {100 * first['mixed']:.2f} % "
                f"(the paper expects disjoint's early exits to be the weakest: "
                f"{'so here' if weakest_first == 'disjoint' else 'not so here, ' + weakest_first + ' is'}). "
                f"Final exit: disjoint {100 * final['disjoint']:.2f} %, joint {100 * final['joint']:.2f} %, "
                f"mixed {100 * final['mixed']:.2f} %.")


def _judge(gap: float, stds: Sequence[float], single_seed_spread: float | None,
           ahead: str = "ahead") -> tuple[float, str]:
    """The spread a gap is judged by (the largest std over seeds among the groups compared; with
    one seed each, ``single_seed_spread``, or NaN without it) and the verdict: ``ahead`` (the
    word given) beyond it, ``behind`` below minus it, ``tied`` within, ``one seed`` unjudged."""
    spread = np.nanmax(stds) if not all(np.isnan(stds)) else single_seed_spread
    spread = np.nan if spread is None else float(spread)
    verdict = ("one seed" if np.isnan(spread) else ahead if gap > spread
               else "behind" if gap < -spread else "tied")
    return spread, verdict


def _names(fields) -> list[str]:
    """One field name or several, as a list."""
    return [fields] if isinstance(fields, str) else list(fields)


def _within_keys(study: Study, within: list[str]) -> list:
    if not within:
        return [()]
    return list(study.groups(within))


def _as_tuple(within: list[str], key) -> tuple:
    """A key of :meth:`Study.groups` as a tuple of field values (one field's key is its value,
    which may itself be a tuple)."""
    return key if len(within) > 1 else (key,)


def _label(values: tuple) -> str:
    return ", ".join(str(v) for v in values)


def _cell(table: pd.DataFrame, key, value, budget: float, stat: str, within: list[str]) -> float:
    row = (value,) if not within else _as_tuple(within, key) + (value,)
    try:
        position = table.index.get_loc(row[0] if len(row) == 1 else row)  # a value may be a tuple
    except KeyError:
        return float("nan")
    return float(table[(budget, stat)].iloc[position])


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
        unknown = set(grid["regime"]) - set(REGIMES)
        if unknown:
            raise ValueError(f"unknown regimes {sorted(unknown)}; valid regimes: {', '.join(REGIMES)}")
    if policy is not None and policy not in evaluate.POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid policies: {', '.join(evaluate.POLICIES)}")
    seeds = tuple(DEFAULT_SEEDS[profile] if seeds is None else seeds)
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
            costs[model_key] = evaluate.exit_costs(build_model(config),
                                                   (spec.channels, spec.image_size, spec.image_size))
        run_policy = point.get("policy") or policy or get_method(config.method).policy
        thresholds = None if run_policy == "patience" else THRESHOLDS
        curves = {split: evaluate.tradeoff_curve(*stored.logits(split), costs[model_key].relative,
                                                 run_policy, thresholds) for split in ("test", "val")}
        runs.append(StudyRun(point, seed, config, stored, backbone, run_policy, costs[model_key],
                             curves["test"], curves["val"]))
    return Study(runs, tuple(grid), time.perf_counter() - started, store.trained)


def compare_regimes(profile: str = "cpu", seeds=None, regimes=("disjoint", "joint", "mixed"),
                    method: str = "sdn", policy: str | None = None, device: str = "auto",
                    progress: bool = True, store: RunStore | None = None, **overrides) -> Study:
    """The regime comparison of one method: :func:`run_study` over ``regimes``."""
    return run_study(profile, {"regime": list(regimes)}, seeds, policy, device, progress, store,
                     method=method, **overrides)


__all__ = ["BACKBONE_ROW", "DEFAULT_SEEDS", "Study", "StudyRun", "THRESHOLDS", "compare_regimes", "run_study"]
