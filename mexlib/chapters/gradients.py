"""Chapter 05 · Gradients: which exits shape which blocks? (``notebooks/05_gradients``).

:func:`run` trains the phase-2 regimes (joint, mixed) once more with a
:class:`mexlib.analysis.GradientRecorder`, which records every ``every``-th step the norm of the
gradient each exit's loss alone sends to each block, and summarises it: the mean norm per exit
and block over parts of training, the internal exits' share of each block's gradient magnitude
**against the share a count alone gives** (of the exits behind a block, the internal ones: a
block before every exit gets most of its gradient from internal exits whatever they learn), over
seeds with 95 % intervals, and their gradient per parameter, against the paper's statement that
joint training focuses on the middle of the network.
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from .. import plots
from ..analysis import GradientRecorder, block_parameter_counts, recorded
from ..config import profile_seeds, profile_settings
from ..registry import check_all
from ..stats import compare, t_interval
from ..store import RunStore
from ..study import run_study
from ..train import build_model
from .base import Result, records_stale_runs

NOTEBOOK = "05_gradients"
TITLE = "Gradients: which exits shape which blocks?"
TABLES = ("gradients_internal_share", "gradients_internal_per_parameter", "gradients_findings")
#: The regimes with a phase 2 (disjoint's backbone never sees an exit).
PHASE2_REGIMES = ("joint", "mixed")


@records_stale_runs
def run(profile: str = "cpu", regimes=PHASE2_REGIMES, seeds=None, every: int = 10, windows: int = 3,
        device: str = "auto", executor: str = "inline", workers: int = 2, **overrides) -> Result:
    """Every ``every``-th step of phase 2 of ``regimes`` for ``seeds`` (None: the profile's),
    recorded once each and kept; the heat maps and the curves over training show the first
    seed, split into ``windows`` equal parts; the shares and their excess over the count are
    given over every seed."""
    regimes = list(regimes)
    check_all(regimes, PHASE2_REGIMES, "regime")
    settings = profile_settings(profile)
    seeds = list(profile_seeds(profile, seeds))
    store = RunStore(device=device, progress=settings.progress)
    runs = run_study(profile, {"regime": regimes}, seeds=seeds, store=store, progress=settings.progress,
                     executor=executor, workers=workers, **overrides)
    started = time.perf_counter()
    records = {(r, s): recorded(store, runs.run(s, regime=r).config, GradientRecorder(every=every),
                                progress=settings.progress) for s in seeds for r in regimes}
    num_exits = runs.num_exits
    final_exit = num_exits - 1
    first = seeds[0]
    blocks = [b for b in records[(regimes[0], first)]["block"].unique() if b != "heads"]  # the stem first
    number = {b: str(i) for i, b in enumerate(blocks)}  # block b's number (0: the stem)
    parts = min(windows, *(records[(r, first)].groupby(["epoch", "step"]).ngroups for r in regimes))  # no empty part
    frames = {key: _windowed(frame[frame["block"] != "heads"], parts) for key, frame in records.items()}
    per_seed = {key: internal_share(frame, ["block"], final_exit).reindex(blocks) for key, frame in frames.items()}
    baseline = count_baseline(runs.run(first, regime=regimes[0]).config.exit_after_blocks, len(blocks))
    baseline.index = blocks
    shares = pd.DataFrame({r: pd.concat([per_seed[(r, s)] for s in seeds], axis=1).mean(axis=1) for r in regimes})
    over_time = {r: internal_share(frames[(r, first)], ["epoch", "block"], final_exit).unstack("block")
                 .reindex(columns=blocks) for r in regimes}
    sizes = block_parameter_counts(build_model(runs.run(first, regime=regimes[0]).config))
    steps = {key: frame[["epoch", "step"]].drop_duplicates().shape[0] for key, frame in frames.items()}
    per_parameter = pd.DataFrame({r: pd.concat([
        frames[(r, s)][frames[(r, s)]["exit"] != final_exit].groupby("block")["norm"].sum().reindex(blocks).fillna(0)
        / steps[(r, s)] / np.sqrt([sizes[b] for b in blocks]) for s in seeds], axis=1).mean(axis=1) for r in regimes})
    result = Result(profile, "gradients_findings", FIGURES, data=dict(
        regimes=regimes, seeds=seeds, every=every, records=records, num_exits=num_exits, blocks=blocks, number=number,
        parts=parts, frames=frames, shares=shares, per_seed=per_seed, baseline=baseline, over_time=over_time,
        per_parameter=per_parameter, steps=steps))
    result.add("gradients_internal_share", share_table(result), percent=SHARE_PERCENT)
    result.add("gradients_internal_per_parameter", per_parameter)
    result.findings.append(("Gradient contributions", _findings(result)))
    result.data["seconds"] = time.perf_counter() - started
    return result


def _blocks(numbers: list[str]) -> str:
    """``blocks 1, 2 and 4``, ``block 3`` or ``none``."""
    if not numbers:
        return "none"
    return (f"block {numbers[0]}" if len(numbers) == 1
            else f"blocks {', '.join(numbers[:-1])} and {numbers[-1]}")


def count_baseline(exit_after_blocks, num_blocks: int) -> pd.Series:
    """For each block (0: the stem, then 1 … ``num_blocks`` − 1), the share of the internal exits
    among the exits its output reaches: an exit after block j sends gradient to blocks 0 … j, the
    final exit to every block. A share of the gradient equal to this means the internal exits
    weigh on the block exactly as their number does."""
    rows = []
    for block in range(num_blocks):
        behind = sum(1 for j in exit_after_blocks if j >= max(block, 1))
        rows.append(behind / (behind + 1))
    return pd.Series(rows, name="count")


def share_table(result: Result) -> pd.DataFrame:
    """Per block and regime: the internal exits' share (mean over seeds), the share a count gives
    (:func:`count_baseline`), the excess over it with its 95 % interval over seeds, and the seeds."""
    rows = []
    for block in result["blocks"]:
        for regime in result["regimes"]:
            excess = [result["per_seed"][(regime, s)][block] - result["baseline"][block] for s in result["seeds"]]
            mean, low, high = t_interval(excess)
            rows.append(dict(block=result["number"][block], regime=regime, share=result["shares"].loc[block, regime],
                             count=result["baseline"][block], excess=mean, low=low, high=high,
                             seeds=len(result["seeds"])))
    return pd.DataFrame(rows).set_index(["block", "regime"])


#: The columns of :func:`share_table` given in percent.
SHARE_PERCENT = ["share", "count", "excess", "low", "high"]


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
    regimes, blocks, number, seeds = result["regimes"], result["blocks"], result["number"], result["seeds"]
    per_parameter, frames, first = result["per_parameter"], result["frames"], seeds[0]
    table = share_table(result)
    lines = []
    backbone_blocks = blocks[1:]  # the stem apart
    third = max(len(backbone_blocks) // 3, 1)
    middle = backbone_blocks[third:len(backbone_blocks) - third] or backbone_blocks
    judged = [b for b in blocks if 0 < result["baseline"][b] < 1]  # blocks where internal exits and the final meet
    for regime in regimes:
        def excess(b, regime=regime):
            row = table.loc[(number[b], regime)]
            interval = (f"95 % CI {100 * row['low']:+.1f} to {100 * row['high']:+.1f}" if len(seeds) > 1
                        else "one seed")
            return f"{number[b]}: {100 * row['share']:.0f} % against {100 * row['count']:.0f} % ({100 * row['excess']:+.1f}, {interval})"
        above = [b for b in judged if table.loc[(number[b], regime), "low"] > 0]
        below = [b for b in judged if table.loc[(number[b], regime), "high"] < 0]
        strength = per_parameter.loc[backbone_blocks, regime]
        largest = max(judged, key=lambda b: table.loc[(number[b], regime), "excess"])
        lines.append(f"{regime}: the internal exits' share of each block's gradient against the share of internal "
                     f"exits among those the block feeds (the count), over {len(seeds)} seed(s): "
                     + "; ".join(excess(b) for b in judged) + ". "
                     f"Above the count (interval above zero) at {_blocks([number[b] for b in above])}, below "
                     f"it at {_blocks([number[b] for b in below])}; the largest excess at block {number[largest]}"
                     f"{' (a middle block)' if largest in middle else ''}. The internal exits' gradient per parameter "
                     f"peaks at block {number[strength.idxmax()]} (normalised by √(parameters), which favours the "
                     f"narrow early blocks).")
    if set(regimes) == {"joint", "mixed"}:
        differences = []
        for b in judged:
            comparison = compare({s: result["per_seed"][("joint", s)][b] for s in seeds},
                                 {s: result["per_seed"][("mixed", s)][b] for s in seeds})
            differences.append(f"{number[b]}: {comparison.words()}")
        lines.append("Joint − mixed, the internal exits' share per block (paired by seed): " + "; ".join(differences) + ".")
        totals = {r: frames[(r, first)].groupby("block")["norm"].sum().reindex(blocks) / result["steps"][(r, first)]
                  for r in regimes}
        lines.append(f"Summed gradient norm per recorded step (all exits, seed {first}), joint / mixed per block: "
                     + ", ".join(f"{number[b]}: {totals['joint'][b] / totals['mixed'][b]:.1f}×" for b in blocks) + ".")
    return lines


def draw_heatmaps(result: Result):
    """The mean gradient norm of each exit (rows) into each block (columns) per part of training."""
    regimes, parts, blocks, number = result["regimes"], result["parts"], result["blocks"], result["number"]
    num_exits, first = result["num_exits"], result["seeds"][0]
    frames = {r: result["frames"][(r, first)] for r in regimes}
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
            axes[i, w].set_title(f"{regime}, part {w + 1} of {parts} (seed {first})", fontsize=9)
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
    table = share_table(result)
    for regime in regimes:
        part = table.xs(regime, level="regime")
        low, high = (100 * (part["count"] + part[bound]) for bound in ("low", "high"))
        axes[0].plot(range(len(blocks)), 100 * shares[regime], "o-", color=colors[regime], label=regime)
        if len(result["seeds"]) > 1:  # the 95 % interval of the mean share over seeds
            axes[0].fill_between(range(len(blocks)), low.to_numpy(), high.to_numpy(), color=colors[regime], alpha=0.2, lw=0)
    axes[0].plot(range(len(blocks)), 100 * result["baseline"].to_numpy(), "k--", lw=1,
                 label="count: internal exits among those fed")
    axes[0].set_xticks(range(len(blocks)), [number[b] for b in blocks])
    axes[0].set_xlabel("block (0: stem)")
    axes[0].set_ylabel("share from internal exits (%)")
    axes[0].legend(fontsize=8)
    cmap = plt.get_cmap("viridis")
    for ax, regime in zip(axes[1:], regimes):
        for j, block in enumerate(blocks):
            ax.plot(over_time[regime].index + 1, 100 * over_time[regime][block],
                    color=cmap(j / max(len(blocks) - 1, 1)), label=number[block])
        ax.set_title(f"{regime} (seed {result['seeds'][0]})", fontsize=9)
        ax.set_xlabel("epoch of phase 2")
        ax.set_ylim(0, 100)
    axes[-1].legend(title="block", fontsize=7, ncol=2)
    return fig


FIGURES = {"gradients_heatmaps": draw_heatmaps, "gradients_internal_share": draw_internal_share}

__all__ = ["FIGURES", "NOTEBOOK", "PHASE2_REGIMES", "TABLES", "TITLE", "count_baseline", "internal_share", "run",
           "share_table"]
