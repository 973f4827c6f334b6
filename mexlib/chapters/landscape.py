"""Chapter 03 · Loss landscapes: do the regimes end in one basin or in several?
(``notebooks/03_landscape``).

On the stored runs of the regimes chapter and two controls, :func:`run` measures

1. **the loss on a plane** around each solution of the first seed, along two random
   filter-normalised directions (Li et al. 2018), for the total multi-exit loss and each exit's
   own loss, and how wide each basin is (the share of the plane where the loss stays below
   twice its value at the solution);
2. **linear mode connectivity**: every exit's loss and accuracy along the straight line between
   two solutions, and its barrier (Frankle et al. 2020), for every pair of regimes of a seed,
   each regime against itself from the next seed (the reference for unrelated solutions), and
   the controls, over every seed with a 95 % interval.

**The controls.** Disjoint and mixed runs of one seed start from one phase-1 backbone *and* from
identical head initialisations, so a flat path between them may only say that fine-tuning from
one checkpoint stays near it. Two controls ask how much: ``continued``, the phase-1 backbone
trained alone for phase 2's epochs (a warm restart, as mixed has) and then given heads as
disjoint is, and mixed with another initialisation of its heads (``head_init=1``). Barriers are
compared paired by seed (:func:`mexlib.stats.compare`); no fixed cut-off decides "a barrier".

Every perturbed or interpolated model gets its BatchNorm statistics recomputed first. Planes and
paths are kept in the run store (:meth:`mexlib.store.RunStore.cached`), keyed by their inputs and
this module's code.
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from .. import stats
from ..analysis import SCOPES, barrier, fixed_sample, interpolate, joined, loss_surface, run_data
from ..config import profile_seeds, profile_settings
from ..registry import check
from ..store import RunStore
from ..study import run_study
from .base import Result, records_stale_runs

NOTEBOOK = "03_landscape"
TITLE = "Loss landscapes: do the regimes end in one basin or in several?"
TABLES = ("landscape_basins", "landscape_barriers", "landscape_barrier_intervals", "landscape_findings")
#: The controls' labels: the phase-1 backbone trained on alone, and mixed from other heads.
CONTINUED, OTHER_HEADS = "continued", "mixed, other heads"
#: The kinds of path, in the tables' order.
KINDS = ("regimes", "control", "seed to seed")


@records_stale_runs
def run(profile: str = "cpu", regimes=("disjoint", "joint", "mixed"), seeds=None, controls: bool = True,
        steps: int | None = None, span: float = 1.0, scope: str = "all", direction_seed: int = 0,
        eval_size: int | None = None, bn_size: int | None = None, path_steps: int | None = None,
        device: str = "auto", executor: str = "inline", workers: int = 2, **overrides) -> Result:
    """Planes (``steps`` × ``steps`` over ±``span``, moving ``scope``'s weights) around the
    first seed's runs of ``regimes``, and the paths (``path_steps`` points) between the runs of
    every seed of ``seeds`` (None: the profile's), the controls' too unless ``controls`` is
    False; ``eval_size`` test images with BatchNorm recomputed on ``bn_size`` training images;
    the sizes left at None are the profile's."""
    check(scope, SCOPES, "scope")
    sizes = profile_settings(profile)
    steps, eval_size = steps or sizes.plane_steps, eval_size or sizes.eval_size
    bn_size, path_steps = bn_size or sizes.bn_size, path_steps or sizes.path_steps
    regimes, seeds = list(regimes), list(profile_seeds(profile, seeds))
    controls = controls and {"disjoint", "mixed"} <= set(regimes)
    store = RunStore(device=device, progress=sizes.progress)
    how = dict(store=store, progress=sizes.progress, executor=executor, workers=workers)
    labels = regimes + ([CONTINUED] if controls else [])
    main = run_study(profile, {"regime": labels}, seeds=seeds, **how, **overrides)
    studies = {r: (r, main) for r in labels}
    if controls:
        studies[OTHER_HEADS] = ("mixed", run_study(profile, {"regime": ["mixed"]}, seeds=seeds, head_init=1,
                                                   **how, **overrides))
    stored = {(label, s): study.run(s, regime=regime).run for label, (regime, study) in studies.items() for s in seeds}
    seed = seeds[0]
    config = main.run(seed, regime=regimes[0]).config
    data = run_data(store, config)
    batch = joined(fixed_sample(data, "test", eval_size, seed=0))
    bn_batches = fixed_sample(data, "train", bn_size, seed=1)
    models = {}

    def model(label, s):
        if (label, s) not in models:
            models[(label, s)] = stored[(label, s)].model().to(store.device)
        return models[(label, s)]

    num_exits = len(config.exit_after_blocks) + 1
    exits = [f"exit {k}" for k in range(num_exits)]
    started = time.perf_counter()

    def plane(regime):
        inputs = dict(run=stored[(regime, seed)].key, steps=steps, span=span, scope=scope,
                      seed=direction_seed, eval_size=eval_size, bn_size=bn_size)
        return store.cached("plane", inputs, lambda: loss_surface(model(regime, seed), batch, bn_batches, steps,
                                                                  span, scope, direction_seed))

    def path(a, b):
        inputs = dict(runs=[stored[a].key, stored[b].key], steps=path_steps, eval_size=eval_size, bn_size=bn_size)
        return store.cached("path", inputs, lambda: interpolate(model(*a), model(*b), batch, bn_batches, path_steps))

    planes = {r: plane(r) for r in regimes}
    rows = ["total"] + exits
    basins = basin_table(planes, rows)
    wide = basins.pivot(index="loss", columns="regime", values="share_below_twice").loc[rows, regimes]
    paths = {}  # (name, kind, seed) -> the path's frame
    for s in seeds:
        for name, kind, a, b in path_plan(regimes, seeds, s, controls):
            paths[(name, kind, s)] = path(a, b)
    barriers = barrier_table(paths, exits)
    intervals = interval_table(barriers)
    result = Result(profile, "landscape_findings", FIGURES, data=dict(
        config=config, seeds=seeds, num_exits=num_exits, regimes=regimes, rows=rows, planes=planes,
        basins=basins, wide=wide, paths={k[0]: v for k, v in paths.items() if k[2] == seed}, barriers=barriers,
        intervals=intervals, at_solution=basins.pivot(index="loss", columns="regime", values="at_solution")
        .loc[rows, regimes], steps=steps, span=span, scope=scope, eval_size=len(batch[1]), bn_size=bn_size))
    result.add("landscape_basins", basins.set_index(["regime", "loss"]))
    result.add("landscape_barriers", barriers.set_index(["path", "kind", "seed"]))
    result.add("landscape_barrier_intervals", intervals)
    result.findings.append(("The loss around each solution", _basin_findings(wide, regimes, exits, span, scope)))
    result.findings.append(("Linear paths between solutions", path_findings(barriers, intervals, regimes)))
    result.data["seconds"] = time.perf_counter() - started
    return result


def path_plan(regimes: list[str], seeds: list[int], seed: int, controls: bool) -> list[tuple]:
    """The paths measured for ``seed``: ``(name, kind, (label, seed), (label, seed))`` for every
    pair of regimes, the controls and each regime against itself from the next seed (the
    seeds taken in a circle; with two seeds, one path per regime)."""
    plan = [(f"{a} – {b}", "regimes", (a, seed), (b, seed)) for i, a in enumerate(regimes) for b in regimes[i + 1:]]
    if controls:
        plan += [(f"disjoint – {CONTINUED}", "control", ("disjoint", seed), (CONTINUED, seed)),
                 (f"mixed – {OTHER_HEADS}", "control", ("mixed", seed), (OTHER_HEADS, seed)),
                 (f"disjoint – {OTHER_HEADS}", "control", ("disjoint", seed), (OTHER_HEADS, seed))]
    position = seeds.index(seed)
    if len(seeds) > 1 and (len(seeds) > 2 or position == 0):
        following = seeds[(position + 1) % len(seeds)]
        plan += [(f"{r}, seed to seed", "seed to seed", (r, seed), (r, following)) for r in regimes]
    return plan


def basin_table(planes: dict[str, pd.DataFrame], rows: list[str]) -> pd.DataFrame:
    """For each regime and loss: the loss at the solution and the share of the plane where the
    loss stays below twice that value."""
    table = []
    for regime, surface in planes.items():
        centre = surface.loc[(surface["a"].abs() + surface["b"].abs()).idxmin()]
        for row in rows:
            table.append(dict(regime=regime, loss=row, at_solution=centre[row],
                              share_below_twice=float((surface[row] < 2 * centre[row]).mean())))
    return pd.DataFrame(table)


def barrier_table(paths: dict[tuple, pd.DataFrame], exits: list[str]) -> pd.DataFrame:
    """A row per path and seed (a seed-to-seed path under its first seed): its barrier for the
    total loss and each exit's, and its ends' mean total loss."""
    rows = [dict(path=name, kind=kind, seed=seed, total=barrier(frame),
                 **{e: barrier(frame, f"loss {k}") for k, e in enumerate(exits)},
                 **{"ends (total)": (frame["total"].iloc[0] + frame["total"].iloc[-1]) / 2})
            for (name, kind, seed), frame in paths.items()]
    return pd.DataFrame(rows)


def interval_table(barriers: pd.DataFrame) -> pd.DataFrame:
    """Per path: the seeds, the mean total-loss barrier with its 95 % t interval, and the mean
    barrier as a share of its ends' loss."""
    rows = []
    for (name, kind), group in barriers.groupby(["path", "kind"], sort=False):
        mean, low, high = stats.t_interval(group["total"])
        rows.append(dict(path=name, kind=kind, seeds=len(group), barrier=mean, low=low, high=high,
                         relative=mean / group["ends (total)"].mean()))
    return pd.DataFrame(rows).set_index("path")


def _widest(shares: pd.Series) -> str:
    """The regime with the widest basin, or every regime tied at the widest (the shares count grid
    points, so equal shares are common)."""
    widest = [r for r, v in shares.items() if v == shares.max()]
    return f"widest: {widest[0]}." if len(widest) == 1 else f"widest: {' and '.join(widest)}, tied."


def _basin_findings(wide: pd.DataFrame, regimes: list[str], exits: list[str], span: float, scope: str) -> list[str]:
    total = wide.loc["total"]
    lines = ["Share of the plane where the total loss stays below twice its value at the solution: "
             + ", ".join(f"{r} {total[r]:.0%}" for r in regimes) + f" (plane ±{span}, {scope} weights); "
             + ("the same for every regime." if total.nunique() == 1 else _widest(total[regimes]))]
    early, late = exits[0], exits[-1]
    lines.append(f"The first exit's basin ({early}) is " + ", ".join(f"{r} {wide.loc[early, r]:.0%}" for r in regimes)
                 + f"; the final exit's ({late}) " + ", ".join(f"{r} {wide.loc[late, r]:.0%}" for r in regimes) + ".")
    return lines


def per_seed(barriers: pd.DataFrame, name: str) -> dict[int, float]:
    """``{seed: total-loss barrier}`` of path ``name``."""
    rows = barriers[barriers["path"] == name]
    return dict(zip(rows["seed"], rows["total"]))


def _higher(a: str, b: str, barriers: pd.DataFrame) -> tuple[stats.Comparison, str]:
    comparison = stats.compare(per_seed(barriers, a), per_seed(barriers, b))
    return comparison, f"{a} against {b}: " + comparison.words(ahead="higher", behind="lower", scale=1, unit="",
                                                               digits=3)


def path_findings(barriers: pd.DataFrame, intervals: pd.DataFrame, regimes: list[str]) -> list[str]:
    """Each path's barrier with its interval, the comparisons the paper's claim rests on (paired
    by seed), and what the controls say of them."""
    lines = []
    for name, row in intervals.iterrows():
        span = "" if np.isnan(row["low"]) else f", 95 % CI {row['low']:.3f} to {row['high']:.3f}"
        lines.append(f"{name}: barrier {row['barrier']:.3f}{span} (n = {row['seeds']}), "
                     f"{row['relative']:.0%} of its ends' loss")
    if not {"disjoint", "joint", "mixed"} <= set(regimes):
        return lines
    joint_paths = [n for n in intervals.index if intervals.loc[n, "kind"] == "regimes" and "joint" in n.split(" – ")]
    apart = []
    for name in joint_paths:
        comparison, text = _higher(name, "disjoint – mixed", barriers)
        apart.append(comparison.verdict == "ahead")
        lines.append(text)
    closer = all(apart)
    lines.append("The paper's claim (disjoint and mixed share a basin, joint lies in another): "
                 + ("the path between disjoint and mixed is lower than every path from joint"
                    if closer else "the path between disjoint and mixed is not lower than every path from "
                    "joint") + " (paired by seed, 95 % intervals).")
    if f"disjoint – {CONTINUED}" in intervals.index:
        comparison, text = _higher("disjoint – mixed", f"disjoint – {CONTINUED}", barriers)
        lines.append("Control, fine-tuning from the phase-1 weights: " + text + ". "
                     + {"ahead": "Mixed moves further from disjoint than the backbone trained on alone does: "
                                 "more than the shared start explains.",
                        "behind": "Mixed stays closer to disjoint than the backbone trained on alone does.",
                        }.get(comparison.verdict, "The backbone trained on alone from the same weights ends as "
                                                  "close to disjoint: the shared basin needs nothing more than "
                                                  "the shared start.")
                     )
        comparison, text = _higher(f"disjoint – {OTHER_HEADS}", "disjoint – mixed", barriers)
        lines.append("Control, the heads' initialisation: " + text + ". "
                     + ("Identical head initialisations account for part of the flat path."
                        if comparison.verdict == "ahead" else
                        "Other heads raise the barrier no more than the seeds' spread shows."
                        if comparison.verdict != "behind" else "Other heads give a lower barrier."))
    return lines


def draw_planes(result: Result):
    """One plane per regime (columns) and loss (rows: the total, then each exit), one colour
    scale per row; the cross marks the trained model."""
    planes, rows, regimes = result["planes"], result["rows"], result["regimes"]
    fig, axes = plt.subplots(len(rows), len(regimes), figsize=(3.2 * len(regimes), 2.7 * len(rows)),
                             squeeze=False, sharex=True, sharey=True)
    for i, row in enumerate(rows):
        values = pd.concat([planes[r][row] for r in regimes])
        norm = LogNorm(vmin=max(values.min(), 1e-3), vmax=values.max())
        levels = np.geomspace(norm.vmin, norm.vmax, 16)
        for j, regime in enumerate(regimes):
            grid = planes[regime].pivot(index="b", columns="a", values=row)
            ax = axes[i, j]
            filled = ax.contourf(grid.columns, grid.index, grid.to_numpy().clip(norm.vmin), levels=levels, norm=norm,
                                 cmap="viridis")
            ax.plot(0, 0, "w+", markersize=8)
            ax.set_title(f"{regime}: {row}" if i else f"{regime}: total loss", fontsize=9)
            ax.set_aspect("equal")
        fig.colorbar(filled, ax=axes[i].tolist(), shrink=0.9, label="loss (log scale)", ticks=levels[::3],
                     format="%.2f")
    return fig


def draw_paths(result: Result, columns: int = 3):
    """Every exit's loss (upper panel) and accuracy (lower panel) along each path of the first
    seed, ``columns`` paths a row; dashed: the total loss."""
    paths, num_exits = result["paths"], result["num_exits"]
    rows = -(-len(paths) // columns)
    columns = min(columns, len(paths))
    fig, axes = plt.subplots(2 * rows, columns, figsize=(3.1 * columns, 4.4 * rows), squeeze=False, sharex=True,
                             layout="constrained")
    cmap = plt.get_cmap("viridis")
    for j, (name, frame) in enumerate(paths.items()):
        loss, accuracy = axes[2 * (j // columns), j % columns], axes[2 * (j // columns) + 1, j % columns]
        for k in range(num_exits):
            color = cmap(k / max(num_exits - 1, 1))
            loss.plot(frame["alpha"], frame[f"loss {k}"], color=color, label=f"exit {k}")
            accuracy.plot(frame["alpha"], 100 * frame[f"accuracy {k}"], color=color)
        loss.plot(frame["alpha"], frame["total"], "k--", label="total")
        loss.set_title(name, fontsize=9)
        if j >= len(paths) - columns:  # the lowest panel of its column
            accuracy.set_xlabel("α")
        if j % columns == 0:
            loss.set_ylabel("loss")
            accuracy.set_ylabel("accuracy (%)")
    for j in range(len(paths), rows * columns):  # the last row's empty places
        axes[2 * (j // columns), j % columns].set_visible(False)
        axes[2 * (j // columns) + 1, j % columns].set_visible(False)
    axes[0, columns - 1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Paths between the solutions of seed {result['seeds'][0]}", fontsize=10)
    return fig


def draw_barriers(result: Result):
    """Each path's total-loss barrier: a dot per seed, the mean with its 95 % interval, a
    colour per kind of path (regimes, controls, seed to seed)."""
    barriers, intervals = result["barriers"], result["intervals"]
    colours = dict(zip(KINDS, ("#4C72B0", "#C44E52", "#8C8C8C")))
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(intervals) + 1.2), layout="constrained")
    for y, (name, row) in enumerate(intervals.iterrows()):
        colour = colours[row["kind"]]
        values = barriers.loc[barriers["path"] == name, "total"]
        ax.plot(values, [y] * len(values), "o", color=colour, alpha=0.45, ms=5)
        error = None if np.isnan(row["low"]) else [[row["barrier"] - row["low"]], [row["high"] - row["barrier"]]]
        ax.errorbar(row["barrier"], y, xerr=error, fmt="D", color=colour, ms=6, capsize=3)
    ax.set_yticks(range(len(intervals)), intervals.index)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("total-loss barrier (dots: seeds; diamonds: mean, 95 % CI)")
    for kind, colour in colours.items():
        if (intervals["kind"] == kind).any():
            ax.plot([], [], "D", color=colour, label=kind)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Barriers over seeds {', '.join(map(str, result['seeds']))}", fontsize=10)
    return fig


FIGURES = {"landscape_planes": draw_planes, "landscape_paths": draw_paths, "landscape_barriers": draw_barriers}

__all__ = ["CONTINUED", "FIGURES", "KINDS", "NOTEBOOK", "OTHER_HEADS", "TABLES", "TITLE", "barrier_table",
           "basin_table", "interval_table", "path_findings", "path_plan", "per_seed", "run"]
