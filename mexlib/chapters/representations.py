"""Chapter 04 · Representations: what do the blocks keep under each regime?
(``notebooks/04_representations``).

:func:`run` measures each block's output (its feature map on fixed held-out images, flattened to
a samples × features matrix) of the regimes chapter's final models and of the weights after every
epoch of training (snapshots recorded by training each run once more):

* its **numerical rank** at several tolerances, with the bound min(samples − 1, features), and
  whether each rank is *settled* (it moves by at most 10 % on half the samples and sits below
  its bound);
* **I(T;Y)**, its mutual information with the label, by Ross's k-nearest-neighbour estimator on
  its leading principal components (a lower bound on the block's).

Measurements are kept in the run store, keyed by their inputs and this module's code.
"""

from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

from .. import plots
from ..analysis import (SnapshotRecorder, block_features, fixed_sample, model_at, mutual_information,
                        principal_components, rank_profile, recorded, run_data)
from ..config import profile_settings
from ..store import RunStore
from ..study import run_study
from .base import Result

NOTEBOOK = "04_representations"
TITLE = "Representations: what do the blocks keep under each regime?"
TABLES = ("representations_final", "representations_training", "representations_findings")
#: A rank is settled when it moves by at most this share on half the samples (and sits below
#: 98 % of its bound).
SETTLED = 0.1


