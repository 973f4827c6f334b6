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

from mexlib import evaluate, paths, plots, study
from mexlib.config import make_config
from mexlib.data import dataset_spec
from mexlib.evaluate import format_budget_table, format_mean_std
from mexlib.notebook import check_parameters
from mexlib.settings import SETTINGS, paper_numbers
from mexlib.train import build_model

check_parameters()
plots.use_style()
DEFAULT_ARCHS = {"smoke": ["resnet-smoke", "msdnet-smoke", "vit-smoke"], "cpu": ["resnet-cpu", "msdnet-cpu", "vit-cpu"],
                 "paper": ["resnet34", "msdnet-cifar", "vit-t"]}
archs = list(archs or DEFAULT_ARCHS[profile])
comparison = study.run_study(profile, {"arch": archs, "regime": regimes}, seeds=seeds, device=device,
                             progress=profile != "smoke", executor=executor, workers=workers, **overrides)
findings = []
print(f"{len(comparison.runs)} runs ({', '.join(archs)} × {', '.join(regimes)} × seeds {comparison.seeds}) "
      f"ready in {comparison.seconds:.1f} s; trained now: {len(comparison.trained)}")

# %% [markdown]
# ## 1 · Accuracy against cost, one panel per architecture
# Each panel is its own architecture's trade-off: the cost axis is the share of *that*
# backbone's FLOPs, so the panels compare the regimes within an architecture, not the
# architectures with one another (the table below gives each one's FLOPs).

# %%
fig = plots.plot_tradeoff_panels(comparison, panel="arch", hue="regime", columns=len(archs))
plots.save_figure(fig, "architectures_tradeoff", profile)
plt.show()
costs = comparison.cost_table("arch")
plots.save_table(costs, "architectures_exit_costs", profile, percent=True)
print(plots.readable(costs, percent=True).to_markdown(index=False))

# %% [markdown]
# ## 2 · The architectures table
# Table 1's layout: for each architecture, the regimes' test accuracy (mean ± std over seeds)
# at 25, 50, 75 and 100 % of that backbone's FLOPs, with the plain backbone (phase 1 alone) as
# the reference row. In the paper profile, the paper's value at 100 % stands beside ours.

# %%
table = comparison.budget_table(["arch", "regime"])
plots.save_table(format_budget_table(table), "architectures_budget_table", profile)
plots.save_table(table, "architectures_budget_table_raw", profile, percent=True)
# NBVAL_CHECK_OUTPUT
print(format_budget_table(table).to_markdown())
beside = []
for arch in archs:
    setting = paper_numbers(comparison.select(arch=arch).runs[0].config)
    if setting is not None:
        for regime in regimes:
            beside.append({"arch": arch, "regime": regime, "paper (100 %)": f"{setting.paper[regime]:.2f}",
                           "ours (100 %)": format_mean_std(table.loc[(arch, regime), (1.0, "mean")],
                                                           table.loc[(arch, regime), (1.0, "std")])})
if beside:
    beside = pd.DataFrame(beside).set_index(["arch", "regime"])
    plots.save_table(beside, "architectures_against_the_paper", profile)
    print("Ours against the paper's Table 1 (read by third parties):")
    print(beside.to_markdown())

# %%
lines = comparison.advantage_findings("mixed", "regime", within="arch") if "mixed" in regimes else []
orders = {}
for arch in archs:
    part = comparison.select(arch=arch).budget_table("regime", reference=False)
    orders[arch] = {b: " > ".join(part[(b, "mean")].dropna().sort_values(ascending=False).index) or "no point"
                    for b in evaluate.BUDGETS}
same = all(orders[a] == orders[archs[0]] for a in archs)
lines.append("The order of the regimes " + ("is the same for every architecture" if same else
                                            "changes with the architecture") + ": "
             + "; ".join(f"{a}: " + ", ".join(f"{o[b]} ({b:.0%})" for b in evaluate.BUDGETS) for a, o in orders.items())
             + ".")
if {"disjoint", "joint", "mixed"} <= set(regimes):
    for arch in archs:
        final = comparison.select(arch=arch).budget_table("regime", reference=False)[(1.0, "mean")]
        lines.append(f"{arch} at the full budget: joint − disjoint {100 * (final['joint'] - final['disjoint']):+.2f}, "
                     f"mixed − disjoint {100 * (final['mixed'] - final['disjoint']):+.2f} points.")
    gaps = {name: (SETTINGS[name].paper["joint"] - SETTINGS[name].paper["disjoint"],
                   SETTINGS[name].paper["mixed"] - SETTINGS[name].paper["disjoint"])
            for name in ("resnet34-cifar100", "msdnet-cifar100", "vit-t-cifar100")}
    lines.append("In the paper (Table 1, 100 % budget, CIFAR-100) these gaps are "
                 + "; ".join(f"{j:+.2f} and {m:+.2f} points for {SETTINGS[n].description.split(' (')[0]}"
                                for n, (j, m) in gaps.items()) + ".")
findings.append(("Accuracy by architecture", lines))
display(Markdown("\n".join(f"* {line}" for line in lines)))

