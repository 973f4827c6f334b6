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
# * **Effective rank** (Roy and Vetterli, EUSIPCO 2007): exp of the entropy of the singular
#   values normalised to sum to one. It needs no tolerance: k equal values give k, and small
#   values count for little. A bootstrap over the images (first seed) gives its sampling error.
# * **The information the block's 10 leading principal components carry about the label**,
#   I(PCA₁₀(T); Y), by the k-nearest-neighbour estimator of B. C. Ross ("Mutual Information
#   between Discrete and Continuous Data Sets", PLoS ONE 9(2), 2014). k-NN distances in
#   thousands of dimensions mean little, so it reads the projection; by the data-processing
#   inequality that is a lower bound on the block's own I(T;Y). In nats; at most H(Y) = ln 10 ≈
#   2.30 nats for ten balanced classes. The estimator is tested at the scale it is used here
#   (10 classes × 10 dimensions, 2048 samples: 0.02 nats below the Monte Carlo truth) in
#   `tests/test_analysis.py`. The value can rise from block to block, and above the images'
#   (block 0): the images' 10 leading components are not upstream of a block's 10 leading
#   components, so the data-processing inequality does not order them. **I(X;T)**, the information a block keeps about
#   its input, is not estimated: for a deterministic network it is infinite for continuous
#   inputs, or the entropy of the sample index for a finite set, so no estimator says anything
#   sound about it without adding noise to the network (Goldfeld et al., ICML 2019).
#
# All three are measured on the final models of the regimes notebook for every seed (regimes
# compared block by block with disjoint, paired by seed, with 95 % t intervals), and, for the
# first seed, on the weights after every epoch of training (snapshots recorded by training each run once more with
# `mexlib.analysis.SnapshotRecorder`; recording does not change the run, which is checked).

# %% [parameters]
profile = "cpu"
regimes = ["disjoint", "joint", "mixed"]
seeds = None  # None: the profile's (smoke: 0, 1; cpu and paper: 0, 1, 2); the curves over training: the first
sample_size = 2048  # held-out (test) images for the final models' ranks and information
tolerances = [1e-1, 1e-2, 1e-3]  # rank: singular values above tolerance × the largest
tolerance = 1e-1  # the tolerance of the findings and of the curves over training (see section 1)
mi_dims = 10  # principal components on which I(T;Y) is estimated
mi_k = 3  # neighbours of Ross's estimator
training_size = 1024  # held-out images per snapshot over training
resamples = 100  # bootstrap resamples of the first seed's effective ranks (one eigendecomposition each)
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor (the recorders retrain here, inline)
overrides = {}

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from mexlib import plots
from mexlib.chapters import representations as chapter
from mexlib.notebook import check_parameters

check_parameters()
plots.use_style()
result = chapter.run(profile, regimes=regimes, seeds=seeds, sample_size=sample_size, tolerances=tolerances,
                     tolerance=tolerance, mi_dims=mi_dims, mi_k=mi_k, training_size=training_size, resamples=resamples,
                     device=device, executor=executor, workers=workers, **overrides)
result.save()  # every table below and the findings, into the profile's figures folder
config = result["config"]
print(f"{config.arch} on {config.dataset}: {result['sample_size']} test images for the final models, "
      f"{result['training_size']} per snapshot; tolerances {result['tolerances']}; I(T;Y) on {mi_dims} principal "
      f"components, k = {mi_k}")
print(f"measured in {result['seconds']:.0f} s (read back from the store when cached)")

# %% [markdown]
# ## 1 · The final models
# One line per regime across the blocks (the mean over seeds; faint: each seed); the first
# panels differ in the rank's tolerance, to show how much the conclusion depends on it, the last
# two show the effective rank and the leading components' information with 95 % intervals over
# the seeds. Each panel's axis fits its data; the bound min(samples − 1, features) is in the
# tables. A rank is *settled* when it hardly moves with the number of samples: each one is
# measured again on half the samples, and a rank that changes by more than 10 % then, or that
# sits at its bound, says more about the sample count than about the block. The findings use
# the tolerance `tolerance`, and say whether its ranks are settled.

# %%
# NBVAL_CHECK_OUTPUT
print("Share of (regime, block) ranks that are settled, by tolerance: "
      + ", ".join(f"{tol:g}: {share:.0%}" for tol, share in result["settled"].items()))
fig = result.figure("representations_final")
plt.show()
# NBVAL_CHECK_OUTPUT
print(result["profile_table"].to_markdown())
# NBVAL_CHECK_OUTPUT
print(result["bootstrap"].round(2).to_markdown(index=False))
display(Markdown(result.section("The final models")))

# %% [markdown]
# ## 2 · Over training
# The same measurements (tolerance `tolerance`) on the weights after every epoch. The x-axis
# counts epochs trained so far: the disjoint and mixed runs share phase 1 (the backbone alone,
# the same weights, so one line until it ends), after which mixed trains everything together;
# the disjoint regime's heads phase leaves the backbone frozen, so its blocks no longer change
# and its line ends with phase 1 (the dotted line). The joint regime trains everything from its
# first epoch.


# %%
fig = result.figure("representations_training")
plt.show()
display(Markdown(result.section("Over training")))

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
display(Markdown(result.findings_markdown()))

# %% [markdown]
# Ranks and information describe what the blocks hold, not how training got there: the next
# chapter measures which exits push each block during training.
#
# Next: [05 · Gradients: which exits shape which blocks?](05_gradients.ipynb)