def measure(model, batches, tolerances, k: int, dims: int, halves: bool = False) -> pd.DataFrame:
    """Every block's rank at every tolerance and its I(T;Y) (``k`` neighbours, ``dims`` principal
    components): one row per (block, tolerance); ``halves``: also the rank on the first half of
    the samples (``rank_half``)."""
    features = block_features(model, batches)
    y = torch.cat([labels for _, labels in batches]).cpu()
    table = rank_profile(features, tolerances)
    if halves:
        half = rank_profile({b: m[:len(m) // 2] for b, m in features.items()}, tolerances)
        table["rank_half"] = half["rank"].to_numpy()
    information = {block: mutual_information(matrix, y, k=k, dims=dims) for block, matrix in features.items()}
    table["information"] = table["block"].map(information)
    return table


def input_information(batches, k: int, dims: int) -> float:
    """I(X;Y) of the images themselves (on their principal components): the reference of block 0."""
    y = torch.cat([labels for _, labels in batches]).cpu()
    images = torch.cat([x.flatten(1).float().cpu() for x, _ in batches])
    return mutual_information(principal_components(images, dims), y, k=k, dims=None)


def run(profile: str = "cpu", regimes=("disjoint", "joint", "mixed"), seed: int = 0, sample_size: int = 2048,
        tolerances=(1e-1, 1e-2, 1e-3), tolerance: float = 1e-1, mi_dims: int = 10, mi_k: int = 3,
        training_size: int = 1024, device: str = "auto", executor: str = "inline", workers: int = 2,
        **overrides) -> Result:
    """Ranks (at ``tolerances``; ``tolerance`` for the findings and the curves over training) and
    I(T;Y) (``mi_dims`` components, ``mi_k`` neighbours) of every block, on ``sample_size`` test
    images for the final models and ``training_size`` per snapshot."""
    regimes, tolerances = list(regimes), list(tolerances)
    if tolerance not in tolerances:
        tolerances = sorted({*tolerances, tolerance}, reverse=True)
    settings = profile_settings(profile)
    store = RunStore(device=device, progress=settings.progress)
    runs = run_study(profile, {"regime": regimes}, seeds=[seed], store=store, progress=settings.progress,
                     executor=executor, workers=workers, **overrides)
    config = runs.run(seed, regime=regimes[0]).config
    data = run_data(store, config)
    sample = fixed_sample(data, "test", sample_size, seed=0)
    training_sample = fixed_sample(data, "test", training_size, seed=0)  # the first images of the same draw
    started = time.perf_counter()

    inputs = dict(sample_size=sample_size, tolerances=tolerances, dims=mi_dims, k=mi_k)
    final = pd.concat([store.cached("representations", dict(run=runs.run(seed, regime=r).run.key, **inputs),
                                    lambda r=r: measure(runs.run(seed, regime=r).run.model().to(store.device), sample,
                                                        tolerances, mi_k, mi_dims, halves=True))
                       .assign(regime=r) for r in regimes], ignore_index=True)
    reference = store.cached("input-information", dict(config=config.to_dict(), **inputs),
                             lambda: input_information(sample, mi_k, mi_dims))
    final["settled"] = ((final["rank"] - final["rank_half"]).abs() <= SETTLED * final["rank"]) & \
        (final["rank"] < 0.98 * final["bound"])
    settled = final.groupby("tolerance")["settled"].mean().sort_index(ascending=False)
    part = final[final["tolerance"] == tolerance]
    ranks = part.pivot(index="block", columns="regime", values="rank")[regimes]
    information = part.pivot(index="block", columns="regime", values="information")[regimes]

    def trajectory(regime):
        run_config = runs.run(seed, regime=regime).config
        snapshots = [s for s in recorded(store, run_config, SnapshotRecorder(), progress=settings.progress)
                     if s["phase"] != "heads"]  # the heads phase does not move the backbone

        def compute():
            rows = []
            for epoch, snapshot in enumerate(snapshots, start=1):
                table = measure(model_at(run_config, snapshot["state"], store.device), training_sample, tolerances,
                                mi_k, mi_dims)
                table = table[table["tolerance"] == tolerance]
                rows.append(table.assign(epoch=epoch, phase=snapshot["phase"]))
            return pd.concat(rows, ignore_index=True)

        key = dict(run=runs.run(seed, regime=regime).run.key, size=training_size, tolerance=tolerance, dims=mi_dims,
                   k=mi_k)
        return store.cached("representations-training", key, compute).assign(regime=regime)

    over_training = pd.concat([trajectory(r) for r in regimes], ignore_index=True)
    result = Result(profile, "representations_findings", FIGURES, data=dict(
        config=config, regimes=regimes, tolerances=tolerances, tolerance=tolerance, final=final,
        settled=settled, part=part, ranks=ranks, information=information,
        profile_table=pd.concat({f"rank (tolerance {tolerance:g})": ranks, "I(T;Y) (nats)": information.round(3)},
                                axis=1), reference_information=reference,
        over_training=over_training, blocks=[int(b) for b in sorted(part["block"].unique())],
        sample_size=sum(len(b[1]) for b in sample), training_size=sum(len(b[1]) for b in training_sample),
        mi_dims=mi_dims, mi_k=mi_k))
    result.add("representations_final", final.set_index(["regime", "block", "tolerance"]))
    result.add("representations_training", over_training.set_index(["regime", "epoch", "block"]))
    result.findings.append(("The final models", _final_findings(result)))
    result.findings.append(("Over training", _training_findings(result)))
    result.data["seconds"] = time.perf_counter() - started
    return result


def _final_findings(result: Result) -> list[str]:
    regimes, tolerance, settled = result["regimes"], result["tolerance"], result["settled"]
    ranks, information, part, final = result["ranks"], result["information"], result["part"], result["final"]
    blocks = result["blocks"]
    deep = [b for b in blocks if b > len(blocks) // 2]
    lines = [f"At tolerance {tolerance:g}, {settled[tolerance]:.0%} of the ranks are settled (section 1's "
             f"rule); at {settled.index[-1]:g}, {settled.iloc[-1]:.0%}. "
             + ("The comparisons below stand on settled ranks." if settled[tolerance] == 1 else
                "Comparisons below involving unsettled ranks are weaker than they look.")]
    for regime in regimes:
        first, last = ranks.loc[blocks[0], regime], ranks.loc[blocks[-1], regime]
        lines.append(f"{regime}: rank {first} after block {blocks[0]} and {last} after block {blocks[-1]} (of at most "
                     f"{int(part['bound'].max())}, tolerance {tolerance:g}); the paper's 'high early, lower deep' "
                     + ("holds" if last < first else "does not hold") + ".")
    if "disjoint" in regimes:
        for regime in [r for r in regimes if r != "disjoint"]:
            higher = [b for b in deep if ranks.loc[b, regime] > ranks.loc[b, "disjoint"]]
            lines.append(f"{regime} against disjoint (the plain backbone) in the deeper blocks {deep}: a higher rank in "
                         f"{len(higher)} of {len(deep)} (" + ", ".join(f"block {b}: {ranks.loc[b, regime]} vs "
                                                                       f"{ranks.loc[b, 'disjoint']}" for b in deep)
                         + ").")
        readable = [tol for tol in result["tolerances"] if settled[tol] == 1 and tol != tolerance]
        moved = [tol for tol in readable
                 if (final[(final["tolerance"] == tol) & (final["block"].isin(deep))]
                     .pivot(index="block", columns="regime", values="rank")[regimes].idxmax(axis=1)
                     != ranks.loc[deep].idxmax(axis=1)).any()]
        if readable:
            lines.append("Which regime has the highest rank in each deeper block " +
                         ("is the same at every settled tolerance." if not moved else
                          f"changes with the tolerance ({moved})."))
        for regime in [r for r in regimes if r != "disjoint"]:
            gap = information[regime] - information["disjoint"]
            lines.append(f"{regime} against disjoint: I(T;Y) higher in {int((gap > 0).sum())} of {len(blocks)} blocks "
                         f"(" + ", ".join(f"block {b}: {gap[b]:+.2f}" for b in blocks) + " nats; one seed).")
    for regime in regimes:
        values = information[regime]
        lines.append(f"{regime}: I(T;Y) goes from {values.iloc[0]:.2f} nats after block {blocks[0]} to "
                     f"{values.iloc[-1]:.2f} after block {blocks[-1]} (the images: {result['reference_information']:.2f}; "
                     f"at most ln 10 = 2.30).")
    return lines


def _training_findings(result: Result) -> list[str]:
    regimes, over_training, blocks = result["regimes"], result["over_training"], result["blocks"]
    lines = []
    last = over_training.sort_values("epoch").groupby(["regime", "block"]).last()
    first = over_training.sort_values("epoch").groupby(["regime", "block"]).first()
    for regime in regimes:
        change = (last.loc[regime, "rank"] - first.loc[regime, "rank"])
        gain = (last.loc[regime, "information"] - first.loc[regime, "information"])
        lines.append(f"{regime}: from the first recorded epoch to the last, the rank moves by "
                     + ", ".join(f"{int(v):+d}" for v in change) + f" (blocks {blocks[0]}–{blocks[-1]}) and I(T;Y) by "
                     + ", ".join(f"{v:+.2f}" for v in gain) + " nats.")
    if "mixed" in regimes:
        phase2 = over_training[(over_training["regime"] == "mixed")]
        end1 = phase2[phase2["phase"] == "backbone"].groupby("block").last()
        end2 = phase2[phase2["phase"] == "joint"].groupby("block").last()
        if len(end1) and len(end2):
            lines.append("mixed, phase 2 against the end of phase 1: rank " + ", ".join(
                f"block {b} {int(end1.loc[b, 'rank'])}→{int(end2.loc[b, 'rank'])}" for b in blocks) + ".")
    return lines


def draw_final(result: Result):
    """The rank across the blocks at each tolerance (dashed: the bound), and I(T;Y)."""
    regimes, tolerances, final = result["regimes"], result["tolerances"], result["final"]
    colors = plots.colors_for(regimes)
    fig, axes = plt.subplots(1, len(tolerances) + 1, figsize=(3.4 * (len(tolerances) + 1), 3.2))
    for ax, tol in zip(axes, tolerances):
        part = final[final["tolerance"] == tol]
        for regime in regimes:
            rows = part[part["regime"] == regime]
            ax.plot(rows["block"], rows["rank"], "o-", color=colors[regime], label=regime)
        bound = part.drop_duplicates("block")
        ax.plot(bound["block"], bound["bound"], "k--", linewidth=0.8, label="bound")
        ax.set_title(f"numerical rank, tolerance {tol:g}", fontsize=9)
        ax.set_xlabel("block")
        ax.set_ylim(0, None)
    axes[0].set_ylabel("rank")
    axes[0].legend(fontsize=8)
    ax = axes[-1]
    part = result["part"]
    for regime in regimes:
        rows = part[part["regime"] == regime]
        ax.plot([0, *rows["block"]], [result["reference_information"], *rows["information"]], "o-",
                color=colors[regime])
    ax.axhline(math.log(10), color="k", linestyle=":", linewidth=0.8)
    ax.set_title("I(T;Y) (block 0: the images)", fontsize=9)
    ax.set_xlabel("block")
    ax.set_ylabel("nats")
    return fig


def draw_training(result: Result):
    """Rank (top) and I(T;Y) (bottom) of each block over the epochs trained; dotted: the end of phase 1."""
    regimes, over_training, blocks = result["regimes"], result["over_training"], result["blocks"]
    colors = plots.colors_for(regimes)
    fig, axes = plt.subplots(2, len(blocks), figsize=(2.5 * len(blocks), 5), sharex=True, squeeze=False)
    phase1 = over_training[over_training["phase"] == "backbone"].groupby("regime")["epoch"].max()
    width = {r: 4 if r == "disjoint" else 1.5 for r in regimes}  # disjoint under mixed, visible in phase 1
    for j, block in enumerate(blocks):
        part_b = over_training[over_training["block"] == block]
        for regime in regimes:
            rows = part_b[part_b["regime"] == regime]
            for ax, column in zip(axes[:, j], ["rank", "information"]):
                ax.plot(rows["epoch"], rows[column], color=colors[regime], linewidth=width[regime],
                        alpha=0.5 if regime == "disjoint" else 1, label=regime)
        for ax in axes[:, j]:
            if len(phase1):
                ax.axvline(phase1.max() + 0.5, color="k", linestyle=":", linewidth=0.8)
        axes[0, j].set_title(f"block {block}", fontsize=9)
        axes[1, j].set_xlabel("epochs trained")
    axes[0, 0].set_ylabel(f"rank (tol. {result['tolerance']:g})")
    axes[1, 0].set_ylabel("I(T;Y) (nats)")
    axes[0, 0].legend(fontsize=7)
    return fig


FIGURES = {"representations_final": draw_final, "representations_training": draw_training}

__all__ = ["FIGURES", "NOTEBOOK", "SETTLED", "TABLES", "TITLE", "input_information", "measure", "run"]
