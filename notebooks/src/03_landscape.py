# %% [markdown]
# # 03 · Loss landscapes: do the regimes end in one basin or in several?
#
# The regimes notebook showed *that* the regimes differ; this chapter and the next two ask
# *why*. The paper's first explanation is geometric: disjoint and mixed training, which both
# start from the same pretrained backbone, end in the same basin of the loss, while joint
# training from scratch ends in another. **The question of this chapter:** do our stored runs
# show that, and what does the loss look like around each solution?
#
# Two measurements, both on the stored runs of the regimes notebook (nothing is trained here):
#
# 1. **The loss on a plane** around each solution θ: the loss at θ + a·d₁ + b·d₂ for two random
#    Gaussian directions d₁, d₂, *filter-normalised* (Li et al., "Visualizing the Loss
#    Landscape of Neural Nets", NeurIPS 2018): each filter of a direction (a conv output
#    channel, a row of a linear layer) is scaled to the norm of the model's matching filter,
#    so that a step of 1 means the same relative change in every layer. Biases and
#    normalisation parameters do not move (Li et al.'s "ignore" choice). Drawn for the total
#    multi-exit loss (the mean over exits, the training loss) and for each exit's own loss, on
#    one fixed batch of test images without augmentation.
# 2. **Linear mode connectivity**: the loss and accuracy of every exit along the straight line
#    θ(α) = (1 − α)·θ_A + α·θ_B between two solutions. A *barrier* (the highest loss on the path
#    minus the mean of its two ends) near zero means the two solutions lie in one basin; a high
#    one, that a ridge separates them (Frankle et al., ICML 2020).
#
# **BatchNorm.** A ResNet's stored BatchNorm statistics belong to its own weights. Every
# perturbed or interpolated model here gets its BatchNorm statistics recomputed on a fixed set
# of training images (no augmentation) before its loss is measured; without that, the
# statistics of the wrong weights inflate every barrier (Garipov et al. 2018; Frankle et al.
# 2020). The cost: one forward pass over those images at every point of every plane and path.

# %% [parameters]
profile = "cpu"
regimes = ["disjoint", "joint", "mixed"]
seed = 0  # the runs whose landscapes are drawn
reference_seed = 1  # a second seed of every regime, for the seed-to-seed reference paths
steps = None  # points per direction of the plane (steps × steps in all); None: 25 (smoke: 5)
span = 1.0  # the plane covers [-span, span]² in units of the filter-normalised directions
scope = "all"  # which weights the plane moves: "all", only the "backbone" or only the "heads"
direction_seed = 0  # seeds the random directions
eval_size = None  # test images in the fixed evaluation batch; None: 256 (smoke: 64)
bn_size = None  # training images on which BatchNorm statistics are recomputed (one batch); None: 256 (smoke: 64)
path_steps = None  # points on each interpolation path, its ends included; None: 21 (smoke: 5)
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor
overrides = {}

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.colors import LogNorm

from mexlib import plots, study
from mexlib.analysis import SCOPES, barrier, cached, fixed_sample, interpolate, joined, loss_surface, run_data
from mexlib.notebook import check_parameters
from mexlib.store import RunStore

