# %% [markdown]
# # 06 · Ablations: what else decides how a multi-exit model should be trained?
#
# The regimes notebook found mixed training (backbone first, then everything together) best or
# tied at every budget for SDN in the `cpu` profile. This notebook varies, one at a time, the
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
# paper's central claim under its change: mixed training is best or near best (within the
# seeds' spread) at every budget.

# %% [parameters]
profile = "cpu"
seeds = None  # seeds of every section; None: the profile's seeds (3 in the cpu profile)
ablation_seeds = None  # seeds of the sections that train new runs; None: the same as seeds
regimes = ["disjoint", "joint", "mixed"]
total_epochs = None  # N of the pretraining split; None: the profile's epoch cap per phase
criteria = ["confidence", "entropy", "patience"]
heads = ["pool", "conv2"]
placements = None  # None: every block, every second block, the second half of the backbone
weightings = ["sdn", "sdn-depth", "sdn-ge"]
weighting_regimes = ["joint", "mixed"]
device = "auto"
executor = "inline"  # "local": train missing runs as parallel jobs here; "slurm": on a cluster
workers = 2  # jobs at a time with the local executor
overrides = {}

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from mexlib import plots, study
from mexlib.config import make_config
from mexlib.evaluate import format_budget_table
from mexlib.models import arch_spec
from mexlib.notebook import check_parameters

check_parameters()
if ablation_seeds is None:
    ablation_seeds = seeds
trained_seeds = study.DEFAULT_SEEDS[profile] if ablation_seeds is None else ablation_seeds
plots.use_style()
pd.set_option("display.precision", 4)
how = dict(device=device, progress=profile != "smoke", executor=executor, workers=workers)  # where runs train
base = make_config(profile, **overrides)
num_blocks = arch_spec(base.arch).num_blocks
if total_epochs is None:
    total_epochs = base.joint_phase.epochs
