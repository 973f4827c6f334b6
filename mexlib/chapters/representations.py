"""Chapter 04 · Representations: what do the blocks keep under each regime?
(``notebooks/04_representations``).

:func:`run` measures each block's output (its feature map on fixed held-out images, flattened to
a samples × features matrix) of the regimes chapter's final models, for every seed, and of the
first seed's weights after every epoch of training (snapshots recorded by training each run once
more):

* its **numerical rank** at several tolerances, with the bound min(samples − 1, features), and
  whether each rank is *settled* (it moves by at most 10 % on half the samples and sits below
  its bound);
* its **effective rank** (Roy and Vetterli 2007: exp of the entropy of the normalised singular
  values), which needs no tolerance, with a bootstrap interval over the images (first seed);
* **the information its 10 leading principal components carry about the label**, I(PCA(T); Y),
  by Ross's k-nearest-neighbour estimator (a lower bound on the block's I(T;Y)).

Regimes are compared with disjoint block by block, paired by seed with 95 % t intervals
(:func:`mexlib.stats.compare`). Measurements are kept in the run store, keyed by their inputs
and this module's code.
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import plots, stats
from ..analysis import (SnapshotRecorder, block_features, effective_rank, effective_rank_interval, fixed_sample,
                        model_at, mutual_information, principal_components, rank_profile, recorded, run_data)
from ..config import profile_seeds, profile_settings
from ..store import RunStore
from ..study import run_study
from .base import Result, records_stale_runs

NOTEBOOK = "04_representations"
TITLE = "Representations: what do the blocks keep under each regime?"
TABLES = ("representations_final", "representations_seeds", "representations_effective_rank",
          "representations_training", "representations_findings")
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
    table["effective_rank"] = table["block"].map({block: effective_rank(m) for block, m in features.items()})
    return table


def bootstrap_effective_rank(model, batches, resamples: int) -> pd.DataFrame:
    """Every block's effective rank with its bootstrap interval over the images (a row per block)."""
    rows = []
    for block, matrix in block_features(model, batches).items():
        value, low, high = effective_rank_interval(matrix, resamples=resamples)
        rows.append(dict(block=block, effective_rank=value, low=low, high=high, resamples=resamples))
    return pd.DataFrame(rows)


def input_information(batches, k: int, dims: int) -> float:
    """I(X;Y) of the images themselves (on their principal components): the reference of block 0."""
    y = torch.cat([labels for _, labels in batches]).cpu()
    images = torch.cat([x.flatten(1).float().cpu() for x, _ in batches])
    return mutual_information(principal_components(images, dims), y, k=k, dims=None)


