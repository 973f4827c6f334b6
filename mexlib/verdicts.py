"""Verdicts: the study's findings, computed from its tables, each with its interval over seeds.

Every comparison here is one rule (:mod:`mexlib.stats`): the difference in accuracy between two
groups at a budget, seed by seed (paired: the runs of one seed share their initialisation, and
disjoint and mixed their phase-1 backbone), with a 95 % Student-t interval and the number of
seeds. A group is ``ahead`` or ``behind`` only when the interval excludes zero, otherwise ``not
distinguishable`` with that many seeds; with one seed there is no interval (``one seed``).

Accuracy at a budget is, by default, that of the threshold fixed on the validation split and
scored on the test set (``picked="validation"``, :meth:`mexlib.study.Study.seed_table`); the
paper's protocol, the best test point within the budget (``picked="test"``), is optimistic and
shown beside it in the tables. On top of the rule:

- :func:`ranking`: the values of a field ranked at each budget, the leader against the runner-up;
- :func:`advantage`: one value (mixed) against the best other one, per group and budget;
- :func:`against`: every group against one reference group; :func:`best_versus`: the best of
  some values against the best of others (the pretraining splits against the two ends);
- :func:`order`: the values of a field from the most accurate down, at each budget;
- :func:`paper_claim`: the study's central claim (mixed best or near best at every budget);
- :func:`regime_findings`: the regime comparison's statements.

Each has a ``*_findings`` companion or returns sentences: findings are computed, never written
by hand, and may contradict the paper.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import evaluate
from .stats import Comparison, compare
from .config import REGIMES
from .study import Study

#: Where the verdicts take accuracy at a budget from, unless told otherwise.
PICKED = "validation"
_PICKED_WORDS = {"validation": "thresholds fixed on validation", "test": "best test point"}


def seed_values(study: Study, by, picked: str = PICKED) -> dict:
    """``{group key: {budget: {seed: accuracy}}}`` for the groups of ``by`` (keys as
    :meth:`Study.groups` gives them), from :meth:`Study.seed_table`."""
    by = study.by_fields(by)
    table = study.seed_table(by, picked)
    values: dict = {}
    for row in table.itertuples(index=False):
        row = row._asdict() if hasattr(row, "_asdict") else dict(zip(table.columns, row))
        key = tuple(row[f] for f in by)
        key = key[0] if len(by) == 1 else key
        values.setdefault(key, {}).setdefault(row["budget"], {})[row["seed"]] = row["accuracy"]
    return values


def _mean(per_seed: Mapping[int, float] | None) -> float:
    """The mean over seeds, NaN when any seed has no point (as the budget tables have it)."""
    if not per_seed:
        return math.nan
    values = list(per_seed.values())
    return math.nan if any(math.isnan(v) for v in values) else float(np.mean(values))


def lead(values: Mapping[Any, Mapping[float, Mapping[int, float]]], budget: float
         ) -> tuple[dict[Any, float], Comparison | None]:
    """The groups of ``values`` with a point at ``budget``, ranked by mean accuracy (a dict in
    that order), and the leader against the runner-up (None with fewer than two groups)."""
    means = {k: _mean(v.get(budget)) for k, v in values.items()}
    ranked = dict(sorted(((k, m) for k, m in means.items() if not math.isnan(m)), key=lambda km: -km[1]))
    if len(ranked) < 2:
        return ranked, None
    first, second = list(ranked)[:2]
    return ranked, compare(values[first][budget], values[second][budget])


def ranking(study: Study, among: str = "regime", within=(), budgets: Sequence[float] = evaluate.BUDGETS,
            picked: str = PICKED) -> list[str]:
    """For each group of ``within`` and each budget: the values of ``among`` ranked by mean
    accuracy, and the leader against the runner-up with its interval."""
    within = _names(within)
    values = seed_values(study, within + [among], picked)
    lines = []
    for key in _within_keys(study, within):
        prefix = f"{_label(_as_tuple(within, key))}: " if within else ""
        mine = {a: values.get(_as_tuple(within, key) + (a,) if within else a, {}) for a in study.values(among)}
        for budget in budgets:
            ranked, comparison = lead(mine, budget)
            where = f"at {budget:.0%} of the backbone's cost ({_PICKED_WORDS[picked]})"
            if not ranked:
                lines.append(f"{prefix}{where} no {among} has an operating point.")
                continue
            text = ", ".join(f"{a} {100 * m:.2f} %" for a, m in ranked.items())
            if comparison is None:
                lines.append(f"{prefix}{where} only {next(iter(ranked))} has an operating point: {text}.")
                continue
            best, second = list(ranked)[:2]
            lines.append(f"{prefix}{where}: {text}; {best} against {second}: {comparison.words()}.")
    return [line[0].upper() + line[1:] for line in lines]


def _row_words(comparison: Comparison) -> dict:
    return {"gap": comparison.difference, "low": comparison.low, "high": comparison.high, "seeds": comparison.n,
            "paired": comparison.paired, "verdict": comparison.verdict}


def advantage(study: Study, candidate: str = "mixed", among: str = "regime", within=(),
              picked: str = PICKED) -> pd.DataFrame:
    """How ``candidate`` (a value of ``among``) fares against the best other value, per group
    of ``within`` and budget: both means, the difference (candidate − best other; fractions)
    seed by seed, its 95 % interval (``low``, ``high``), the number of ``seeds`` it rests on
    and the verdict (``ahead``, ``behind``, ``not distinguishable``, ``one seed``)."""
    within = _names(within)
    values = seed_values(study, within + [among], picked)
    others = [a for a in study.values(among) if a != candidate]
    rows = []
    for key in _within_keys(study, within):
        prefix = _as_tuple(within, key) if within else ()
        of = {a: values.get(prefix + (a,) if within else a, {}) for a in [candidate] + others}
        for budget in evaluate.BUDGETS:
            mine = _mean(of[candidate].get(budget))
            other_means = {a: _mean(of[a].get(budget)) for a in others}
            other_means = {a: m for a, m in other_means.items() if not math.isnan(m)}
            if math.isnan(mine) or not other_means:
                continue
            rival = max(other_means, key=other_means.get)
            comparison = compare(of[candidate][budget], of[rival][budget])
            rows.append({**dict(zip(within, prefix)), "budget": budget, candidate: mine, "best other": rival,
                         "best other accuracy": other_means[rival], **_row_words(comparison)})
    return pd.DataFrame(rows, columns=within + ["budget", candidate, "best other", "best other accuracy", "gap",
                                                "low", "high", "seeds", "paired", "verdict"])


def _interval(row) -> str:
    comparison = Comparison(row["gap"], row["low"], row["high"], int(row["seeds"]), bool(row["paired"]))
    return comparison.words()


def advantage_findings(study: Study, candidate: str = "mixed", among: str = "regime", within=(),
                       picked: str = PICKED) -> list[str]:
    """:func:`advantage` in words: per group of ``within``, where ``candidate`` is ahead of the
    best other value, not distinguishable from it or behind, with each interval."""
    within = _names(within)
    frame = advantage(study, candidate, among, within, picked)
    lines = []
    keys = frame.groupby(within, sort=False) if within else [((), frame)]
    for key, part in keys:
        name = _label(key) if within else "Overall"  # groupby on a list: keys are tuples
        parts = [f"at {row['budget']:.0%} against {row['best other']}: {_interval(row)}" for _, row in part.iterrows()]
        counts = part["verdict"].value_counts()
        headline = (f"{candidate} ({_PICKED_WORDS[picked]}) is ahead of the best other {among} at "
                    f"{counts.get('ahead', 0)}, not distinguishable from it at {counts.get('not distinguishable', 0)} "
                    f"and behind at {counts.get('behind', 0)} of {len(part)} budgets")
        if counts.get("one seed", 0):
            headline += f" (one seed, no interval, at {counts['one seed']})"
        lines.append(f"{name}: {headline}: " + "; ".join(parts) + ".")
    return lines


def against(study: Study, reference: Mapping[str, Any], budgets: Sequence[float] = evaluate.BUDGETS,
            picked: str = PICKED) -> pd.DataFrame:
    """Every group of the fields of ``reference`` (e.g. ``{"method": "sdn", "regime":
    "mixed"}``) against that one group, per budget where both have an operating point: both
    means, the difference (group − reference) seed by seed with its interval and verdict."""
    by = study.by_fields(list(reference))
    key = tuple(reference[f] for f in by)
    keys = [k if len(by) > 1 else (k,) for k in study.groups(by)]
    if key not in keys:
        raise ValueError(f"no runs with {dict(reference)}; this study's groups of {by}: "
                         + ", ".join(map(_label, keys)))
    values = {(k if len(by) > 1 else (k,)): v for k, v in seed_values(study, by, picked).items()}
    rows = []
    for group in keys:
        for budget in budgets if group != key else ():
            mine, theirs = _mean(values[group].get(budget)), _mean(values[key].get(budget))
            if math.isnan(mine) or math.isnan(theirs):
                continue
            comparison = compare(values[group][budget], values[key][budget])
            rows.append({**dict(zip(by, group)), "budget": budget, "accuracy": mine, "reference accuracy": theirs,
                         **_row_words(comparison)})
    return pd.DataFrame(rows, columns=by + ["budget", "accuracy", "reference accuracy", "gap", "low", "high",
                                            "seeds", "paired", "verdict"])


def best_versus(study: Study, among: str, candidates: Sequence, rivals: Sequence,
                budgets: Sequence[float] = evaluate.BUDGETS, picked: str = PICKED) -> pd.DataFrame:
    """Per budget where both sides have an operating point: the best of ``candidates`` (values
    of ``among``) against the best of ``rivals`` (by mean), their means and the difference seed
    by seed with its interval and verdict. E.g. the pretraining splits between 0 and N epochs
    against the two ends."""
    values = seed_values(study, among, picked)
    rows = []
    for budget in budgets:
        sides = [{v: _mean(values[v].get(budget)) for v in side if v in values} for side in (candidates, rivals)]
        sides = [{v: m for v, m in side.items() if not math.isnan(m)} for side in sides]
        if not all(sides):
            continue
        best, rival = (max(side, key=side.get) for side in sides)
        comparison = compare(values[best][budget], values[rival][budget])
        rows.append({"budget": budget, "best": best, "accuracy": sides[0][best], "best rival": rival,
                     "rival accuracy": sides[1][rival], **_row_words(comparison)})
    return pd.DataFrame(rows, columns=["budget", "best", "accuracy", "best rival", "rival accuracy", "gap", "low",
                                       "high", "seeds", "paired", "verdict"])


def against_findings(study: Study, reference: Mapping[str, Any], budgets: Sequence[float] = evaluate.BUDGETS,
                     picked: str = PICKED) -> list[str]:
    """:func:`against` in words: a line per group, its verdict and interval at each budget."""
    by = list(reference)
    frame = against(study, reference, budgets, picked)
    name = _label(tuple(reference[f] for f in by))
    lines = []
    rows = (row for _, row in frame.iterrows())
    for values, part in itertools.groupby(rows, key=lambda row: tuple(row[f] for f in by)):
        parts = [f"at {row['budget']:.0%} {_interval(row)}" for row in part]
        lines.append(f"{_label(values)} against {name} ({_PICKED_WORDS[picked]}): " + "; ".join(parts) + ".")
    return lines


def paper_claim(study: Study, within=(), picked: str = PICKED) -> str:
    """The study's central claim (STUDY.md §6), checked here: mixed is best or near best at
    every budget, i.e. never behind the best other regime (the interval of mixed − best other
    not wholly below zero, :func:`advantage`), in every group of ``within``; and where it is
    ahead (the interval wholly above zero)."""
    frame = advantage(study, "mixed", "regime", within, picked)
    judged = frame[frame["verdict"] != "one seed"]
    held = bool(len(judged)) and bool((judged["verdict"] != "behind").all())
    where = ("budgets and groups where mixed and another regime have a point" if _names(within)
             else "budgets where every regime has a point")
    unjudged = len(frame) - len(judged)
    seeds = sorted(set(judged["seeds"].astype(int))) if len(judged) else []
    n = f"n = {seeds[0]}" if len(seeds) == 1 else f"n = {', '.join(map(str, seeds))}" if seeds else "no interval"
    return ("Paper's claim 'mixed is best or near best at every budget' (not behind the best other regime: "
            f"95 % interval over seeds, {_PICKED_WORDS[picked]}, {n}): "
            f"{'holds' if held else 'does not hold' if len(judged) else 'cannot be judged'} here "
            f"(not behind at {int((judged['verdict'] != 'behind').sum())} of {len(judged)} {where}; "
            f"ahead at {int((judged['verdict'] == 'ahead').sum())})"
            + (f"; {unjudged} one-seed comparisons without an interval" if unjudged else "") + ".")


def regime_findings(study: Study, picked: str = PICKED) -> list[str]:
    """The regime comparison's statements (one method): per budget the ranking, the paper's
    claim that mixed is best or near best (among the three regimes), mixed against the
    equal-compute controls where the study has them, and the early-exit claim."""
    lines = ranking(study, "regime", picked=picked)
    regimes = study.regimes
    main = [r for r in regimes if r in REGIMES]
    controls = [r for r in regimes if r not in REGIMES]
    if "mixed" in main and len(main) > 1:
        lines.append(paper_claim(study.select(regime=main) if controls else study, picked=picked))
    if "mixed" in main and controls:
        lines += equal_compute_findings(study, controls, picked)
    if {"disjoint", "mixed", "joint"} <= set(regimes):
        lines.append(_claim_early_exits(study))
    return lines


def equal_compute_findings(study: Study, controls: Sequence[str], picked: str = PICKED) -> list[str]:
    """Mixed against each equal-compute control (values of ``regime``), at each budget, with
    the interval of mixed − control; and a headline counting the verdicts."""
    values = seed_values(study, "regime", picked)
    lines, verdicts = [], []
    for control in controls:
        parts = []
        for budget in evaluate.BUDGETS:
            mine, theirs = values["mixed"].get(budget), values[control].get(budget)
            if math.isnan(_mean(mine)) or math.isnan(_mean(theirs)):
                continue
            comparison = compare(mine, theirs)
            verdicts.append(comparison.verdict)
            parts.append(f"at {budget:.0%} {comparison.words()}")
        lines.append(f"Mixed against {control} (equal compute, {_PICKED_WORDS[picked]}): " + "; ".join(parts) + ".")
    counts = {v: verdicts.count(v) for v in ("ahead", "not distinguishable", "behind", "one seed")}
    headline = (f"Under equal compute (every backbone trained as many epochs as mixed's), mixed is ahead in "
                f"{counts['ahead']}, not distinguishable in {counts['not distinguishable']} and behind in "
                f"{counts['behind']} of {len(verdicts)} comparisons with the controls"
                + (f" ({counts['one seed']} with one seed, no interval)" if counts["one seed"] else "") + ".")
    return [headline] + lines


def _claim_early_exits(study: Study) -> str:
    accuracy = study.per_exit_accuracy().groupby(["regime", "exit"])["accuracy"].mean()
    last = study.num_exits - 1
    first = {r: accuracy[(r, 0)] for r in ("disjoint", "joint", "mixed")}
    weakest_first = min(first, key=first.get)
    return (f"First exit: disjoint {100 * first['disjoint']:.2f} %, joint "
            f"{100 * first['joint']:.2f} %, mixed {100 * first['mixed']:.2f} % "
            f"(the paper expects disjoint's early exits to be the weakest: "
            f"{'so here' if weakest_first == 'disjoint' else 'not so here, ' + weakest_first + ' is'}). "
            "Final exit: " + ", ".join(f"{r} {100 * accuracy[(r, last)]:.2f} %" for r in study.regimes) + ".")


def order(study: Study, budgets: Sequence[float] = evaluate.BUDGETS, among: str = "regime",
          picked: str = PICKED) -> dict[float, str]:
    """At each budget, the values of ``among`` from the most accurate down (``"mixed > joint >
    disjoint"``), or ``"no point"`` where none has an operating point within the budget."""
    values = seed_values(study, among, picked)
    return {b: " > ".join(map(str, lead(values, b)[0])) or "no point" for b in budgets}


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


__all__ = ["PICKED", "advantage", "advantage_findings", "against", "against_findings", "best_versus",
           "equal_compute_findings", "lead", "order", "paper_claim", "ranking", "regime_findings", "seed_values"]