check_parameters()
plots.use_style()
# the sizes left at None: the smoke profile's toy scale (seconds, not minutes) or the study's
smoke = profile == "smoke"
steps = steps or (5 if smoke else 25)
eval_size = eval_size or (64 if smoke else 256)
bn_size = bn_size or (64 if smoke else 256)
path_steps = path_steps or (5 if smoke else 21)
if scope not in SCOPES:
    raise ValueError(f"unknown scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
store = RunStore(device=device, progress=profile != "smoke")
runs = study.run_study(profile, {"regime": regimes}, seeds=sorted({seed, reference_seed}), store=store,
                       progress=profile != "smoke", executor=executor, workers=workers, **overrides)
config = runs.run(seed, regime=regimes[0]).config
data = run_data(store, config)
batch = joined(fixed_sample(data, "test", eval_size, seed=0))
bn_batches = fixed_sample(data, "train", bn_size, seed=1)
models = {(r, s): runs.run(s, regime=r).run.model().to(store.device) for r in regimes for s in runs.seeds}
exits = [f"exit {k}" for k in range(runs.num_exits)]
findings = []
started = time.perf_counter()
print(f"{config.arch} on {config.dataset}: {len(regimes)} regimes × seeds {runs.seeds}; plane {steps}×{steps} "
      f"over ±{span} moving {scope} weights; {len(batch[1])} test images, BatchNorm on {bn_size} training images")

# %% [markdown]
# ## 1 · The loss around each solution
# One plane per regime (seed `seed`), with the same colour scale for every regime in a row: the
# top row is the total loss, the rows below each exit's own loss, the first exit at the top. The
# cross marks the trained model. Computed once and kept in the run store (`analyses/`), so the
# notebook run again reads the planes back.


# %%
def plane(regime):
    run = runs.run(seed, regime=regime).run
    inputs = dict(run=run.key, steps=steps, span=span, scope=scope, seed=direction_seed,
                  eval_size=eval_size, bn_size=bn_size)
    return cached(store, "plane", inputs, lambda: loss_surface(models[(regime, seed)], batch, bn_batches, steps,
                                                               span, scope, direction_seed))


planes = {r: plane(r) for r in regimes}
rows = ["total"] + exits
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
plots.save_figure(fig, "landscape_planes", profile)
plt.show()

# %% [markdown]
# How wide is each basin? Below, for each regime and loss: the loss at the solution, and the
# share of the plane where the loss stays below twice that value (a wider, flatter basin gives a
# larger share; the share depends on `span`, so only the comparison between regimes means
# something).


# %%
def basin_table(planes):
    table = []
    for regime, surface in planes.items():
        centre = surface.loc[(surface["a"].abs() + surface["b"].abs()).idxmin()]
        for row in rows:
            table.append(dict(regime=regime, loss=row, at_solution=centre[row],
                              share_below_twice=float((surface[row] < 2 * centre[row]).mean())))
    return pd.DataFrame(table)


basins = basin_table(planes)
wide = basins.pivot(index="loss", columns="regime", values="share_below_twice").loc[rows, regimes]
plots.save_table(basins.set_index(["regime", "loss"]), "landscape_basins", profile)
# NBVAL_CHECK_OUTPUT
print(basins.pivot(index="loss", columns="regime", values="at_solution").loc[rows, regimes].round(3).to_markdown())
print(wide.round(3).to_markdown())

# %%
lines = []
total = wide.loc["total"]
lines.append("Share of the plane where the total loss stays below twice its value at the solution: "
             + ", ".join(f"{r} {total[r]:.0%}" for r in regimes) + f" (plane ±{span}, {scope} weights); "
             + ("the same for every regime." if total.nunique() == 1 else f"widest: {total.idxmax()}."))
early, late = exits[0], exits[-1]
lines.append(f"The first exit's basin ({early}) is " + ", ".join(f"{r} {wide.loc[early, r]:.0%}" for r in regimes)
             + f"; the final exit's ({late}) " + ", ".join(f"{r} {wide.loc[late, r]:.0%}" for r in regimes) + ".")
findings.append(("The loss around each solution", lines))
display(Markdown("\n".join(f"* {line}" for line in lines)))

# %% [markdown]
# ## 2 · Linear paths between solutions
# Pairs of solutions: the three pairs of regimes (seed `seed`), and, as the reference for what
# two independent solutions look like, each regime's seed `seed` against its seed
# `reference_seed`. Disjoint and mixed runs of one seed start from the same phase-1 backbone.


# %%
pairs = [(a, b) for i, a in enumerate(regimes) for b in regimes[i + 1:]]
reference = [r for r in regimes if reference_seed != seed]


def path(a, b):
    keys = [runs.run(s, regime=r).run.key for r, s in (a, b)]
    inputs = dict(runs=keys, steps=path_steps, eval_size=eval_size, bn_size=bn_size)
    return cached(store, "path", inputs, lambda: interpolate(models[a], models[b], batch, bn_batches, path_steps))


paths = {f"{a} – {b}": path((a, seed), (b, seed)) for a, b in pairs}
ends = {f"{a} – {b}": (a, b) for a, b in pairs}  # the regimes at the ends of each path between regimes
paths.update({f"{r} seed {seed} – {reference_seed}": path((r, seed), (r, reference_seed)) for r in reference})
fig, axes = plt.subplots(2, len(paths), figsize=(2.9 * len(paths), 5.2), squeeze=False, sharex=True, sharey="row")
cmap = plt.get_cmap("viridis")
for j, (name, frame) in enumerate(paths.items()):
    for k in range(runs.num_exits):
        color = cmap(k / max(runs.num_exits - 1, 1))
        axes[0, j].plot(frame["alpha"], frame[f"loss {k}"], color=color, label=f"exit {k}")
        axes[1, j].plot(frame["alpha"], 100 * frame[f"accuracy {k}"], color=color)
    axes[0, j].plot(frame["alpha"], frame["total"], "k--", label="total")
    axes[0, j].set_title(name, fontsize=9)
    axes[1, j].set_xlabel("α")
axes[0, 0].set_ylabel("loss")
axes[0, 0].set_yscale("log")
axes[1, 0].set_ylabel("accuracy (%)")
axes[0, -1].legend(fontsize=7, loc="upper right")
plots.save_figure(fig, "landscape_paths", profile)
plt.show()

# %%
barriers = pd.DataFrame({name: {"total": barrier(frame), **{e: barrier(frame, f"loss {k}") for k, e in enumerate(exits)},
                                "ends (total)": (frame["total"].iloc[0] + frame["total"].iloc[-1]) / 2}
                         for name, frame in paths.items()}).T
barriers.index.name = "path"
plots.save_table(barriers, "landscape_barriers", profile)
# NBVAL_CHECK_OUTPUT
print(barriers.round(3).to_markdown())

# %% [markdown]
# **The rule used below.** A path has *no barrier* when its total-loss barrier is below 10 % of
# the mean loss of its ends, and *a barrier* otherwise; the seed-to-seed paths show how high a
# barrier between two unrelated solutions is on this problem.

# %%
lines = []


def verdict(name):
    row = barriers.loc[name]
    relative = row["total"] / row["ends (total)"]
    return relative < 0.1, f"{name}: barrier {row['total']:.3f} ({relative:.0%} of its ends' loss)"


seed_paths = [name for name in paths if name not in ends]
reference_barrier = barriers.loc[seed_paths, "total"].mean() if seed_paths else None
for name in paths:
    flat, text = verdict(name)
    if reference_barrier and name in ends:
        text += f", {barriers.loc[name, 'total'] / reference_barrier:.0%} of the seed-to-seed paths' mean barrier"
    lines.append(text + (": no barrier" if flat else ": a barrier"))
claim = None
if {"disjoint", "mixed", "joint"} <= set(regimes):
    same, _ = verdict("disjoint – mixed")
    joint_apart = all(not verdict(n)[0] for n, regimes_at_ends in ends.items() if "joint" in regimes_at_ends)
    claim = same and joint_apart
    lines.append("The paper's claim (disjoint and mixed share a basin, joint lies in another) "
                 + ("holds here" if claim else "does not hold here") + ": disjoint–mixed has "
                 + ("no barrier" if same else "a barrier") + ", and the paths from joint "
                 + ("all cross a barrier" if joint_apart else "do not all cross a barrier") + ".")
findings.append(("Linear paths between solutions", lines))
display(Markdown("\n".join(f"* {line}" for line in lines)))
print(f"planes and paths in {time.perf_counter() - started:.0f} s (read back from the store when cached)")

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
text = plots.findings_text(findings)
plots.save_text(text, "landscape_findings", profile)
display(Markdown(text))

# %% [markdown]
# A flat plane around a solution and a path without a barrier are evidence about geometry, not
# about accuracy: the next chapter looks inside the blocks.
#
# Next: [04 · Representations: what do the blocks keep under each regime?](04_representations.ipynb)
