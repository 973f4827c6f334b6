# %% [markdown]
# # 05 · Gradients: which exits shape which blocks?
#
# When the backbone and the exits train together (phase 2: the joint regime from scratch, the
# mixed regime from a pretrained backbone), every block receives gradients from the final
# classifier and from every internal exit placed after it. The paper's third explanation is
# about this mix: "in the joint regime, optimisation focuses on subnetworks in the middle of the
# architecture, where gradients from intermediate classifiers exert the strongest influence".
# **The question of this chapter:** how much of each block's gradient comes from the internal
# exits, and how does that differ between joint and mixed training?
#
# **What is recorded.** Every `every`-th training step of phase 2, the gradient that each
# exit's loss *alone* sends to each block's parameters (the stem is block 0), as its norm
# ‖∇_block L_k‖, by `mexlib.analysis.GradientRecorder` while the run trains once more. The
# recorder differentiates the step's own graph and draws no random numbers, so the recorded run
# equals the stored one (tested bit for bit; `recorded` warns here if the retrained run's test
# logits differ from the stored run's). The training loss is the mean
# of the exits' losses, so every exit's gradient enters the update with the same weight 1/K.
#
# **The share of the internal exits.** The exits' gradients are vectors that partly cancel; we
# record their norms, and measure a block's share from the internal exits as
# Σ_{k internal} ‖∇_block L_k‖ / Σ_k ‖∇_block L_k‖, the share of the gradient *magnitude* the
# block receives from them. An internal exit sends nothing to the blocks after it.

# %% [parameters]
profile = "cpu"
regimes = ["joint", "mixed"]  # the regimes with a phase 2 (disjoint's backbone never sees an exit)
seed = 0
every = 10  # record every this many training steps
windows = 3  # heat maps over training: the recorded steps split into this many equal parts
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor (the recorders retrain here, inline)
overrides = {}

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.colors import LogNorm

from mexlib import plots, study
from mexlib.analysis import GradientRecorder, recorded
from mexlib.notebook import check_parameters
from mexlib.store import RunStore
from mexlib.train import build_model

check_parameters()
plots.use_style()
unknown = set(regimes) - {"joint", "mixed"}
if unknown:
    raise ValueError(f"regimes {sorted(unknown)} have no phase 2 to record; valid regimes: joint, mixed")
store = RunStore(device=device, progress=profile != "smoke")
runs = study.run_study(profile, {"regime": regimes}, seeds=[seed], store=store, progress=profile != "smoke",
                       executor=executor, workers=workers, **overrides)
started = time.perf_counter()
records = {r: recorded(store, runs.run(seed, regime=r).config, GradientRecorder(every=every),
                       progress=profile != "smoke") for r in regimes}
num_exits = runs.num_exits
final_exit = num_exits - 1
blocks = [b for b in records[regimes[0]]["block"].unique() if b != "heads"]
colors = plots.colors_for(regimes)
findings = []
print(", ".join(f"{r}: {records[r].groupby(['epoch', 'step']).ngroups} recorded steps" for r in regimes)
      + f" (every {every}); blocks {blocks}; exits 0–{final_exit} (exit {final_exit} is the final classifier)")

# %% [markdown]
# ## 1 · Exits × blocks
# The mean gradient norm each exit's loss sends to each block, over the recorded steps of each
# part of training (columns: the first, middle and last part). One colour scale for every
# panel. Empty cells: an exit sends nothing to the blocks after it.


# %%
parts = min(windows, *(r.groupby(["epoch", "step"]).ngroups for r in records.values()))  # no empty part


def windowed(frame):
    order = frame[["epoch", "step"]].drop_duplicates().reset_index(drop=True)
    order["window"] = np.arange(len(order)) * parts // len(order)
    return frame.merge(order, on=["epoch", "step"])


frames = {r: windowed(records[r][records[r]["block"] != "heads"]) for r in regimes}
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
        axes[i, w].set_xticks(range(len(blocks)), [b.split()[0] for b in blocks], fontsize=7)
        axes[i, w].grid(False)
    axes[i, 0].set_ylabel("exit")
for ax in axes[-1]:
    ax.set_xlabel("block (0: stem)")
fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="mean ‖∇ block L_exit‖")
plots.save_figure(fig, "gradients_heatmaps", profile)
plt.show()

# %% [markdown]
# ## 2 · The internal exits' share of each block's gradient
# Left: the share over the whole of phase 2, per block. Right: the same over training, one line
# per block, for each regime.


# %%
def internal_share(frame, by):
    summed = frame.assign(internal=frame["exit"] != final_exit).groupby([*by, "internal"])["norm"].sum().unstack()
    return (summed[True] / summed.sum(axis=1)).rename("share")


shares = pd.DataFrame({r: internal_share(frames[r], ["block"]) for r in regimes}).reindex(blocks)
over_time = {r: internal_share(frames[r], ["epoch", "block"]).unstack("block").reindex(columns=blocks)
             for r in regimes}
