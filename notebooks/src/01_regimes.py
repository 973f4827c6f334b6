# %% [markdown]
# # 01 · Disjoint, joint or mixed? The main regime comparison
#
# A **multi-exit model** is a backbone network with small internal classifiers ("exits")
# attached after some of its blocks. At inference a sample leaves at the first exit that is
# confident enough, so easy samples cost less computation. **The question of this chapter:**
# how should such a model be trained?
#
# * **disjoint**: train the backbone alone (phase 1), then freeze it and train only the exits
#   (phase 3). The final exit is exactly the stand-alone backbone.
# * **joint**: train the backbone and all exits together from scratch (phase 2).
# * **mixed** (the paper's proposal): train the backbone alone first (phase 1), then everything
#   together (phase 2), starting from the phase-1 weights with fresh exits.
#
# This notebook trains (or loads from the run store) the three regimes for several seeds,
# and beside them two **equal-compute controls** (mixed trains its backbone in phase 1 *and* in
# phase 2, twice as many epochs as the others; the controls give joint, and disjoint's backbone,
# as many epochs),
# evaluates every exit once on the test set, and simulates the early-exit rule offline: for a
# sweep of 100 confidence thresholds τ, a sample leaves at the first exit whose top softmax
# probability exceeds τ. Each threshold gives one point of *accuracy against expected cost*.
# Costs are FLOPs relative to the plain backbone (100 % = the backbone without any exit).

# %% [parameters]
profile = "cpu"
seeds = None  # None: the profile's seeds for this chapter (smoke: 0, 1; cpu: 0 to 4; paper: 0, 1, 2)
regimes = ["disjoint", "joint", "mixed"]
method = "sdn"
policy = None  # None: the method's exit rule (SDN: max-softmax confidence)
distribution_threshold = 0.9  # the confidence threshold at which exits taken are counted
controls = True  # the equal-compute controls beside the regimes (needs "mixed" among the regimes)
control_seeds = None  # the controls' seeds; None: the regimes' seeds (smoke: 0, 1; cpu: 0 to 4; paper: 0, 1, 2)
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from mexlib import plots
from mexlib.chapters import regimes as chapter
from mexlib.notebook import check_parameters

check_parameters()
plots.use_style()
pd.set_option("display.precision", 4)
result = chapter.run(profile, seeds=seeds, regimes=regimes, method=method, policy=policy,
                     distribution_threshold=distribution_threshold, controls=controls, control_seeds=control_seeds,
                     device=device, executor=executor,
                     workers=workers, **overrides)
result.save()  # every table below and the findings, into the profile's figures folder
comparison = result["study"]
config = comparison.runs[0].config
print(f"{len(comparison.runs)} runs ({', '.join(comparison.regimes)} × seeds {comparison.seeds}) "
      f"ready in {comparison.seconds:.1f} s; trained now: {len(comparison.trained)} "
      f"(the rest came from the run store)")
print(f"{config.arch} on {config.dataset}, exits after blocks {config.exit_after_blocks}, "
      f"train_size {config.train_size}, exit rule: {comparison.policy}")

# %% [markdown]
# ## What an exit costs
# FLOPs of one sample up to each exit: the backbone's blocks up to that exit plus every head
# evaluated on the way (a sample that reaches exit *k* has paid for heads 0…*k*). Counted by
# `torch.utils.flop_counter`, which counts a multiply-add as **2 FLOPs**; the MAC column is
# what the paper's fvcore counts. The final exit costs slightly more than the plain backbone
# because all internal heads were evaluated before it.

# %%
result.tables["regimes_exit_costs"].frame

# %% [markdown]
# ## The main figure: accuracy against cost
# One line per regime: the mean over seeds of the threshold sweep, with a band of ± one
# standard deviation of accuracy. Dots mark each exit used alone (every sample leaves there).
# The grey star is the plain backbone trained without exits (phase 1), at 100 % cost. The
# equal-compute controls are dashed, in a darker shade of the regime they extend.

# %%
fig = result.figure("regimes_tradeoff")
plt.show()

# %% [markdown]
# ## The budget table
# Accuracy (%) at 25, 50, 75 and 100 % of the backbone's cost (FLOPs counted by
# `torch.utils.flop_counter`): the best point of each seed's curve whose cost does not exceed
# the budget, then mean ± std over seeds ("—": no point fits). As in the paper's protocol the
# threshold is picked on the test curve itself, which is optimistic: a deployed model would fix
# τ on validation data.

