"""Chapter 05 · Gradients: which exits shape which blocks? (``notebooks/05_gradients``).

:func:`run` trains the phase-2 regimes (joint, mixed) once more with a
:class:`mexlib.analysis.GradientRecorder`, which records every ``every``-th step the norm of the
gradient each exit's loss alone sends to each block, and summarises it: the mean norm per exit
and block over parts of training, the internal exits' share of each block's gradient magnitude,
and their gradient per parameter, against the paper's statement that joint training focuses on
the middle of the network.
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from .. import plots
from ..analysis import GradientRecorder, block_parameter_counts, recorded
from ..config import profile_settings
from ..registry import check_all
from ..store import RunStore
from ..study import run_study
from ..train import build_model
from .base import Result

NOTEBOOK = "05_gradients"
TITLE = "Gradients: which exits shape which blocks?"
TABLES = ("gradients_internal_share", "gradients_internal_per_parameter", "gradients_findings")
#: The regimes with a phase 2 (disjoint's backbone never sees an exit).
PHASE2_REGIMES = ("joint", "mixed")


def run(profile: str = "cpu", regimes=PHASE2_REGIMES, seed: int = 0, every: int = 10, windows: int = 3,
        device: str = "auto", executor: str = "inline", workers: int = 2, **overrides) -> Result:
    """Every ``every``-th step of phase 2 of ``regimes`` (seed ``seed``), recorded once and kept;
    the heat maps split the recorded steps into ``windows`` equal parts."""
    regimes = list(regimes)
    check_all(regimes, PHASE2_REGIMES, "regime")
    settings = profile_settings(profile)
    store = RunStore(device=device, progress=settings.progress)
    runs = run_study(profile, {"regime": regimes}, seeds=[seed], store=store, progress=settings.progress,
                     executor=executor, workers=workers, **overrides)
    started = time.perf_counter()
    records = {r: recorded(store, runs.run(seed, regime=r).config, GradientRecorder(every=every),
                           progress=settings.progress) for r in regimes}
    num_exits = runs.num_exits
    final_exit = num_exits - 1
    blocks = [b for b in records[regimes[0]]["block"].unique() if b != "heads"]  # the stem first
    number = {b: str(i) for i, b in enumerate(blocks)}  # block b's number (0: the stem)
    parts = min(windows, *(r.groupby(["epoch", "step"]).ngroups for r in records.values()))  # no empty part
    frames = {r: _windowed(records[r][records[r]["block"] != "heads"], parts) for r in regimes}
    shares = pd.DataFrame({r: internal_share(frames[r], ["block"], final_exit) for r in regimes}).reindex(blocks)
    over_time = {r: internal_share(frames[r], ["epoch", "block"], final_exit).unstack("block").reindex(columns=blocks)
                 for r in regimes}
    sizes = block_parameter_counts(build_model(runs.run(seed, regime=regimes[0]).config))
    steps = {r: frames[r][["epoch", "step"]].drop_duplicates().shape[0] for r in regimes}
    per_parameter = pd.DataFrame({r: frames[r][frames[r]["exit"] != final_exit].groupby("block")["norm"].sum()
                                  .reindex(blocks).fillna(0) / steps[r] / np.sqrt([sizes[b] for b in blocks])
                                  for r in regimes})
    result = Result(profile, "gradients_findings", FIGURES, data=dict(
        regimes=regimes, every=every, records=records, num_exits=num_exits, blocks=blocks, number=number, parts=parts,
        frames=frames, shares=shares, over_time=over_time, per_parameter=per_parameter, steps=steps))
    result.add("gradients_internal_share", shares, percent=True)
    result.add("gradients_internal_per_parameter", per_parameter)
    result.findings.append(("Gradient contributions", _findings(result)))
    result.data["seconds"] = time.perf_counter() - started
    return result


def _windowed(frame: pd.DataFrame, parts: int) -> pd.DataFrame:
    """``frame`` with the part of training (``window``, 0 … parts − 1) each recorded step falls in."""
    order = frame[["epoch", "step"]].drop_duplicates().reset_index(drop=True)
    order["window"] = np.arange(len(order)) * parts // len(order)
    return frame.merge(order, on=["epoch", "step"])


def internal_share(frame: pd.DataFrame, by: list[str], final_exit: int) -> pd.Series:
    """Σ over internal exits of ‖∇ L_k‖ / Σ over all exits, per group of ``by``."""
    summed = frame.assign(internal=frame["exit"] != final_exit).groupby([*by, "internal"])["norm"].sum().unstack()
    return (summed[True] / summed.sum(axis=1)).rename("share")


def _findings(result: Result) -> list[str]:
    regimes, blocks, number = result["regimes"], result["blocks"], result["number"]
    shares, per_parameter, frames = result["shares"], result["per_parameter"], result["frames"]
    lines = []
    backbone_blocks = blocks[1:]  # the stem apart
    third = max(len(backbone_blocks) // 3, 1)
    middle = backbone_blocks[third:len(backbone_blocks) - third] or backbone_blocks
    for regime in regimes:
        column = shares.loc[backbone_blocks, regime]
        strength = per_parameter.loc[backbone_blocks, regime]
        peak = strength.idxmax()
        holds = peak in middle and all(column[b] > 0.5 for b in middle)
        lines.append(f"{regime}: the internal exits' share is " + ", ".join(f"{column[b]:.0%}" for b in middle)
                     + f" in the middle blocks {[number[b] for b in middle]} (highest, {column.max():.0%}, at block "
                     f"{number[column.idxmax()]}); their gradient per parameter peaks at block {number[peak]}. "
                     "The paper's statement " + ("holds" if holds else "does not hold") + f" for {regime} by the rule "
                     "above.")
    if set(regimes) == {"joint", "mixed"}:
        higher = [b for b in backbone_blocks if shares.loc[b, "joint"] > shares.loc[b, "mixed"]]
        lines.append(f"The internal exits' share is higher in joint than in mixed training in {len(higher)} of "
                     f"{len(backbone_blocks)} blocks ({', '.join(number[b] for b in higher) or 'none'}).")
        totals = {r: frames[r].groupby("block")["norm"].sum().reindex(blocks) / result["steps"][r] for r in regimes}
        lines.append("Summed gradient norm per recorded step (all exits), joint / mixed per block: "
                     + ", ".join(f"{number[b]}: {totals['joint'][b] / totals['mixed'][b]:.1f}×" for b in blocks) + ".")
    return lines


def draw_heatmaps(result: Result):
    """The mean gradient norm of each exit (rows) into each block (columns) per part of training."""
    regimes, parts, blocks, number = result["regimes"], result["parts"], result["blocks"], result["number"]
    num_exits, frames = result["num_exits"], result["frames"]
    means = {r: f.groupby(["window", "exit", "block"])["norm"].mean() for r, f in frames.items()}
    positive = pd.concat(means.values())
    norm = LogNorm(vmin=positive[positive > 0].min(), vmax=positive.max())
    fig, axes = plt.subplots(len(regimes), parts, figsize=(3.3 * parts, 2.6 * len(regimes)), squeeze=False,
                             sharex=True, sharey=True)
    for i, regime in enumerate(regimes):
        for w in range(parts):
            grid = means[regime].loc[w].unstack("block").reindex(columns=blocks)
            shown = grid.where(grid > 0)
            image = axes[i, w].imshow(shown.to_numpy(), norm=norm, cmap="magma", aspect="auto")
            axes[i, w].set_title(f"{regime}, part {w + 1} of {parts}", fontsize=9)
            axes[i, w].set_yticks(range(num_exits), [f"exit {k}" for k in range(num_exits)], fontsize=7)
            axes[i, w].set_xticks(range(len(blocks)), [number[b] for b in blocks], fontsize=7)
            axes[i, w].grid(False)
        axes[i, 0].set_ylabel("exit")
    for ax in axes[-1]:
        ax.set_xlabel("block (0: stem)")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="mean ‖∇ block L_exit‖")
    return fig


def draw_internal_share(result: Result):
    """The internal exits' share per block over phase 2 (left) and per epoch (one panel per regime)."""
    regimes, blocks, number = result["regimes"], result["blocks"], result["number"]
    shares, over_time = result["shares"], result["over_time"]
    colors = plots.colors_for(regimes)
    fig, axes = plt.subplots(1, 1 + len(regimes), figsize=(3.6 * (1 + len(regimes)), 3.2), squeeze=False)
    axes = axes[0]
    for regime in regimes:
        axes[0].plot(range(len(blocks)), 100 * shares[regime], "o-", color=colors[regime], label=regime)
    axes[0].axhline(50, color="k", linestyle=":", linewidth=0.8)
    axes[0].set_xticks(range(len(blocks)), [number[b] for b in blocks])
    axes[0].set_xlabel("block (0: stem)")
    axes[0].set_ylabel("share from internal exits (%)")
    axes[0].legend(fontsize=8)
    cmap = plt.get_cmap("viridis")
    for ax, regime in zip(axes[1:], regimes):
        for j, block in enumerate(blocks):
            ax.plot(over_time[regime].index + 1, 100 * over_time[regime][block],
                    color=cmap(j / max(len(blocks) - 1, 1)), label=number[block])
        ax.set_title(regime, fontsize=9)
        ax.set_xlabel("epoch of phase 2")
        ax.set_ylim(0, 100)
    axes[-1].legend(title="block", fontsize=7, ncol=2)
    return fig


FIGURES = {"gradients_heatmaps": draw_heatmaps, "gradients_internal_share": draw_internal_share}

__all__ = ["FIGURES", "NOTEBOOK", "PHASE2_REGIMES", "TABLES", "TITLE", "internal_share", "run"]
