# %% [markdown]
# # 04 · Representations: what do the blocks keep under each regime?
#
# The paper's second explanation looks inside the backbone. Exits attached to a block make
# that block's output serve a classifier of its own; training them with the backbone (joint,
# mixed) should change what the deeper blocks represent, compared with the plain backbone that
# the disjoint regime keeps. **The question of this chapter:** how rich is each block's
# representation, how much does it say about the label, and how do both evolve while each
# regime trains?
#
# Two measurements of each block's output (its feature map on fixed held-out images, flattened
# to a samples × features matrix):
#
# * **Numerical rank**: the number of singular values of the centred matrix above a tolerance
#   times the largest. It counts the directions in which the block's outputs vary. The paper
#   reports it high in early blocks and lower in deep ones, and raised in the deeper blocks
#   where exits shape the backbone (joint, mixed). Neither its tolerance nor its sample count is
#   known; we show three tolerances, and the rank can never exceed the number of samples (minus
#   one, for the centring) or of features, which the tables give as the bound.
# * **Mutual information I(T;Y)** between a block's output T and the label Y, by the k-nearest-
#   neighbour estimator of B. C. Ross ("Mutual Information between Discrete and Continuous Data
#   Sets", PLoS ONE 9(2), 2014), on the block's leading principal components (k-NN distances
#   in thousands of dimensions mean little; by the data-processing inequality the projection's
#   information is a lower bound on the block's). In nats; it can reach at most H(Y) = ln 10 ≈
#   2.30 nats for ten balanced classes. The estimator is tested against the exact value for a
#   Gaussian mixture (`tests/test_analysis.py`). **I(X;T)**, the information a block keeps about
#   its input, is not estimated: for a deterministic network it is infinite for continuous
#   inputs, or the entropy of the sample index for a finite set, so no estimator says anything
#   sound about it without adding noise to the network (Goldfeld et al., ICML 2019).
#
# Both are measured on the final models of the regimes notebook (seed `seed`) and on the
# weights after every epoch of training (snapshots recorded by training each run once more with
# `mexlib.analysis.SnapshotRecorder`; recording does not change the run, which is checked).

# %% [parameters]
profile = "cpu"
regimes = ["disjoint", "joint", "mixed"]
seed = 0
sample_size = 2048  # held-out (test) images for the final models' ranks and information
tolerances = [1e-1, 1e-2, 1e-3]  # rank: singular values above tolerance × the largest
tolerance = 1e-1  # the tolerance of the findings and of the curves over training (see section 1)
mi_dims = 10  # principal components on which I(T;Y) is estimated
mi_k = 3  # neighbours of Ross's estimator
training_size = 1024  # held-out images per snapshot over training
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor (the recorders retrain here, inline)
overrides = {}

# %%
import math
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from mexlib import plots, study
from mexlib.analysis import (SnapshotRecorder, block_features, cached, fixed_sample, model_at, mutual_information,
                             principal_components, rank_profile, recorded, run_data)
from mexlib.notebook import check_parameters
from mexlib.store import RunStore

check_parameters()
plots.use_style()
if tolerance not in tolerances:
    tolerances = sorted({*tolerances, tolerance}, reverse=True)
store = RunStore(device=device, progress=profile != "smoke")
runs = study.run_study(profile, {"regime": regimes}, seeds=[seed], store=store, progress=profile != "smoke",
                       executor=executor, workers=workers, **overrides)
config = runs.run(seed, regime=regimes[0]).config
data = run_data(store, config)
sample = fixed_sample(data, "test", sample_size, seed=0)
training_sample = fixed_sample(data, "test", training_size, seed=0)  # the first images of the same draw
colors = plots.colors_for(regimes)
findings = []
started = time.perf_counter()