# %%
# NBVAL_CHECK_OUTPUT
print(result.tables["regimes_budget_table"].frame.to_markdown())
if "regimes_against_the_paper" in result.tables:  # the paper profile of a Table 1 setting
    print("Ours against the paper's Table 1 (read by third parties)")
    print(result.tables["regimes_against_the_paper"].frame.to_markdown())

# %% [markdown]
# The same table with each seed's threshold fixed on the **validation** split (the most
# accurate validation point within the budget) and scored on the test set, as a deployed model
# would be. Where it matches the table above, tuning the threshold on test data did not flatter
# the results. `cost` is the mean test cost of the chosen points (it may exceed the budget a
# little, since the budget was met on validation data). **The verdicts below are computed from
# this table**, seed by seed: `regimes_budget_table_seeds.csv` holds every seed's value of both
# tables, so any comparison can be tested again.

# %%
# NBVAL_CHECK_OUTPUT
print(result.tables["regimes_budget_table_validation"].frame.to_markdown())

# %% [markdown]
# ## Equal compute: the epochs each phase trained
# A comparison of regimes is fair only at matched training, counted in epochs actually trained,
# not in caps (STUDY.md §2). Each phase stops early once every monitored exit has gone
# `patience` epochs without improving its validation accuracy, and ends on its best epoch; the
# controls' long phase has no early stopping, so it trains every epoch of its cap. The table
# gives, per regime and phase, the cap, the fewest and most epochs trained over seeds, how many
# seeds stopped early and the epoch the phase ended on (its best, averaged over seeds).

# %%
# NBVAL_CHECK_OUTPUT
print(result.tables["regimes_epochs_trained"].frame.to_markdown())

# %% [markdown]
# ## Every exit, and where samples leave
# Left: the accuracy of each exit on its own, by regime (mean ± std over seeds). Right: the
# share of test samples leaving at each exit at one confidence threshold.

# %%
fig = result.figure("regimes_exits")
plt.show()
result.tables["regimes_summary"].frame

# %% [markdown]
# The summary columns: **final_exit_accuracy**, the last exit alone; **auc**, the mean accuracy
# of the best operating point over costs from 25 % to 100 % of the backbone (the area under the
# step-shaped accuracy–cost envelope, divided by the width of that range); **oracle_accuracy**,
# the share of samples that at least one exit classifies correctly; **overthinking**, the share
# of samples an internal exit gets right but the final exit gets wrong (Kaya et al.).
#
# ## How each phase trained
# Validation accuracy of every exit per epoch, for the first seed. Phase 1 (backbone) trains
# only the final exit; phase 3 (disjoint's heads) cannot change the final exit.

# %%
fig = result.figure("regimes_training_curves")
plt.show()

# %% [markdown]
# ## What we found
# The statements below are computed from the numbers above each time the notebook runs; they
# are not written by hand and may contradict the paper. Every comparison is the difference in
# accuracy seed by seed (the runs of a seed share their initialisation; disjoint and mixed also
# their phase-1 backbone), with its 95 % Student-t interval and the number of seeds: "ahead"
# or "behind" only when the interval excludes zero, otherwise "not distinguishable" with that
# many seeds.

# %%
display(Markdown(result.section("Regimes")))

# %% [markdown]
# ### Reading these results
# The paper (STUDY.md §6) reports that mixed training is best or close to best everywhere,
# that joint training helps early exits but can cost final-exit accuracy, and that disjoint
# training keeps the backbone intact but leaves weak early exits. Two questions to put to the
# statements above: does mixed's lead over the three regimes survive the controls, i.e. is it
# the order of the phases or the extra epochs of backbone training? And which of the leads have
# an interval that excludes zero with this many seeds? The `cpu` profile is a much smaller
# setting than the paper's (a 6-block ResNet on Fashion-MNIST); the `paper` profile (ResNet-34
# and ViT-T on CIFAR-100, `make reproduce PROFILE=paper` on a GPU) runs the comparison at the
# paper's scale.
#
# Next: [02 · Does the best regime depend on the early-exit method?](02_methods.ipynb)
