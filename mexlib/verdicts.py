"""Verdicts: the study's findings, computed from its tables and judged against the seeds' spread.

Every comparison here is one rule (:func:`judge`): a gap in accuracy counts only when it exceeds
the spread of the groups compared (the largest standard deviation over seeds among them); with
one seed there is no spread, and a spread given for one-seed groups (``single_seed_spread``, e.g.
that of a related configuration with several seeds) stands in for it, or the verdict is
``one seed``. On top of it:

- :func:`ranking`: the values of a field ranked at each budget, and whether the leader is clear;
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
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from . import evaluate
from .study import Study


def ranking(study: Study, among: str = "regime", within=(), budgets: Sequence[float] = evaluate.BUDGETS,
            single_seed_spread: float | None = None) -> list[str]:
    """For each group of ``within`` and each budget: the values of ``among`` ranked by mean
    accuracy, the leader's margin, and whether it exceeds the seeds' spread (with one seed,
    ``single_seed_spread`` stands in for it, as in :func:`advantage`)."""
    within = _names(within)
    table = study.budget_table(within + [among], reference=False)
    lines = []
    for key in _within_keys(study, within):
        prefix = f"{_label(_as_tuple(within, key))}: " if within else ""
        for budget in budgets:
            means = {a: _cell(table, key, a, budget, "mean", within) for a in study.values(among)}
            stds = {a: _cell(table, key, a, budget, "std", within) for a in study.values(among)}
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

def advantage(study: Study, candidate: str = "mixed", among: str = "regime", within=(),
              single_seed_spread: float | None = None) -> pd.DataFrame:
    """How ``candidate`` (a value of ``among``) fares against the best other value, per
    group of ``within`` and budget: both means, the gap in accuracy (candidate − best
    other; fractions), the largest std over seeds among them, and a verdict: ``best``
    (ahead by more than that spread), ``tied`` (within it) or ``behind``.

    Groups trained with one seed have no std: ``single_seed_spread`` (a fraction, e.g. the
    seeds' spread of a related configuration) stands in for it; without one, their verdict
    is ``one seed``."""
    within = _names(within)
    table = study.budget_table(within + [among], reference=False)
    others = [a for a in study.values(among) if a != candidate]
    rows = []
    for key in _within_keys(study, within):
        for budget in evaluate.BUDGETS:
            mine = _cell(table, key, candidate, budget, "mean", within)
            other_means = {a: _cell(table, key, a, budget, "mean", within) for a in others}
            other_means = {a: m for a, m in other_means.items() if not np.isnan(m)}
            if np.isnan(mine) or not other_means:
                continue
            rival = max(other_means, key=other_means.get)
            stds = [_cell(table, key, a, budget, "std", within) for a in [candidate] + others]
            gap = mine - other_means[rival]
            spread, verdict = judge(gap, stds, single_seed_spread, ahead="best")
            rows.append({**dict(zip(within, _as_tuple(within, key))), "budget": budget,
                         candidate: mine, "best other": rival, "best other accuracy": other_means[rival],
                         "gap": gap, "spread": spread, "verdict": verdict})
    return pd.DataFrame(rows)

def advantage_findings(study: Study, candidate: str = "mixed", among: str = "regime", within=(),
                       single_seed_spread: float | None = None) -> list[str]:
    """:func:`advantage` in words: per group of ``within``, where ``candidate`` is best,
    tied or behind, and by how many points."""
    within = _names(within)
    frame = advantage(study, candidate, among, within, single_seed_spread)
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

def against(study: Study, reference: Mapping[str, Any], budgets: Sequence[float] = evaluate.BUDGETS,
            single_seed_spread: float | None = None) -> pd.DataFrame:
    """Every group of the fields of ``reference`` (e.g. ``{"method": "sdn", "regime":
    "mixed"}``) against that one group, per budget where both have an operating point:
    both means, the gap (group − reference; fractions), the larger of their two stds over
    seeds and a verdict: ``ahead`` (by more than that spread), ``tied`` (within it) or
    ``behind``. One-seed groups have no std: ``single_seed_spread`` stands in, as in
    :func:`advantage`; without it their verdict is ``one seed``."""
    by = study.by_fields(list(reference))
    key = tuple(reference[f] for f in by)
    keys = [k if len(by) > 1 else (k,) for k in study.groups(by)]
    if key not in keys:
        raise ValueError(f"no runs with {dict(reference)}; this study's groups of {by}: "
                         + ", ".join(map(_label, keys)))
    table = study.budget_table(by, reference=False)  # a row per group, in the order of keys
    ref = table.iloc[keys.index(key)]
    rows = []
    for values, (_, row) in zip(keys, table.iterrows()):
        for budget in budgets if values != key else ():
            mine, theirs = row[(budget, "mean")], ref[(budget, "mean")]
            if np.isnan(mine) or np.isnan(theirs):
                continue
            gap = mine - theirs
            spread, verdict = judge(gap, [row[(budget, "std")], ref[(budget, "std")]], single_seed_spread)
            rows.append({**dict(zip(by, values)), "budget": budget, "accuracy": mine,
                         "reference accuracy": theirs, "gap": gap, "spread": spread, "verdict": verdict})
    return pd.DataFrame(rows, columns=by + ["budget", "accuracy", "reference accuracy", "gap", "spread",
                                            "verdict"])

def best_versus(study: Study, among: str, candidates: Sequence, rivals: Sequence,
                budgets: Sequence[float] = evaluate.BUDGETS,
                single_seed_spread: float | None = None) -> pd.DataFrame:
    """Per budget where both sides have an operating point: the best of ``candidates`` (values
    of ``among``) against the best of ``rivals``, their means, the gap, the larger of their two
    stds over seeds and a verdict as in :func:`advantage` (``best``, ``tied``, ``behind`` or
    ``one seed``). E.g. the pretraining splits between 0 and N epochs against the two ends."""
    table = study.budget_table(among, reference=False)
    rows = []
    for budget in budgets:
        sides = [table.loc[[v for v in values if v in table.index], (budget, "mean")].dropna()
                 for values in (candidates, rivals)]
        if not all(len(side) for side in sides):
            continue
        best, rival = (side.idxmax() for side in sides)
        gap = sides[0][best] - sides[1][rival]
        spread, verdict = judge(gap, table.loc[[best, rival], (budget, "std")].tolist(), single_seed_spread,
                                 ahead="best")
        rows.append({"budget": budget, "best": best, "accuracy": sides[0][best], "best rival": rival,
                     "rival accuracy": sides[1][rival], "gap": gap, "spread": spread, "verdict": verdict})
    return pd.DataFrame(rows, columns=["budget", "best", "accuracy", "best rival", "rival accuracy", "gap",
                                       "spread", "verdict"])

def against_findings(study: Study, reference: Mapping[str, Any], budgets: Sequence[float] = evaluate.BUDGETS,
                     single_seed_spread: float | None = None) -> list[str]:
    """:func:`against` in words: a line per group, its verdict and gap at each budget."""
    by = list(reference)
    frame = against(study, reference, budgets, single_seed_spread)
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

def paper_claim(study: Study, within=(), single_seed_spread: float | None = None) -> str:
    """The study's central claim (STUDY.md §6), checked here: mixed is best or near best (not
    behind the best other regime by more than the seeds' spread, :func:`advantage`) at every
    budget where it and another regime have an operating point, in every group of ``within``."""
    frame = advantage(study, "mixed", "regime", within, single_seed_spread)
    judged = frame[frame["verdict"] != "one seed"]
    held = bool(len(judged)) and bool((judged["verdict"] != "behind").all())
    where = ("budgets and groups where mixed and another regime have a point" if _names(within)
             else "budgets where every regime has a point")
    unjudged = len(frame) - len(judged)
    return ("Paper's claim 'mixed is best or near best (within the seeds' spread) at every budget': "
            f"{'holds' if held else 'does not hold' if len(judged) else 'cannot be judged'} here "
            f"({int((judged['verdict'] != 'behind').sum())} of {len(judged)} {where}"
            + (f"; {unjudged} one-seed comparisons without a spread to judge by" if unjudged else "") + ").")

def regime_findings(study: Study) -> list[str]:
    """The regime comparison's statements (one method): per budget the ranking, the
    paper's claim that mixed is best or near best, and the early-exit claim."""
    lines = ranking(study, "regime")
    regimes = study.regimes
    if "mixed" in regimes and len(regimes) > 1:
        lines.append(paper_claim(study))
    if {"disjoint", "mixed", "joint"} <= set(regimes):
        lines.append(_claim_early_exits(study))
    return lines

def _claim_early_exits(study: Study) -> str:
    accuracy = study.per_exit_accuracy().groupby(["regime", "exit"])["accuracy"].mean()
    last = study.num_exits - 1
    first = {r: accuracy[(r, 0)] for r in ("disjoint", "joint", "mixed")}
    final = {r: accuracy[(r, last)] for r in ("disjoint", "joint", "mixed")}
    weakest_first = min(first, key=first.get)
    return (f"First exit: disjoint {100 * first['disjoint']:.2f} %, joint "
            f"{100 * first['joint']:.2f} %, mixed {100 * first['mixed']:.2f} % "
            f"(the paper expects disjoint's early exits to be the weakest: "
            f"{'so here' if weakest_first == 'disjoint' else 'not so here, ' + weakest_first + ' is'}). "
            f"Final exit: disjoint {100 * final['disjoint']:.2f} %, joint {100 * final['joint']:.2f} %, "
            f"mixed {100 * final['mixed']:.2f} %.")

def judge(gap: float, stds: Sequence[float], single_seed_spread: float | None,
           ahead: str = "ahead") -> tuple[float, str]:
    """The spread a gap is judged by (the largest std over seeds among the groups compared; with
    one seed each, ``single_seed_spread``, or NaN without it) and the verdict: ``ahead`` (the
    word given) beyond it, ``behind`` below minus it, ``tied`` within, ``one seed`` unjudged."""
    spread = np.nanmax(stds) if not all(np.isnan(stds)) else single_seed_spread
    spread = np.nan if spread is None else float(spread)
    verdict = ("one seed" if np.isnan(spread) else ahead if gap > spread
               else "behind" if gap < -spread else "tied")
    return spread, verdict


def order(study: Study, budgets: Sequence[float] = evaluate.BUDGETS, among: str = "regime") -> dict[float, str]:
    """At each budget, the values of ``among`` from the most accurate down (``"mixed > joint >
    disjoint"``), or ``"no point"`` where none has an operating point within the budget."""
    table = study.budget_table(among, reference=False)
    return {b: " > ".join(map(str, table[(b, "mean")].dropna().sort_values(ascending=False).index)) or "no point"
            for b in budgets}


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


__all__ = ["advantage", "advantage_findings", "against", "against_findings", "best_versus", "judge", "order",
           "paper_claim", "ranking", "regime_findings"]
