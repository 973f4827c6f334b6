"""Chapter 03 · Loss landscapes: do the regimes end in one basin or in several?
(``notebooks/03_landscape``).

On the stored runs of the regimes chapter (nothing is trained here), :func:`run` measures

1. **the loss on a plane** around each solution, along two random filter-normalised directions
   (Li et al. 2018), for the total multi-exit loss and each exit's own loss, and how wide each
   basin is (the share of the plane where the loss stays below twice its value at the solution);
2. **linear mode connectivity**: every exit's loss and accuracy along the straight line between
   two solutions, and its barrier (Frankle et al. 2020), for every pair of regimes and, as the
   reference, each regime against itself from another seed.

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


from ..analysis import SCOPES, barrier, fixed_sample, interpolate, joined, loss_surface, run_data
from ..config import profile_settings
from ..registry import check
from ..store import RunStore
from ..study import run_study
from .base import Result

NOTEBOOK = "03_landscape"
TITLE = "Loss landscapes: do the regimes end in one basin or in several?"
TABLES = ("landscape_basins", "landscape_barriers", "landscape_findings")
#: A path whose total-loss barrier is below this share of its ends' mean loss has no barrier.
FLAT = 0.1


def run(profile: str = "cpu", regimes=("disjoint", "joint", "mixed"), seed: int = 0, reference_seed: int = 1,
        steps: int | None = None, span: float = 1.0, scope: str = "all", direction_seed: int = 0,
        eval_size: int | None = None, bn_size: int | None = None, path_steps: int | None = None,
        device: str = "auto", executor: str = "inline", workers: int = 2, **overrides) -> Result:
    """Planes (``steps`` × ``steps`` over ±``span``, moving ``scope``'s weights) around the
    ``seed`` runs of ``regimes`` and the paths between them (``path_steps`` points), on
    ``eval_size`` test images with BatchNorm recomputed on ``bn_size`` training images; the
    sizes left at None are the profile's."""
    check(scope, SCOPES, "scope")
    sizes = profile_settings(profile)
    steps, eval_size = steps or sizes.plane_steps, eval_size or sizes.eval_size
    bn_size, path_steps = bn_size or sizes.bn_size, path_steps or sizes.path_steps
    regimes = list(regimes)
    store = RunStore(device=device, progress=sizes.progress)
    runs = run_study(profile, {"regime": regimes}, seeds=sorted({seed, reference_seed}), store=store,
                     progress=sizes.progress, executor=executor, workers=workers, **overrides)
    config = runs.run(seed, regime=regimes[0]).config
    data = run_data(store, config)
    batch = joined(fixed_sample(data, "test", eval_size, seed=0))
    bn_batches = fixed_sample(data, "train", bn_size, seed=1)
    models = {(r, s): runs.run(s, regime=r).run.model().to(store.device) for r in regimes for s in runs.seeds}
    exits = [f"exit {k}" for k in range(runs.num_exits)]
    started = time.perf_counter()

    def plane(regime):
        inputs = dict(run=runs.run(seed, regime=regime).run.key, steps=steps, span=span, scope=scope,
                      seed=direction_seed, eval_size=eval_size, bn_size=bn_size)
        return store.cached("plane", inputs, lambda: loss_surface(models[(regime, seed)], batch, bn_batches, steps,
                                                                  span, scope, direction_seed))

    def path(a, b):
        keys = [runs.run(s, regime=r).run.key for r, s in (a, b)]
        inputs = dict(runs=keys, steps=path_steps, eval_size=eval_size, bn_size=bn_size)
        return store.cached("path", inputs, lambda: interpolate(models[a], models[b], batch, bn_batches, path_steps))

    planes = {r: plane(r) for r in regimes}
    rows = ["total"] + exits
    basins = basin_table(planes, rows)
    wide = basins.pivot(index="loss", columns="regime", values="share_below_twice").loc[rows, regimes]
    pairs = [(a, b) for i, a in enumerate(regimes) for b in regimes[i + 1:]]
    paths = {f"{a} – {b}": path((a, seed), (b, seed)) for a, b in pairs}
    ends = {f"{a} – {b}": (a, b) for a, b in pairs}  # the regimes at the ends of each path between regimes
    if reference_seed != seed:
        paths.update({f"{r} seed {seed} – {reference_seed}": path((r, seed), (r, reference_seed)) for r in regimes})
    barriers = barrier_table(paths, exits)
    result = Result(profile, "landscape_findings", FIGURES, data=dict(
        config=config, seeds=runs.seeds, num_exits=runs.num_exits, regimes=regimes, rows=rows, planes=planes,
        basins=basins, wide=wide, paths=paths,
        at_solution=basins.pivot(index="loss", columns="regime", values="at_solution").loc[rows, regimes], barriers=barriers, steps=steps, span=span, scope=scope,
        eval_size=len(batch[1]), bn_size=bn_size))
    result.add("landscape_basins", basins.set_index(["regime", "loss"]))
    result.add("landscape_barriers", barriers)
    result.findings.append(("The loss around each solution", _basin_findings(wide, regimes, exits, span, scope)))
    result.findings.append(("Linear paths between solutions", _path_findings(barriers, paths, ends, regimes)))
    result.data["seconds"] = time.perf_counter() - started
    return result


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


def barrier_table(paths: dict[str, pd.DataFrame], exits: list[str]) -> pd.DataFrame:
    """Each path's barrier for the total loss and each exit's, and its ends' mean total loss."""
    barriers = pd.DataFrame({name: {"total": barrier(frame),
                                    **{e: barrier(frame, f"loss {k}") for k, e in enumerate(exits)},
                                    "ends (total)": (frame["total"].iloc[0] + frame["total"].iloc[-1]) / 2}
                             for name, frame in paths.items()}).T
    barriers.index.name = "path"
    return barriers


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


def verdict(barriers: pd.DataFrame, name: str) -> tuple[bool, str]:
    """Whether path ``name`` has no barrier (below :data:`FLAT` of its ends' loss), and why."""
    row = barriers.loc[name]
    relative = row["total"] / row["ends (total)"]
    return relative < FLAT, f"{name}: barrier {row['total']:.3f} ({relative:.0%} of its ends' loss)"


def _path_findings(barriers: pd.DataFrame, paths: dict, ends: dict, regimes: list[str]) -> list[str]:
    lines = []
    seed_paths = [name for name in paths if name not in ends]
    reference_barrier = barriers.loc[seed_paths, "total"].mean() if seed_paths else None
    for name in paths:
        flat, text = verdict(barriers, name)
        if reference_barrier and name in ends:
            text += f", {barriers.loc[name, 'total'] / reference_barrier:.0%} of the seed-to-seed paths' mean barrier"
        lines.append(text + (": no barrier" if flat else ": a barrier"))
    if {"disjoint", "mixed", "joint"} <= set(regimes):
        same, _ = verdict(barriers, "disjoint – mixed")
        joint_apart = all(not verdict(barriers, n)[0] for n, at_ends in ends.items() if "joint" in at_ends)
        claim = same and joint_apart
        lines.append("The paper's claim (disjoint and mixed share a basin, joint lies in another) "
                     + ("holds here" if claim else "does not hold here") + ": disjoint–mixed has "
                     + ("no barrier" if same else "a barrier") + ", and the paths from joint "
                     + ("all cross a barrier" if joint_apart else "do not all cross a barrier") + ".")
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


def draw_paths(result: Result):
    """Every exit's loss (top) and accuracy (bottom) along each path; dashed: the total loss."""
    paths, num_exits = result["paths"], result["num_exits"]
    fig, axes = plt.subplots(2, len(paths), figsize=(2.9 * len(paths), 5.2), squeeze=False, sharex=True,
                             sharey="row")
    cmap = plt.get_cmap("viridis")
    for j, (name, frame) in enumerate(paths.items()):
        for k in range(num_exits):
            color = cmap(k / max(num_exits - 1, 1))
            axes[0, j].plot(frame["alpha"], frame[f"loss {k}"], color=color, label=f"exit {k}")
            axes[1, j].plot(frame["alpha"], 100 * frame[f"accuracy {k}"], color=color)
        axes[0, j].plot(frame["alpha"], frame["total"], "k--", label="total")
        axes[0, j].set_title(name, fontsize=9)
        axes[1, j].set_xlabel("α")
    axes[0, 0].set_ylabel("loss")
    axes[0, 0].set_yscale("log")
    axes[1, 0].set_ylabel("accuracy (%)")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    return fig


FIGURES = {"landscape_planes": draw_planes, "landscape_paths": draw_paths}

__all__ = ["FIGURES", "FLAT", "NOTEBOOK", "TABLES", "TITLE", "barrier_table", "basin_table", "run", "verdict"]
