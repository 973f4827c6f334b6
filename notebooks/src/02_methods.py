# %% [markdown]
# # 02 · Does the best regime depend on the early-exit method?
#
# The regimes notebook compared disjoint, joint and mixed training for one early-exit method
# (SDN). **The question of this chapter:** does its answer hold for other early-exit methods?
# The study's central table crosses the regimes with five methods, which differ in how their
# exits are built, trained and used:
#
# * **SDN** (Kaya et al. 2019): independent pooled heads, mean cross-entropy over the exits,
#   exit when the softmax confidence exceeds a threshold.
# * **PBEE** (Zhou et al. 2020): SDN's trained model with a different exit rule: leave once
#   enough consecutive exits agree (it trains nothing of its own).
# * **GPF** (Liao et al. 2021): each head merges the states of earlier heads with imitations of
#   later heads' states through a learned gate; depth-weighted loss plus an imitation loss.
# * **ZTW** (Wołczyk et al. 2021): each head also reads the previous head's logits (a cascade);
#   after training, each exit combines all heads so far in a learned geometric ensemble.
# * **L2W** (Han et al. 2022): SDN's heads, with per-sample loss weights from a small network
#   meta-learned so that each exit gets better at the samples it will actually handle.
#
# Each method's docstring in `mexlib.methods` names its source, the equations it follows and
# where this implementation chooses differently. Every method trains in every regime from the
# same phase-1 backbone per seed; SDN's runs are the regimes notebook's, taken from the store.

# %% [parameters]
profile = "cpu"
seeds = None  # None: the profile's seeds (smoke: 0, 1; cpu and paper: 0, 1, 2)
methods = ["sdn", "pbee", "gpf", "ztw", "l2w"]
regimes = ["disjoint", "joint", "mixed"]
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from mexlib import plots
from mexlib.chapters import methods as chapter
from mexlib.notebook import check_parameters

check_parameters()
plots.use_style()
pd.set_option("display.precision", 4)
result = chapter.run(profile, seeds=seeds, methods=methods, regimes=regimes, device=device, executor=executor,
                     workers=workers, **overrides)
result.save()  # every table below and the findings, into the profile's figures folder
methods_study = result["study"]
config = methods_study.runs[0].config
print(f"{len(methods_study.runs)} runs ({len(methods)} methods × {len(regimes)} regimes × seeds "
      f"{methods_study.seeds}) ready in {methods_study.seconds:.1f} s; trained now: "
      f"{len(methods_study.trained)} (the rest came from the run store)")
print(f"{config.arch} on {config.dataset}, exits after blocks {config.exit_after_blocks}, "
      f"train_size {config.train_size}")

# %% [markdown]
# ## What each method's exits cost
# Each exit's FLOPs relative to the plain backbone (counted by `torch.utils.flop_counter`),
# including every head evaluated on the way and each method's extras: GPF's imitators and
# gates, ZTW's cascade and ensembles. PBEE has SDN's heads and costs the same.

# %%
print(result.tables["methods_exit_costs"].markdown())

# %% [markdown]
# ## Accuracy against cost, one panel per method
# In each panel the three regimes' threshold sweeps (mean over seeds, band ± one standard
# deviation), each exit alone as a dot and the plain backbone as a star. PBEE's sweep runs
# over its patience values instead of confidence thresholds, so it has few points.

# %%
fig = result.figure("methods_tradeoff")
plt.show()

# %% [markdown]
# ## The methods table
# Accuracy (%) at 25, 50, 75 and 100 % of the backbone's cost, mean ± std over seeds, in the
# layout of the paper's Table 1: a row per method and regime. As in the regimes notebook, each
# seed's best point within the budget is taken from its test curve ("—": no point fits).

# %%
# NBVAL_CHECK_OUTPUT
print(result.tables["methods_budget_table"].frame.to_markdown())

# %% [markdown]
# The same with each seed's operating point fixed on the validation split and scored on test.

# %%
print(result.tables["methods_budget_table_validation"].frame.to_markdown())

# %% [markdown]
# ## Is mixed the best regime for every method?
# For each method and budget (thresholds fixed on validation): mixed's mean accuracy against the
# best other regime's, and the difference seed by seed (`gap`, its 95 % interval `low` to
# `high`, over `seeds` seeds, paired: the regimes of a seed share their initialisation).
# "ahead" or "behind" when the interval excludes zero, else "not distinguishable".

# %%
print(result.tables["methods_mixed_advantage"].markdown())

# %% [markdown]
# ## Every exit of every method
# Each exit's own accuracy (mean over seeds), per method and regime, and a summary: final-exit
# accuracy, the area under the accuracy–cost curve between 25 % and 100 % of the backbone's
# cost (mean accuracy over that range), oracle accuracy and overthinking.

# %%
print(result.tables["methods_summary"].markdown())

# %% [markdown]
# ## Training time
# Seconds of training per stored run from the runs' provenance: the phase-1 backbones once per
# seed (shared by every method, and with the regimes notebook, as are SDN's runs); PBEE reads
# SDN's runs and trains nothing, so it has no rows.

# %%
print(result["minutes"].round(1).to_markdown())

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
display(Markdown(result.section("Methods")))

# %% [markdown]
# ### Reading these results
# The paper (STUDY.md §6) finds mixed training best or near best for most methods, with the
# largest gains at small budgets. The `cpu` profile is a small setting (a 6-block ResNet on
# Fashion-MNIST, capped at 10 epochs per phase); whether a difference counts is decided by its
# interval over seeds, so read "not distinguishable" as "this many seeds cannot tell", not as
# "equal". The `paper` profile runs the same grid at the paper's scale on a GPU.
#
# Next: [03 · Loss landscapes: do the regimes end in one basin or in several?](03_landscape.ipynb)
