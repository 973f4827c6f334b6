# %% [markdown]
# # 03 · Loss landscapes: do the regimes end in one basin or in several?
#
# The regimes notebook showed *that* the regimes differ; this chapter and the next two ask
# *why*. The paper's first explanation is geometric: disjoint and mixed training, which both
# start from the same pretrained backbone, end in the same basin of the loss, while joint
# training from scratch ends in another. **The question of this chapter:** do our stored runs
# show that, and what does the loss look like around each solution?
#
# Two measurements, on the stored runs of the regimes notebook and two controls trained here:
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
#    θ(α) = (1 − α)·θ_A + α·θ_B between two solutions. A *barrier* (the largest excess of the
#    loss on the path over the straight line between its two ends' losses, as Frankle et al.,
#    ICML 2020, define it) near zero means the two solutions lie in one basin; a high one, that
#    a ridge separates them. Measured for every seed, with a 95 % interval over the seeds.
#
# **Two controls.** Disjoint and mixed runs of one seed start from one phase-1 backbone *and*
# from identical initial heads (the heads draw from their own seed), so a flat path between them
# could say no more than "fine-tuning from one checkpoint stays near it". So this chapter also
# trains (a) **continued**: the phase-1 backbone trained alone for as many epochs as mixed's
# phase 2 (the same warm restart and batches), then heads fitted on it as in disjoint, and
# (b) **mixed, other heads**: mixed with another initialisation of its heads (`head_init=1`).
#
# **BatchNorm.** A ResNet's stored BatchNorm statistics belong to its own weights. Every
# perturbed or interpolated model here gets its BatchNorm statistics recomputed on a fixed set
# of training images (no augmentation) before its loss is measured; without that, the
# statistics of the wrong weights inflate every barrier (Garipov et al. 2018; Frankle et al.
# 2020). The cost: one forward pass over those images at every point of every plane and path.

# %% [parameters]
profile = "cpu"
regimes = ["disjoint", "joint", "mixed"]
seeds = None  # None: the profile's (smoke: 0, 1; cpu and paper: 0, 1, 2); planes for the first
controls = True  # train and measure the two controls (needs disjoint and mixed among the regimes)
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
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from mexlib import plots
from mexlib.chapters import landscape as chapter
from mexlib.notebook import check_parameters

check_parameters()
plots.use_style()
result = chapter.run(profile, regimes=regimes, seeds=seeds, controls=controls, steps=steps, span=span,
                     scope=scope, direction_seed=direction_seed, eval_size=eval_size, bn_size=bn_size,
                     path_steps=path_steps, device=device, executor=executor, workers=workers, **overrides)
result.save()  # every table below and the findings, into the profile's figures folder
config = result["config"]
print(f"{config.arch} on {config.dataset}: {len(regimes)} regimes × seeds {result['seeds']}; planes "
      f"{result['steps']}×{result['steps']} over ±{span} moving {scope} weights; {result['eval_size']} test images, "
      f"BatchNorm on {result['bn_size']} training images")
print(f"planes and paths in {result['seconds']:.0f} s (read back from the store when cached)")

# %% [markdown]
# ## 1 · The loss around each solution
# One plane per regime (the first seed), with the same colour scale for every regime in a row: the
# top row is the total loss, the rows below each exit's own loss, the first exit at the top. The
# cross marks the trained model. Computed once and kept in the run store (`result-*` entries), so the
# notebook run again reads the planes back.


# %%
fig = result.figure("landscape_planes")
plt.show()

# %% [markdown]
# How wide is each basin? Below, for each regime and loss: the loss at the solution, and the
# share of the plane where the loss stays below twice that value (a wider, flatter basin gives a
# larger share; the share depends on `span`, so only the comparison between regimes means
# something).


# %%
# NBVAL_CHECK_OUTPUT
print(result["at_solution"].round(3).to_markdown())
print(result["wide"].round(3).to_markdown())
display(Markdown(result.section("The loss around each solution")))

# %% [markdown]
# ## 2 · Linear paths between solutions
# Pairs of solutions, for every seed: the three pairs of regimes; the controls (disjoint against
# the continued backbone, mixed against mixed from other heads, disjoint against that); and, as
# the reference for what two independent solutions look like, each regime against itself from
# the next seed. Drawn below for the first seed; then every path's barrier over all seeds.


# %%
fig = result.figure("landscape_paths")
plt.show()

# %%
fig = result.figure("landscape_barriers")
plt.show()
# NBVAL_CHECK_OUTPUT
print(result["intervals"].round(3).to_markdown())

# %% [markdown]
# **How the barriers are compared.** No fixed cut-off decides "a barrier": two paths are compared
# by their per-seed difference (paired by seed) with its 95 % t interval, and one is "higher" or
# "lower" only when that interval excludes zero. The paper's claim is read as "the path between
# disjoint and mixed is lower than every path from joint"; the controls say how much of that the
# shared start explains. The per-seed barriers of every exit: `figures/landscape_barriers.csv`.

# %%
display(Markdown(result.section("Linear paths between solutions")))

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
display(Markdown(result.findings_markdown()))

# %% [markdown]
# A flat plane around a solution and a path without a barrier are evidence about geometry, not
# about accuracy: the next chapter looks inside the blocks.
#
# Next: [04 · Representations: what do the blocks keep under each regime?](04_representations.ipynb)
