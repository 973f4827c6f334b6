# %% [markdown]
# # 06 · Ablations: what else decides how a multi-exit model should be trained?
#
# The regimes notebook compares mixed training (backbone first, then everything together) with
# the other regimes for SDN; its findings say where mixed leads. This notebook varies, one at a time, the
# choices that comparison held fixed, each through the same study piece (a grid of
# configurations → runs from the store → offline evaluation → tables). **The question of this
# chapter:** does the ranking of the regimes survive each change?
#
# 1. **Pretraining length**: a fixed budget of N epochs split k : N − k between the backbone
#    alone (phase 1) and everything together (phase 2). k = 0 is the joint regime, k = N the
#    disjoint one (the backbone for N epochs, then the heads alone), anything between is mixed.
# 2. **Exit criterion**: max-softmax confidence, normalised entropy and PBEE's patience on the
#    same stored runs (no training).
# 3. **Head depth**: SDN's pooled one-layer head against a head with two 3×3 conv layers first.
# 4. **Placement**: heads after every block, after every second block, only in the second half.
# 5. **Loss weighting**: the mean over exits (the default), depth-proportional weights ramped
#    over training (SDN's original loss) and gradient equilibrium (each block's gradient the
#    mean of the exits behind it; `mexlib.methods.weighting` has both definitions), trained
#    jointly and mixed, against the mixed regime with the default loss.
#
# Runs that a section shares with another notebook (the regimes notebook's SDN runs, the
# phase-1 backbones) come from the run store.
#
# The paper ran ablations on the loss weighting, head depth, placement and the entropy
# criterion, but their outcomes are not known to us (`STUDY.md` §6). So each section checks the
# paper's central claim under its change: mixed training is best or near best (not behind the
# best other regime by the 95 % interval over seeds) at every budget.

# %% [parameters]
profile = "cpu"
seeds = None  # seeds of every section; None: the profile's seeds (3 in the cpu profile)
ablation_seeds = None  # seeds of the sections that train new runs; None: the same as seeds
regimes = ["disjoint", "joint", "mixed"]
total_epochs = None  # N of the pretraining split; None: the profile's epoch cap per phase
policies = ["confidence", "entropy", "patience"]
heads = ["pool", "conv2"]
placements = None  # None: every block, every second block, the second half of the backbone
weightings = ["sdn", "sdn-depth", "sdn-ge"]
weighting_regimes = ["joint", "mixed"]
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from mexlib import plots
from mexlib.chapters import ablations as chapter
from mexlib.notebook import check_parameters

check_parameters()
plots.use_style()
pd.set_option("display.precision", 4)
result = chapter.run(profile, seeds=seeds, ablation_seeds=ablation_seeds, regimes=regimes, total_epochs=total_epochs,
                     policies=policies, heads=heads, placements=placements, weightings=weightings,
                     weighting_regimes=weighting_regimes, device=device, executor=executor, workers=workers,
                     **overrides)
result.save()  # every table below and the findings, into the profile's figures folder
print(f"{result['base'].arch} ({result['num_blocks']} blocks) on {result['base'].dataset}, train_size "
      f"{result['base'].train_size}; pretraining splits k = {result['splits']} of N = {result['total_epochs']}; "
      f"placements {result['placements']}")

# %% [markdown]
# ## Seeds
# Every section uses the profile's seeds (three in the `cpu` profile). A difference is judged
# seed by seed: the 95 % Student-t interval of the per-seed differences (paired; thresholds
# fixed on validation) must exclude zero for "ahead" or "behind", otherwise the two are "not
# distinguishable" with that many seeds. `ablation_seeds` can cut the sections that train new
# runs to fewer seeds (a `cpu`-profile run takes 2 to 7 minutes of one core); with one seed
# there is no interval, and such a difference is reported as "one seed", not judged.

# %% [markdown]
# ## 2 · Exit criterion (all seeds, no training)
# The same stored runs under three exit rules: max-softmax confidence above τ, normalised
# entropy below τ (100 thresholds each), and patience (exit once p + 1 consecutive exits agree,
# p = 0 … K − 1: few operating points).

# %%
fig = result.figure("ablation_criterion_tradeoff")
plt.show()
# NBVAL_CHECK_OUTPUT
print(result.tables["ablation_criterion_budget_table"].frame.to_markdown())
display(Markdown(result.section("Exit criterion")))

# %% [markdown]
# ## 1 · Pretraining length
# Of N epochs, phase 1 gets k and phase 2 gets N − k (k = N/4 and 3N/4 rounded up; early
# stopping can end either phase sooner, as in every run). k = N has no phase 2 and is the
# disjoint regime: its heads then train alone for up to the heads phase's cap, on top of the N
# epochs (heads-only epochs are cheap, but they are epochs the other splits do not get), and
# k = 0 is the joint regime. Every split between gets fewer epochs of each phase than the
# regimes notebook's mixed runs (N of each). The star is absent here: the backbones differ in
# more than their seed.

# %%
fig = result.figure("ablation_pretraining_tradeoff")
plt.show()
print(result.tables["ablation_pretraining_budget_table"].frame.to_markdown())
display(Markdown(result.section("Pretraining length")))

# %% [markdown]
# ## 3 · Head depth
# SDN's pooled head (learnable max/avg-pool mix to 4×4, one linear layer) against `conv2`: two
# 3×3 conv-BN-ReLU layers at the block's width before it. Deeper heads cost more, so the
# exits' costs move; the table below gives them.

# %%
fig = result.figure("ablation_heads_tradeoff")
plt.show()
print(result.tables["ablation_heads_budget_table"].frame.to_markdown())
print(result.tables["ablation_heads_exit_costs"].markdown())
display(Markdown(result.section("Head depth")))

# %% [markdown]
# ## 4 · Placement
# Heads after every block (the default), after every second block, and only after the blocks
# of the second half; the backbone's own classifier is always the last exit.

# %%
fig = result.figure("ablation_placement_tradeoff")
plt.show()
print(result.tables["ablation_placement_budget_table"].frame.to_markdown())
display(Markdown(result.section("Placement")))

# %% [markdown]
# ## 5 · Loss weighting
# The default mean over exits, depth-proportional weights ramped over training (`sdn-depth`)
# and gradient equilibrium (`sdn-ge`), each trained jointly and mixed. Can a loss weighting
# make joint training as good as mixed training with the plain mean?

# %%
fig = result.figure("ablation_weighting_tradeoff")
plt.show()
print(result.tables["ablation_weighting_budget_table"].frame.to_markdown())
display(Markdown(result.section("Loss weighting")))

# %% [markdown]
# ## Training time
# Seconds of training per stored run of each section, from the runs' provenance. Runs this
# notebook shares with the regimes notebook (its SDN runs and phase-1 backbones, which the
# criterion section reads) are not this notebook's cost and are left out; a run two sections
# share counts once, in the first.

# %%
print(result["minutes"].round(1).to_markdown())
print(f"In all: {result['minutes'].sum():.1f} minutes of training for {result['runs_trained']} runs and backbones "
      f"(as stored; runs trained in parallel overlap in wall-clock time).")

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
display(Markdown(result.findings_markdown()))

# %% [markdown]
# Next: [07 · Architectures: does the best regime depend on the network?](07_architectures.ipynb)