@records_stale_runs
def run(profile: str = "cpu", regimes=("disjoint", "joint", "mixed"), seeds=None, sample_size: int = 2048,
        tolerances=(1e-1, 1e-2, 1e-3), tolerance: float = 1e-1, mi_dims: int = 10, mi_k: int = 3,
        training_size: int = 1024, resamples: int = 100, device: str = "auto", executor: str = "inline",
        workers: int = 2, **overrides) -> Result:
    """Ranks (at ``tolerances``; ``tolerance`` for the findings and the curves over training),
    effective ranks and the information of the ``mi_dims`` leading components (``mi_k``
    neighbours) of every block, on ``sample_size`` test images for the final models of every
    seed of ``seeds`` (None: the profile's), ``resamples`` bootstrap resamples of the first
    seed's effective ranks, and ``training_size`` images per snapshot of the first seed."""
    regimes, tolerances, seeds = list(regimes), list(tolerances), list(profile_seeds(profile, seeds))
    if tolerance not in tolerances:
        tolerances = sorted({*tolerances, tolerance}, reverse=True)
    settings = profile_settings(profile)
    store = RunStore(device=device, progress=settings.progress)
    runs = run_study(profile, {"regime": regimes}, seeds=seeds, store=store, progress=settings.progress,
                     executor=executor, workers=workers, **overrides)
    seed = seeds[0]
    config = runs.run(seed, regime=regimes[0]).config
    data = run_data(store, config)
    sample = fixed_sample(data, "test", sample_size, seed=0)
    training_sample = fixed_sample(data, "test", training_size, seed=0)  # the first images of the same draw
    started = time.perf_counter()

    def model(regime, s):
        return runs.run(s, regime=regime).run.model().to(store.device)

    inputs = dict(sample_size=sample_size, tolerances=tolerances, dims=mi_dims, k=mi_k)
    final = pd.concat([store.cached("representations", dict(run=runs.run(s, regime=r).run.key, **inputs),
                                    lambda r=r, s=s: measure(model(r, s), sample, tolerances, mi_k, mi_dims,
                                                             halves=True))
                       .assign(regime=r, seed=s) for s in seeds for r in regimes], ignore_index=True)
    bootstrap = pd.concat([store.cached("effective-rank", dict(run=runs.run(seed, regime=r).run.key,
                                                               sample_size=sample_size, resamples=resamples),
                                        lambda r=r: bootstrap_effective_rank(model(r, seed), sample, resamples))
                           .assign(regime=r) for r in regimes], ignore_index=True)
    reference = store.cached("input-information", dict(config=config.to_dict(), **inputs),
                             lambda: input_information(sample, mi_k, mi_dims))
    final["settled"] = ((final["rank"] - final["rank_half"]).abs() <= SETTLED * final["rank"]) & \
        (final["rank"] < 0.98 * final["bound"])
    settled = final.groupby("tolerance")["settled"].mean().sort_index(ascending=False)
    part = final[final["tolerance"] == tolerance]

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
    summary = seed_summary(part, regimes)
    result = Result(profile, "representations_findings", FIGURES, data=dict(
        config=config, regimes=regimes, seeds=seeds, tolerances=tolerances, tolerance=tolerance, final=final,
        settled=settled, part=part, summary=summary, bootstrap=bootstrap, reference_information=reference,
        profile_table=summary.pivot(index="block", columns="regime")[["rank", "effective_rank", "information"]]
        .round(2), over_training=over_training, blocks=[int(b) for b in sorted(part["block"].unique())],
        sample_size=sum(len(b[1]) for b in sample), training_size=sum(len(b[1]) for b in training_sample),
        mi_dims=mi_dims, mi_k=mi_k, resamples=resamples))
    result.add("representations_final", final.set_index(["regime", "seed", "block", "tolerance"]))
    result.add("representations_seeds", summary.set_index(["regime", "block"]))
    result.add("representations_effective_rank", bootstrap.set_index(["regime", "block"]))
    result.add("representations_training", over_training.set_index(["regime", "epoch", "block"]))
    result.findings.append(("The final models", _final_findings(result)))
    result.findings.append(("Over training", _training_findings(result)))
    result.data["seconds"] = time.perf_counter() - started
    return result


#: The per-seed measures of the final models that the chapter compares.
MEASURES = {"rank": "rank", "effective_rank": "effective rank", "information": "I(PCA(T); Y)"}


def seed_summary(part: pd.DataFrame, regimes: list[str]) -> pd.DataFrame:
    """Per regime and block: each measure's mean over the seeds with its 95 % t interval
    (``<measure>_low``, ``<measure>_high``) and the number of seeds."""
    rows = []
    for (regime, block), group in part.groupby(["regime", "block"]):
        row = dict(regime=regime, block=int(block), seeds=len(group))
        for measure in MEASURES:
            row[measure], row[f"{measure}_low"], row[f"{measure}_high"] = stats.t_interval(group[measure])
        rows.append(row)
    order = {r: i for i, r in enumerate(regimes)}
    return pd.DataFrame(rows).sort_values(["regime", "block"], key=lambda c: c.map(order) if c.name == "regime"
                                          else c).reset_index(drop=True)


def against_disjoint(part: pd.DataFrame, regime: str, measure: str) -> dict[int, stats.Comparison]:
    """``regime`` − disjoint in ``measure``, block by block, paired by seed."""
    values = {r: part[part["regime"] == r].set_index(["block", "seed"])[measure] for r in (regime, "disjoint")}
    return {int(b): stats.compare(values[regime].loc[b].to_dict(), values["disjoint"].loc[b].to_dict())
            for b in sorted(part["block"].unique())}