plots.save_table(shares, "gradients_internal_share", profile, percent=True)
fig, axes = plt.subplots(1, 1 + len(regimes), figsize=(3.6 * (1 + len(regimes)), 3.2), squeeze=False)
axes = axes[0]
for regime in regimes:
    axes[0].plot(range(len(blocks)), 100 * shares[regime], "o-", color=colors[regime], label=regime)
axes[0].axhline(50, color="k", linestyle=":", linewidth=0.8)
axes[0].set_xticks(range(len(blocks)), [b.split()[0] for b in blocks])
axes[0].set_xlabel("block (0: stem)")
axes[0].set_ylabel("share from internal exits (%)")
axes[0].legend(fontsize=8)
cmap = plt.get_cmap("viridis")
for ax, regime in zip(axes[1:], regimes):
    for j, block in enumerate(blocks):
        ax.plot(over_time[regime].index + 1, 100 * over_time[regime][block], color=cmap(j / max(len(blocks) - 1, 1)),
                label=block.split()[0])
    ax.set_title(regime, fontsize=9)
    ax.set_xlabel("epoch of phase 2")
    ax.set_ylim(0, 100)
axes[-1].legend(title="block", fontsize=7, ncol=2)
plots.save_figure(fig, "gradients_internal_share", profile)
plt.show()
# NBVAL_CHECK_OUTPUT
print((100 * shares).round(1).to_markdown())

# %% [markdown]
# The share counts exits: the first blocks sit before every exit, so most of their gradient
# comes from internal ones. Where do the internal exits push *hardest*? Below, the internal
# exits' gradient per parameter of each block: Σ_{k internal} ‖∇_block L_k‖ / √(block's
# parameters), the root-mean-square gradient they put on one of its weights.
#
# **The rule used below.** The backbone's blocks (the stem apart) are split into thirds by
# depth; the paper's statement holds for a regime when the internal exits' share is above one
# half in the middle third and their gradient per parameter is highest there.

# %%
model = build_model(runs.run(seed, regime=regimes[0]).config)
sizes = {"0 stem": sum(p.numel() for p in model.backbone.stem.parameters()),
         **{f"{i} block": sum(p.numel() for p in block.parameters())
            for i, block in enumerate(model.backbone.blocks, start=1)}}
per_parameter = pd.DataFrame({r: frames[r][frames[r]["exit"] != final_exit].groupby("block")["norm"].sum()
                              .reindex(blocks).fillna(0) / frames[r][["epoch", "step"]].drop_duplicates().shape[0]
                              / np.sqrt([sizes[b] for b in blocks]) for r in regimes})
plots.save_table(per_parameter, "gradients_internal_per_parameter", profile)
# NBVAL_CHECK_OUTPUT
print(per_parameter.map(lambda v: f"{v:.2e}").to_markdown())

# %%
lines = []
backbone_blocks = [b for b in blocks if not b.startswith("0 ")]
third = max(len(backbone_blocks) // 3, 1)
middle = backbone_blocks[third:len(backbone_blocks) - third] or backbone_blocks
for regime in regimes:
    column = shares.loc[backbone_blocks, regime]
    strength = per_parameter.loc[backbone_blocks, regime]
    peak = strength.idxmax()
    holds = peak in middle and all(column[b] > 0.5 for b in middle)
    lines.append(f"{regime}: the internal exits' share is " + ", ".join(f"{column[b]:.0%}" for b in middle)
                 + f" in the middle blocks {[b.split()[0] for b in middle]} (highest, {column.max():.0%}, at block "
                 f"{column.idxmax().split()[0]}); their gradient per parameter peaks at block {peak.split()[0]}. "
                 "The paper's statement " + ("holds" if holds else "does not hold") + f" for {regime} by the rule "
                 "above.")
if set(regimes) == {"joint", "mixed"}:
    higher = [b for b in backbone_blocks if shares.loc[b, "joint"] > shares.loc[b, "mixed"]]
    lines.append(f"The internal exits' share is higher in joint than in mixed training in {len(higher)} of "
                 f"{len(backbone_blocks)} blocks ({', '.join(b.split()[0] for b in higher) or 'none'}).")
    totals = {r: frames[r].groupby("block")["norm"].sum().reindex(blocks) / frames[r][["epoch", "step"]]
              .drop_duplicates().shape[0] for r in regimes}
    lines.append("Summed gradient norm per recorded step (all exits), joint / mixed per block: "
                 + ", ".join(f"{b.split()[0]}: {totals['joint'][b] / totals['mixed'][b]:.1f}×" for b in blocks) + ".")
findings.append(("Gradient contributions", lines))
display(Markdown("\n".join(f"* {line}" for line in lines)))
print(f"read and summarised in {time.perf_counter() - started:.0f} s")

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
text = plots.findings_text(findings)
plots.save_text(text, "gradients_findings", profile)
display(Markdown(text))

# %% [markdown]
# Next: [06 · Ablations: what else decides how a multi-exit model should be trained?](06_ablations.ipynb)