splits = sorted({math.ceil(total_epochs * f) for f in (0, 0.25, 0.5, 0.75, 1)})
if placements is None:
    placements = [tuple(range(1, num_blocks)), tuple(range(2, num_blocks, 2)),
                  tuple(range(num_blocks // 2 + 1, num_blocks))]
placements = list(dict.fromkeys(tuple(p) for p in placements if len(p)))
findings, sections = [], []
print(f"{base.arch} ({num_blocks} blocks) on {base.dataset}, train_size {base.train_size}; "
      f"pretraining splits k = {splits} of N = {total_epochs}; placements {placements}")


def section_outputs(name, section, by, panel, hue="regime", backbone=True):
    """The section's figure and budget table, saved under ablation_<name>_*."""
    fig = plots.plot_tradeoff_panels(section, panel=panel, hue=hue, backbone=backbone) if panel else \
        plots.plot_tradeoff(section, hue=hue, backbone=backbone)
    plots.save_figure(fig, f"ablation_{name}_tradeoff", profile)
    plt.show()
    table = section.budget_table(by, reference=backbone)
    plots.save_table(format_budget_table(table), f"ablation_{name}_budget_table", profile)
    plots.save_table(table, f"ablation_{name}_budget_table_raw", profile, percent=True)
    sections.append((name, section))
    return table


def report(lines, title):
    findings.append((title, lines))
    display(Markdown("\n".join(f"* {line}" for line in lines)))


# %% [markdown]
# ## Seeds
# Every section uses the regimes notebook's seeds (three in the `cpu` profile): many of the
# differences below are within a point, and a difference counts only when it exceeds the
# seeds' spread (the larger standard deviation over seeds of the groups compared).
# `ablation_seeds` can cut the sections that train new runs to fewer seeds (a `cpu`-profile
# run takes 2 to 7 minutes of one core). A one-seed difference is then judged against the
# spread that three seeds of the default configuration show (the largest standard deviation
# over seeds of any regime at any budget, measured in the next section); smaller ones are
# reported as ties.

# %% [markdown]
# ## 2 · Exit criterion (all seeds, no training)
# The same stored runs under three exit rules: max-softmax confidence above τ, normalised
# entropy below τ (100 thresholds each), and patience (exit once p + 1 consecutive exits agree,
# p = 0 … K − 1: few operating points).

# %%
criterion = study.run_study(profile, {"policy": criteria, "regime": regimes}, seeds=seeds,
                            **how, **overrides)
criterion_table = section_outputs("criterion", criterion, ["policy", "regime"], panel="policy")
default_table = criterion.select(policy=criteria[0]).budget_table("regime", reference=False)
single_seed_spread = float(default_table.xs("std", axis=1, level="stat").max().max())
if math.isnan(single_seed_spread):
    single_seed_spread = None
# NBVAL_CHECK_OUTPUT
print(format_budget_table(criterion_table).to_markdown())

# %%
lines = []
orders = {}
for policy in criteria:
    part = criterion.select(policy=policy)
    table = part.budget_table("regime", reference=False)
    orders[policy] = {b: " > ".join(table[(b, "mean")].dropna().sort_values(ascending=False).index) or "no point"
                      for b in (0.25, 0.5)}
    if "mixed" in regimes:
        (line,) = part.advantage_findings("mixed", "regime")
        lines.append(f"{policy} rule: " + line.removeprefix("Overall: "))
        lines.append(f"{policy} rule: " + part.paper_claim())
same = all(orders[p] == orders[criteria[0]] for p in criteria)
lines.append("The order of the regimes at 25 % and 50 % of the cost is "
             + ("the same under every criterion" if same else "not the same under every criterion")
             + ": " + "; ".join(f"{p}: {o[0.25]} (25 %), {o[0.5]} (50 %)" for p, o in orders.items()) + ".")
if single_seed_spread is not None:
    lines.append(f"The seeds' spread of the default configuration: {100 * single_seed_spread:.2f} points"
                 + (" (used below to judge the one-seed differences)." if len(trained_seeds) == 1 else "."))
report(lines, "Exit criterion")

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
pretraining = study.run_study(profile, {"backbone_epochs": splits}, seeds=ablation_seeds,
                              **how, total_epochs=total_epochs, **overrides)
table = section_outputs("pretraining", pretraining, "backbone_epochs", panel=None, hue="backbone_epochs",
                        backbone=False)
print(format_budget_table(table).to_markdown())

# %%
lines = pretraining.ranking("backbone_epochs", single_seed_spread=single_seed_spread)
best = {}
for b in (0.25, 0.5, 1.0):
    column = table[(b, "mean")].dropna().sort_values(ascending=False)
    if len(column) > 1:
        spread = table[(b, "std")].max()  # as in the ranking above: the largest std; NaN with one seed
        if math.isnan(spread) and single_seed_spread is not None:
            spread = single_seed_spread
        clear = not math.isnan(spread) and column.iloc[0] - column.iloc[1] > spread
        best[b] = f"k = {column.index[0]}" + ("" if clear else " (not beyond the spread)")
lines.append("Best split (backbone epochs k of N = "
             f"{total_epochs}): " + (", ".join(f"{k} at {b:.0%}" for b, k in best.items()) or "none")
             + ". k = 0 is the joint regime, k = N the disjoint one, every k between a mixed run.")
ends = [k for k in (0, total_epochs) if k in table.index]  # joint and disjoint
between = [k for k in table.index if k not in ends]  # the mixed splits
if ends and between:
    judged = pretraining.best_versus("backbone_epochs", between, ends, single_seed_spread=single_seed_spread)
    judged = judged[judged["verdict"] != "one seed"]
    near_best = int((judged["verdict"] != "behind").sum())
    lines.append("Paper's claim 'mixed is best or near best (within the seeds' spread) at every budget', with a "
                 f"fixed budget of N = {total_epochs} epochs: {'holds' if len(judged) and near_best == len(judged) else 'does not hold'} "
                 f"here (the best mixed split is best or near best at {near_best} of {len(judged)} budgets).")
report(lines, "Pretraining length")

# %% [markdown]
# ## 3 · Head depth
# SDN's pooled head (learnable max/avg-pool mix to 4×4, one linear layer) against `conv2`: two
# 3×3 conv-BN-ReLU layers at the block's width before it. Deeper heads cost more, so the
# exits' costs move; the table below gives them.

# %%
head_study = study.run_study(profile, {"head": heads, "regime": regimes}, seeds=ablation_seeds,
                             **how, **overrides)
table = section_outputs("heads", head_study, ["head", "regime"], panel="head")
costs = head_study.cost_table("head")
plots.save_table(costs, "ablation_heads_exit_costs", profile, percent=True)
print(format_budget_table(table).to_markdown())
print(plots.readable(costs, percent=True).to_markdown(index=False))

# %%
lines = head_study.advantage_findings("mixed", "regime", within="head", single_seed_spread=single_seed_spread)
lines += head_study.ranking("head", within="regime", budgets=[0.25, 0.5, 1.0], single_seed_spread=single_seed_spread)
if "mixed" in regimes:
    lines.append(head_study.paper_claim("head", single_seed_spread=single_seed_spread))
report(lines, "Head depth")

# %% [markdown]
# ## 4 · Placement
# Heads after every block (the default), after every second block, and only after the blocks
# of the second half; the backbone's own classifier is always the last exit.

# %%
placement = study.run_study(profile, {"exit_after_blocks": placements, "regime": regimes},
                            seeds=ablation_seeds, **how, **overrides)
table = section_outputs("placement", placement, ["exit_after_blocks", "regime"], panel="exit_after_blocks")
print(format_budget_table(table).to_markdown())

# %%
lines = placement.advantage_findings("mixed", "regime", within="exit_after_blocks",
                                     single_seed_spread=single_seed_spread)
lines += placement.ranking("exit_after_blocks", within="regime", budgets=[0.25, 0.5, 1.0],
                          single_seed_spread=single_seed_spread)
if "mixed" in regimes:
    lines.append(placement.paper_claim("exit_after_blocks", single_seed_spread=single_seed_spread))
report(lines, "Placement")

# %% [markdown]
# ## 5 · Loss weighting
# The default mean over exits, depth-proportional weights ramped over training (`sdn-depth`)
# and gradient equilibrium (`sdn-ge`), each trained jointly and mixed. Can a loss weighting
# make joint training as good as mixed training with the plain mean?

# %%
weighting = study.run_study(profile, {"method": weightings, "regime": weighting_regimes},
                            seeds=ablation_seeds, **how, **overrides)
table = section_outputs("weighting", weighting, ["method", "regime"], panel="regime", hue="method")
print(format_budget_table(table).to_markdown())

# %%
lines = weighting.ranking("method", within="regime", single_seed_spread=single_seed_spread)
if "mixed" in weighting_regimes:  # can a weighting reach the default loss's mixed training?
    lines += weighting.against_findings({"method": weightings[0], "regime": "mixed"}, budgets=[0.25, 0.5, 1.0],
                                        single_seed_spread=single_seed_spread)
if {"mixed", "joint"} <= set(weighting_regimes):
    lines.append("Mixed against joint with each loss: "
                 + weighting.paper_claim("method", single_seed_spread=single_seed_spread))
report(lines, "Loss weighting")

# %% [markdown]
# ## Training time
# Seconds of training per stored run of each section, from the runs' provenance. Runs this
# notebook shares with the regimes notebook (its SDN runs and phase-1 backbones, which the
# criterion section reads) are not this notebook's cost and are left out; a run two sections
# share counts once, in the first.

# %%
shared = set(criterion.wall_times()["stored"])
wall = pd.concat([s.wall_times().assign(section=name) for name, s in sections if name != "criterion"])
wall = wall[~wall["stored"].isin(shared)].drop_duplicates("stored")
plots.save_table(wall.set_index(["section", "run", "seed"]), "ablation_wall_times", profile)
minutes = (wall.groupby("section", sort=False)["seconds"].sum() / 60).rename("training minutes")
print(minutes.round(1).to_markdown())
print(f"In all: {minutes.sum():.1f} minutes of training for {len(wall)} runs and backbones "
      f"(as stored; runs trained in parallel overlap in wall-clock time).")

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
text = plots.findings_text(findings)
plots.save_text(text, "ablation_findings", profile)
display(Markdown(text))

# %% [markdown]
# Next: [07 · Architectures: does the best regime depend on the network?](07_architectures.ipynb)