def _by_verdict(comparisons: dict[int, stats.Comparison], digits: int) -> str:
    """``higher in blocks …, lower in …, not distinguishable in …`` with each block's difference
    and interval."""
    words = {"ahead": "higher", "behind": "lower", "not distinguishable": "not distinguishable",
             "one seed": "one seed"}
    parts = []
    for verdict in ("ahead", "behind", "not distinguishable", "one seed"):
        blocks = [b for b, c in comparisons.items() if c.verdict == verdict]
        if blocks:
            parts.append(f"{words[verdict]} in block{'s' if len(blocks) > 1 else ''} "
                         + ", ".join(map(str, blocks)))
    details = "; ".join(f"block {b}: {c.difference:+.{digits}f}"
                        + ("" if np.isnan(c.low) else f" [{c.low:+.{digits}f}, {c.high:+.{digits}f}]")
                        for b, c in comparisons.items())
    n = max(c.n for c in comparisons.values())
    return "; ".join(parts) + f" (differences with 95 % CI, paired, n = {n}: {details})"


def _final_findings(result: Result) -> list[str]:
    regimes, tolerance, settled, seeds = result["regimes"], result["tolerance"], result["settled"], result["seeds"]
    part, summary, final, blocks = result["part"], result["summary"], result["final"], result["blocks"]
    mean = summary.set_index(["block", "regime"])
    lines = [f"At tolerance {tolerance:g}, {settled[tolerance]:.0%} of the ranks are settled (section 1's "
             f"rule); at {settled.index[-1]:g}, {settled.iloc[-1]:.0%}. "
             + ("The rank comparisons below stand on settled ranks." if settled[tolerance] == 1 else
                "Rank comparisons involving unsettled ranks are weaker than they look.")
             + f" Seeds {', '.join(map(str, seeds))}."]
    for regime in regimes:
        per_seed = part[part["regime"] == regime].pivot(index="seed", columns="block", values="rank")
        falls = int((per_seed[blocks[-1]] < per_seed[blocks[0]]).sum())
        lines.append(f"{regime}: rank {mean.loc[(blocks[0], regime), 'rank']:.0f} after block {blocks[0]} and "
                     f"{mean.loc[(blocks[-1], regime), 'rank']:.0f} after block {blocks[-1]} (means over seeds; of at "
                     f"most {int(part['bound'].max())}, tolerance {tolerance:g}): 'high early, lower deep' holds "
                     f"in {falls} of {len(per_seed)} seeds; effective rank {mean.loc[(blocks[0], regime), 'effective_rank']:.1f}"
                     f" → {mean.loc[(blocks[-1], regime), 'effective_rank']:.1f}.")
    if "disjoint" in regimes:
        for regime in [r for r in regimes if r != "disjoint"]:
            for measure, digits in (("rank", 1), ("effective_rank", 2), ("information", 3)):
                lines.append(f"{regime} against disjoint (the plain backbone), {MEASURES[measure]}: "
                             + _by_verdict(against_disjoint(part, regime, measure), digits) + ".")
        readable = [tol for tol in result["tolerances"] if settled[tol] == 1 and tol != tolerance]
        means = final.groupby(["tolerance", "block", "regime"])["rank"].mean()
        deep = [b for b in blocks if b > len(blocks) // 2]
        moved = [tol for tol in readable
                 if (means.loc[tol].unstack()[regimes].loc[deep].idxmax(axis=1)
                     != means.loc[tolerance].unstack()[regimes].loc[deep].idxmax(axis=1)).any()]
        if readable:
            lines.append(f"Which regime has the highest mean rank in each deeper block ({deep}) "
                         + ("is the same at every settled tolerance." if not moved else
                            f"changes with the tolerance ({moved})."))
    bootstrap = result["bootstrap"]
    widest = (bootstrap["high"] - bootstrap["low"]).max() / 2
    spread = part.groupby(["regime", "block"])["effective_rank"].agg(lambda v: v.max() - v.min()).max()
    lines.append(f"The images' sampling error of an effective rank (bootstrap over the {result['sample_size']} images, "
                 f"seed {seeds[0]}, {result['resamples']} resamples) is at most ±{widest:.2f}; the seeds' values of "
                 f"one regime and block lie up to {spread:.2f} apart.")
    for regime in regimes:
        lines.append(f"{regime}: the information of the {result['mi_dims']} leading components goes from "
                     f"{mean.loc[(blocks[0], regime), 'information']:.2f} nats after block {blocks[0]} to "
                     f"{mean.loc[(blocks[-1], regime), 'information']:.2f} after block {blocks[-1]} (the images' "
                     f"{result['mi_dims']} leading components: {result['reference_information']:.2f}; at most "
                     f"ln 10 = 2.30).")
    return lines


def _training_findings(result: Result) -> list[str]:
    regimes, over_training, blocks = result["regimes"], result["over_training"], result["blocks"]
    lines = [f"Seed {result['seeds'][0]} only (each curve needs its runs trained again with a recorder)."]
    last = over_training.sort_values("epoch").groupby(["regime", "block"]).last()
    first = over_training.sort_values("epoch").groupby(["regime", "block"]).first()
    for regime in regimes:
        change = (last.loc[regime, "rank"] - first.loc[regime, "rank"])
        gain = (last.loc[regime, "information"] - first.loc[regime, "information"])
        lines.append(f"{regime}: from the first recorded epoch to the last, the rank moves by "
                     + ", ".join(f"{int(v):+d}" for v in change) + f" (blocks {blocks[0]}–{blocks[-1]}) and the "
                     f"information of the leading components by "
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
    """The rank across the blocks at each tolerance, the effective rank and the information of
    the leading components: means over the seeds, each seed a faint line; the error bars of the
    last two are 95 % t intervals over the seeds. Each panel's axis fits its data (the bound,
    min(samples − 1, features), is in the tables)."""
    regimes, tolerances, final, summary = result["regimes"], result["tolerances"], result["final"], result["summary"]
    colors = plots.colors_for(regimes)
    fig, axes = plt.subplots(1, len(tolerances) + 2, figsize=(3.3 * (len(tolerances) + 2), 3.2))
    for ax, tol in zip(axes, tolerances):
        part = final[final["tolerance"] == tol]
        for regime in regimes:
            rows = part[part["regime"] == regime]
            for _, one in rows.groupby("seed"):
                ax.plot(one["block"], one["rank"], "-", color=colors[regime], alpha=0.25, linewidth=0.8)
            means = rows.groupby("block")["rank"].mean()
            ax.plot(means.index, means.to_numpy(), "o-", color=colors[regime], label=regime)
        ax.set_title(f"numerical rank, tolerance {tol:g}", fontsize=9)
        ax.set_xlabel("block")
    axes[0].set_ylabel("rank")
    axes[0].legend(fontsize=8)
    for ax, measure in zip(axes[-2:], ("effective_rank", "information")):
        for regime in regimes:
            rows = summary[summary["regime"] == regime]
            blocks, values = rows["block"].to_numpy(), rows[measure].to_numpy()
            if measure == "information":
                blocks, values = np.r_[0, blocks], np.r_[result["reference_information"], values]
            ax.plot(blocks, values, "o-", color=colors[regime])
            if rows[f"{measure}_low"].notna().all():
                ax.errorbar(rows["block"], rows[measure], yerr=[rows[measure] - rows[f"{measure}_low"],
                                                                  rows[f"{measure}_high"] - rows[measure]],
                            fmt="none", ecolor=colors[regime], capsize=3)
        ax.set_xlabel("block")
    axes[-2].set_title("effective rank (Roy & Vetterli)", fontsize=9)
    axes[-1].set_title(f"I(PCA{result['mi_dims']}(T); Y) (block 0: the images)", fontsize=9)
    axes[-1].set_ylabel("nats")
    fig.suptitle(f"Means over seeds {', '.join(map(str, result['seeds']))}", fontsize=10, y=1.04)
    return fig


def draw_training(result: Result):
    """Rank (top) and the leading components' information (bottom) of each block over the epochs trained; dotted: the end of phase 1."""
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
    axes[1, 0].set_ylabel("I(PCA(T); Y) (nats)")
    axes[0, 0].legend(fontsize=7)
    return fig


FIGURES = {"representations_final": draw_final, "representations_training": draw_training}

__all__ = ["FIGURES", "MEASURES", "NOTEBOOK", "SETTLED", "TABLES", "TITLE", "against_disjoint",
           "bootstrap_effective_rank", "input_information", "measure", "run", "seed_summary"]
