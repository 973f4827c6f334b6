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
seeds = None  # None: the profile's seeds (smoke: 0, 1; cpu and paper: 0, 1, 2); the heat maps show the first
every = 10  # record every this many training steps
windows = 3  # heat maps over training: the recorded steps split into this many equal parts
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor (the recorders retrain here, inline)
overrides = {}

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from mexlib import plots
from mexlib.chapters import gradients as chapter
from mexlib.notebook import check_parameters

check_parameters()
plots.use_style()
result = chapter.run(profile, regimes=regimes, seeds=seeds, every=every, windows=windows, device=device,
                     executor=executor, workers=workers, **overrides)
result.save()  # every table below and the findings, into the profile's figures folder
final_exit = result["num_exits"] - 1
print(", ".join(f"{r} seed {s}: {steps} recorded steps" for (r, s), steps in result["steps"].items())
      + f" (every {every}); blocks {result['blocks']}; exits 0–{final_exit} (exit {final_exit} is the final classifier)")
print(f"read and summarised in {result['seconds']:.0f} s")

# %% [markdown]
# ## 1 · Exits × blocks
# The mean gradient norm each exit's loss sends to each block, over the recorded steps of each
# part of training (columns: the first, middle and last part). One colour scale for every
# panel. Empty cells: an exit sends nothing to the blocks after it.


# %%
fig = result.figure("gradients_heatmaps")
plt.show()

# %% [markdown]
# ## 2 · The internal exits' share of each block's gradient
# Left: the share over the whole of phase 2, per block (mean over seeds, with its 95 % interval),
# and dashed, **the share a count gives**: of the exits whose loss reaches the block, the
# internal ones. The stem and the first block feed every exit (five of six are internal: 83 %),
# the last block only the final one (0 %); a block whose share equals the count gets from the
# internal exits just what their number implies. Right: the share over training, one line per
# block, for each regime (first seed).


# %%
fig = result.figure("gradients_internal_share")
plt.show()
# NBVAL_CHECK_OUTPUT
print(result.tables["gradients_internal_share"].markdown())

# %% [markdown]
# The table: per block and regime, the share, the count, the **excess** of the share over the
# count with its 95 % interval over seeds (Student-t), in percent. An excess whose interval lies
# above zero means the internal exits weigh on that block more than their number alone implies:
# the evidence the paper's statement needs, block by block. Where do the internal exits push
# *hardest*? Below, their gradient per parameter of each block, mean over seeds:
# Σ_{k internal} ‖∇_block L_k‖ / √(block's parameters), the root-mean-square gradient they put
# on one of its weights. Early blocks are narrow (few parameters), so this normalisation puts
# them ahead by construction: read it within a column across regimes, not down a column.

# %%
# NBVAL_CHECK_OUTPUT
print(result["per_parameter"].map(lambda v: f"{v:.2e}").to_markdown())

# %%
display(Markdown(result.section("Gradient contributions")))

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
display(Markdown(result.findings_markdown()))

# %% [markdown]
# Next: [06 · Ablations: what else decides how a multi-exit model should be trained?](06_ablations.ipynb)
