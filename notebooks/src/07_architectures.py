# %% [markdown]
# # 07 · Architectures: does the best regime depend on the network?
#
# The paper's Table 1 has one block of rows per architecture, and its finding moves with the
# architecture: the gap between the regimes is largest for MSDNet (on CIFAR-100 disjoint 70.36,
# joint 75.86, mixed 76.51 % at the full budget), and for ViTs on ImageNet-1k disjoint training
# is on par with joint or ahead of it. **The question of this chapter:** does the ranking of
# the regimes change with the architecture here?
#
# The same study piece as the regimes notebook (SDN's method, the max-softmax exit rule), with
# the architecture as one more grid field:
#
# * **ResNet** (`resnet-cpu`): the regimes notebook's 6-block CIFAR-style ResNet, SDN's pooled
#   heads after blocks 1–5.
# * **MSDNet** (`msdnet-cpu`; Huang et al., ICLR 2018): a multi-scale dense network whose
#   classifiers are part of the design. Each block is one MSDNet layer over 3 scales (28, 14 and
#   7 pixels), and each classifier reads the coarsest scale through two strided 3×3 convolutions.
#   Phase 1 trains the network with its final classifier only; the other classifiers are the
#   heads (`mexlib/models/msdnet.py` says how each regime maps onto MSDNet).
# * **ViT** (`vit-cpu`): 6 encoder layers of width 96 (3 attention heads) over a 4×4 grid of
#   7-pixel patches, class-token heads after layers 1–5. It trains with AdamW (lr 3e-3, weight
#   decay 0.05, one warm-up epoch): with the ResNet's SGD at lr 0.1 its exits reached only
#   56–62 % in a short trial (`mexlib/config.py` gives the trial).
#
# The notebook takes any architecture of the registry through `archs`.
#
# Beside FLOPs, the cost of an exit is measured in **time**: `benchmarks/exit_latency.py` times
# every exit as a deployed model runs it (the blocks up to the exit and the heads on the way,
# nothing after) and writes `figures/exit_latency.csv`, which this notebook reads; an
# architecture missing from that table is timed here, on this machine, when the notebook runs.

# %% [parameters]
profile = "cpu"
archs = None  # None: the profile's architectures (cpu: resnet-cpu, msdnet-cpu, vit-cpu; paper: resnet34, msdnet-cifar, vit-t)
seeds = None  # None: the profile's seeds
regimes = ["disjoint", "joint", "mixed"]
latency_batch = 1  # the deployed setting whose exit times the time axis uses: one image at a time,
latency_threads = 1  # on one thread
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor
overrides = {}

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from mexlib import plots
from mexlib.chapters import architectures as chapter
from mexlib.notebook import check_parameters

check_parameters()
plots.use_style()
result = chapter.run(profile, archs=archs, seeds=seeds, regimes=regimes, latency_batch=latency_batch,
                     latency_threads=latency_threads, device=device, executor=executor, workers=workers, **overrides)
result.save()  # every table below and the findings, into the profile's figures folder
comparison = result["study"]
print(f"{len(comparison.runs)} runs ({', '.join(result['archs'])} × {', '.join(regimes)} × seeds {comparison.seeds}) "
      f"ready in {comparison.seconds:.1f} s; trained now: {len(comparison.trained)}")

# %% [markdown]
# ## 1 · Accuracy against cost, one panel per architecture
# Each panel is its own architecture's trade-off: the cost axis is the share of *that*
# backbone's FLOPs, so the panels compare the regimes within an architecture, not the
# architectures with one another (the table below gives each one's FLOPs).

# %%
fig = result.figure("architectures_tradeoff")
plt.show()
print(result.tables["architectures_exit_costs"].markdown())

# %% [markdown]
# ## 2 · The architectures table
# Table 1's layout: for each architecture, the regimes' test accuracy (mean ± std over seeds)
# at 25, 50, 75 and 100 % of that backbone's FLOPs, with the plain backbone (phase 1 alone) as
# the reference row. In the paper profile, the paper's value at 100 % stands beside ours.

# %%
# NBVAL_CHECK_OUTPUT
print(result.tables["architectures_budget_table"].frame.to_markdown())
if "architectures_against_the_paper" in result.tables:  # the paper profile
    print("Ours against the paper's Table 1 (read by third parties):")
    print(result.tables["architectures_against_the_paper"].frame.to_markdown())
display(Markdown(result.section("Accuracy by architecture")))

# %% [markdown]
# ## 3 · Exits in time
# Left: each exit's measured time against its FLOPs, both relative to the final exit (on the
# diagonal, time follows FLOPs). Right: the trade-off curves of the first panel with the
# expected *time* per image on the x-axis (each operating point's share of samples at each
# exit, weighted by that exit's measured time), at batch `latency_batch` on
# `latency_threads` thread(s): the setting of a model serving one request at a time.

# %%
fig = result.figure("architectures_time")
plt.show()
display(Markdown(result.section(f"Time against FLOPs (batch {latency_batch}, {latency_threads} thread(s))")))

# %% [markdown]
# ## Training time
# Seconds of training per stored run, from the runs' provenance.

# %%
print(result["minutes"].round(1).to_markdown())
print("(as stored: runs trained as parallel jobs overlap in wall-clock time)")

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
display(Markdown(result.findings_markdown()))

# %% [markdown]
# Next, the regimes on a pretrained text encoder: [08 · Language](08_language.ipynb).