def measure(model, batches, halves=False):
    """Every block's rank at every tolerance and its I(T;Y): one row per (block, tolerance);
    ``halves``: also the rank on the first half of the samples (``rank_half``)."""
    features = block_features(model, batches)
    y = torch.cat([labels for _, labels in batches]).cpu()
    table = rank_profile(features, tolerances)
    if halves:
        half = rank_profile({b: m[:len(m) // 2] for b, m in features.items()}, tolerances)
        table["rank_half"] = half["rank"].to_numpy()
    information = {block: mutual_information(matrix, y, k=mi_k, dims=mi_dims) for block, matrix in features.items()}
    table["information"] = table["block"].map(information)
    return table


def input_information(batches):
    """I(X;Y) of the images themselves (on their principal components): the reference of block 0."""
    y = torch.cat([labels for _, labels in batches]).cpu()
    images = torch.cat([x.flatten(1).float().cpu() for x, _ in batches])
    return mutual_information(principal_components(images, mi_dims), y, k=mi_k, dims=None)


print(f"{config.arch} on {config.dataset}: {sum(len(b[1]) for b in sample)} "
      f"test images for the final models, {sum(len(b[1]) for b in training_sample)} per snapshot; "
      f"tolerances {tolerances}; I(T;Y) on {mi_dims} principal components, k = {mi_k}")

# %% [markdown]
# ## 1 · The final models
# One line per regime across the blocks; the panels differ in the rank's tolerance, to show
# how much the conclusion depends on it. The dashed line is the bound min(samples − 1,
# features). A rank is *settled* when it hardly moves with the number of samples: each one is
# measured again on half the samples, and a rank that changes by more than 10 % then, or that
# sits at its bound, says more about the sample count than about the block. The findings use
# the tolerance `tolerance`, and say whether its ranks are settled.

# %%
inputs = dict(sample_size=sample_size, tolerances=tolerances, dims=mi_dims, k=mi_k)
final = pd.concat([cached(store, "representations", dict(run=runs.run(seed, regime=r).run.key, **inputs),
                          lambda r=r: measure(runs.run(seed, regime=r).run.model().to(store.device), sample,
                                              halves=True))
                   .assign(regime=r) for r in regimes], ignore_index=True)
reference_information = cached(store, "input-information", dict(config=config.to_dict(), **inputs),
                               lambda: input_information(sample))
final["settled"] = ((final["rank"] - final["rank_half"]).abs() <= 0.1 * final["rank"]) & \
    (final["rank"] < 0.98 * final["bound"])
plots.save_table(final.set_index(["regime", "block", "tolerance"]), "representations_final", profile)
settled = final.groupby("tolerance")["settled"].mean().sort_index(ascending=False)
# NBVAL_CHECK_OUTPUT
print("Share of (regime, block) ranks that are settled, by tolerance: "
      + ", ".join(f"{tol:g}: {share:.0%}" for tol, share in settled.items()))

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
part = final[final["tolerance"] == tolerance]
for regime in regimes:
    rows = part[part["regime"] == regime]
    ax.plot([0, *rows["block"]], [reference_information, *rows["information"]], "o-", color=colors[regime])
ax.axhline(math.log(10), color="k", linestyle=":", linewidth=0.8)
ax.set_title("I(T;Y) (block 0: the images)", fontsize=9)
ax.set_xlabel("block")
ax.set_ylabel("nats")
plots.save_figure(fig, "representations_final", profile)
plt.show()

ranks = part.pivot(index="block", columns="regime", values="rank")[regimes]
information = part.pivot(index="block", columns="regime", values="information")[regimes]
# NBVAL_CHECK_OUTPUT
print(pd.concat({f"rank (tolerance {tolerance:g})": ranks, "I(T;Y) (nats)": information.round(3)}, axis=1)
      .to_markdown())

# %%
lines = []
blocks = [int(b) for b in sorted(part["block"].unique())]
deep = [b for b in blocks if b > len(blocks) // 2]
lines.append(f"At tolerance {tolerance:g}, {settled[tolerance]:.0%} of the ranks are settled (section 1's "
             f"rule); at {settled.index[-1]:g}, {settled.iloc[-1]:.0%}. "
             + ("The comparisons below stand on settled ranks." if settled[tolerance] == 1 else
                "Comparisons below involving unsettled ranks are weaker than they look."))
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
                                                                   f"{ranks.loc[b, 'disjoint']}" for b in deep) + ").")
    readable = [tol for tol in tolerances if settled[tol] == 1 and tol != tolerance]
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
                 f"{values.iloc[-1]:.2f} after block {blocks[-1]} (the images: {reference_information:.2f}; "
                 f"at most ln 10 = 2.30).")
findings.append(("The final models", lines))
display(Markdown("\n".join(f"* {line}" for line in lines)))

# %% [markdown]
# ## 2 · Over training
# The same measurements (tolerance `tolerance`) on the weights after every epoch. The x-axis
# counts epochs trained so far: the disjoint and mixed runs share phase 1 (the backbone alone,
# the same weights, so one line until it ends), after which mixed trains everything together;
# the disjoint regime's heads phase leaves the backbone frozen, so its blocks no longer change
# and its line ends with phase 1 (the dotted line). The joint regime trains everything from its
# first epoch.


# %%
def trajectory(regime):
    run_config = runs.run(seed, regime=regime).config
    snapshots = [s for s in recorded(store, run_config, SnapshotRecorder(), progress=profile != "smoke")
                 if s["phase"] != "heads"]  # the heads phase does not move the backbone
    inputs = dict(run=runs.run(seed, regime=regime).run.key, size=training_size, tolerance=tolerance,
                  dims=mi_dims, k=mi_k)

    def compute():
        rows = []
        for epoch, snapshot in enumerate(snapshots, start=1):
            table = measure(model_at(run_config, snapshot["state"], store.device), training_sample)
            table = table[table["tolerance"] == tolerance]
            rows.append(table.assign(epoch=epoch, phase=snapshot["phase"]))
        return pd.concat(rows, ignore_index=True)

    return cached(store, "representations-training", inputs, compute).assign(regime=regime)


over_training = pd.concat([trajectory(r) for r in regimes], ignore_index=True)
plots.save_table(over_training.set_index(["regime", "epoch", "block"]), "representations_training", profile)
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
axes[0, 0].set_ylabel(f"rank (tol. {tolerance:g})")
axes[1, 0].set_ylabel("I(T;Y) (nats)")
axes[0, 0].legend(fontsize=7)
plots.save_figure(fig, "representations_training", profile)
plt.show()

# %%
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
findings.append(("Over training", lines))
display(Markdown("\n".join(f"* {line}" for line in lines)))
print(f"measured in {time.perf_counter() - started:.0f} s (read back from the store when cached)")

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
text = plots.findings_text(findings)
plots.save_text(text, "representations_findings", profile)
display(Markdown(text))

# %% [markdown]
# Ranks and information describe what the blocks hold, not how training got there: the next
# chapter measures which exits push each block during training.
#
# Next: [05 · Gradients: which exits shape which blocks?](05_gradients.ipynb)