# %% [markdown]
# ## 3 · Exits in time
# Left: each exit's measured time against its FLOPs, both relative to the final exit (on the
# diagonal, time follows FLOPs). Right: the trade-off curves of the first panel with the
# expected *time* per image on the x-axis (each operating point's share of samples at each
# exit, weighted by that exit's measured time), at batch `latency_batch` on
# `latency_threads` thread(s): the setting of a model serving one request at a time.

# %%
table_path = paths.figures_dir(profile) / "exit_latency.csv"
measured = pd.read_csv(table_path) if table_path.is_file() else pd.DataFrame(columns=["arch", "batch", "threads", "exit"])
latency = {}
for arch in archs:
    run = comparison.select(arch=arch).runs[0]
    rows = measured[(measured["arch"] == arch) & (measured["batch"] == latency_batch)
                    & (measured["threads"] == latency_threads)].sort_values("exit")
    source = "figures/exit_latency.csv"
    if len(rows) != run.num_exits:  # not in the benchmark's table (or another placement): time it now
        spec = dataset_spec(run.config.dataset)
        rows = evaluate.exit_latency(build_model(make_config(profile, arch=arch, **overrides)),
                                     (spec.channels, spec.image_size, spec.image_size), batches=(latency_batch,),
                                     threads=(latency_threads,), warmup=3, repeats=20 if profile != "smoke" else 3)
        source = "timed in this notebook"
    latency[arch] = rows.assign(arch=arch, source=source).reset_index(drop=True)
latency_table = pd.concat(latency.values(), ignore_index=True)
plots.save_table(latency_table.set_index(["arch", "exit"]), "architectures_latency", profile)

fig, axes = plt.subplots(1, 1 + len(archs), figsize=(4.2 * (1 + len(archs)), 3.8), squeeze=False)
axes = axes[0]
arch_colors = plots.colors_for(archs)
for arch, rows in latency.items():
    axes[0].plot(rows["flops_relative"], rows["time_relative"], "o-", color=arch_colors[arch], label=arch)
axes[0].plot([0, 1], [0, 1], "k:", linewidth=0.8)
axes[0].set_xlabel("FLOPs (share of the final exit's)")
axes[0].set_ylabel("time (share of the final exit's)")
axes[0].set_title(f"batch {latency_batch}, {latency_threads} thread(s)", fontsize=9)
axes[0].legend(fontsize=8)
colors = plots.colors_for(regimes)
for ax, arch in zip(axes[1:], archs):
    ms = latency[arch]["ms_per_image"].to_numpy()
    for regime in regimes:
        runs = comparison.select(arch=arch, regime=regime).runs
        time_ms = pd.concat([evaluate.expected_time(r.curve, ms) for r in runs], axis=1).mean(axis=1)
        accuracy = pd.concat([r.curve["accuracy"] for r in runs], axis=1).mean(axis=1) * 100
        order = time_ms.argsort()
        ax.plot(time_ms.iloc[order], accuracy.iloc[order], color=colors[regime], label=regime)
    ax.set_title(arch, fontsize=9)
    ax.set_xlabel("expected time per image (ms)")
    ax.set_ylabel("test accuracy (%)")
axes[-1].legend(fontsize=8)
plots.save_figure(fig, "architectures_time", profile)
plt.show()

# %%
lines = []
for arch, rows in latency.items():
    gap = rows["time_relative"] - rows["flops_relative"]
    worst = int(gap.abs().idxmax())
    lines.append(f"{arch} ({rows['source'].iloc[0]}): exit {worst} takes {rows['time_relative'][worst]:.0%} of the "
                 f"final exit's time for {rows['flops_relative'][worst]:.0%} of its FLOPs, the largest gap of its "
                 f"exits ({'time above FLOPs' if gap[worst] > 0 else 'time below FLOPs'}); the final exit takes "
                 f"{rows['ms_per_image'].iloc[-1]:.2f} ms per image.")
findings.append((f"Time against FLOPs (batch {latency_batch}, {latency_threads} thread(s))", lines))
display(Markdown("\n".join(f"* {line}" for line in lines)))

# %% [markdown]
# ## Training time
# Seconds of training per stored run, from the runs' provenance.

# %%
wall = pd.concat([comparison.select(arch=a).wall_times().assign(arch=a) for a in archs], ignore_index=True)
plots.save_table(wall.set_index(["arch", "run", "seed"]), "architectures_wall_times", profile)
minutes = (wall.groupby("arch", sort=False)["seconds"].sum() / 60).rename("training minutes")
print(minutes.round(1).to_markdown())
print("(as stored: runs trained as parallel jobs overlap in wall-clock time)")

# %% [markdown]
# ## What we found
# Computed from the numbers above each time the notebook runs; they may contradict the paper.

# %%
text = plots.findings_text(findings)
plots.save_text(text, "architectures_findings", profile)
display(Markdown(text))

# %% [markdown]
# This is the last chapter for now; back to the start: [00 · A guided tour](00_tour.ipynb).
