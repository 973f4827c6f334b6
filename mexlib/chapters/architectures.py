"""Chapter 07 · Architectures: does the best regime depend on the network?
(``notebooks/07_architectures``).

:func:`run` runs the regime comparison (SDN's method, the max-softmax rule) with the
architecture as one more grid field (the profile's ResNet, MSDNet and ViT by default), and puts
each exit's cost in time beside its FLOPs: the exit times come from
``figures/<profile>/exit_latency.csv`` (``benchmarks/exit_latency.py``), and an architecture
missing from that table is timed here.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .. import evaluate, plots, verdicts
from ..config import figures_dir, make_config, profile_settings
from ..data import dataset_spec
from ..evaluate import format_budget_table
from ..settings import SETTINGS
from ..study import run_study
from ..train import build_model
from .base import Result, against_the_paper, records_stale_runs

NOTEBOOK = "07_architectures"
TITLE = "Architectures: does the best regime depend on the network?"
TABLES = ("architectures_exit_costs", "architectures_budget_table", "architectures_budget_table_raw",
          "architectures_budget_table_validation", "architectures_budget_table_seeds", "architectures_against_the_paper", "architectures_latency", "architectures_wall_times",
          "architectures_findings",
          "exit_latency")  # written by benchmarks/exit_latency.py, read here
#: The paper's Table 1 rows whose gaps the findings quote (CIFAR-100, 100 % budget).
PAPER_ROWS = ("resnet34-cifar100", "msdnet-cifar100", "vit-t-cifar100")


@records_stale_runs
def run(profile: str = "cpu", archs=None, seeds=None, regimes=("disjoint", "joint", "mixed"), latency_batch: int = 1,
        latency_threads: int = 1, device: str = "auto", executor: str = "inline", workers: int = 2,
        **overrides) -> Result:
    """The regimes of every architecture in ``archs`` (None: the profile's), for ``seeds``; the
    time axis uses the exit times at batch ``latency_batch`` on ``latency_threads`` thread(s)."""
    settings = profile_settings(profile)
    archs, regimes = list(archs or settings.archs), list(regimes)
    comparison = run_study(profile, {"arch": archs, "regime": regimes}, seeds=seeds, device=device,
                           progress=settings.progress, executor=executor, workers=workers, **overrides)
    result = Result(profile, "architectures_findings", FIGURES, data=dict(
        study=comparison, archs=archs, regimes=regimes, batch=latency_batch, threads=latency_threads))
    result.add("architectures_exit_costs", comparison.cost_table("arch"), percent=True)
    table = comparison.budget_table(["arch", "regime"])
    result.data["budget"] = table
    result.add("architectures_budget_table", format_budget_table(table))
    result.add("architectures_budget_table_raw", table, percent=True)
    result.add_paired_tables("architectures", comparison, ["arch", "regime"])
    beside = against_the_paper(comparison, table, within="arch")
    if beside is not None:
        result.add("architectures_against_the_paper", beside)
    result.findings.append(("Accuracy by architecture", _accuracy_findings(comparison, archs, regimes)))
    latency = {arch: exit_times(comparison.select(arch=arch).runs[0], profile, latency_batch, latency_threads,
                                **overrides) for arch in archs}
    result.data["latency"] = latency
    result.add("architectures_latency", pd.concat(latency.values(), ignore_index=True).set_index(["arch", "exit"]))
    result.findings.append((f"Time against FLOPs (batch {latency_batch}, {latency_threads} thread(s))",
                            _time_findings(latency)))
    wall = pd.concat([comparison.select(arch=a).wall_times()[["run", "seed", "seconds", "stored"]].assign(arch=a)
                      for a in archs], ignore_index=True)
    result.add("architectures_wall_times", wall.set_index(["arch", "run", "seed"]))
    result.data["minutes"] = (wall.groupby("arch", sort=False)["seconds"].sum() / 60).rename("training minutes")
    return result


def exit_times(run, profile: str, batch: int, threads: int, **overrides) -> pd.DataFrame:
    """Each exit's time per image for ``run``'s architecture at ``batch`` on ``threads``
    thread(s): from ``exit_latency.csv`` in the profile's figures (``benchmarks/exit_latency.py``),
    or timed now when that table lacks it (or has another placement of the exits)."""
    arch = run.config.arch
    path = figures_dir(profile) / "exit_latency.csv"
    measured = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["arch", "batch", "threads", "exit"])
    rows = measured[(measured["arch"] == arch) & (measured["batch"] == batch)
                    & (measured["threads"] == threads)].sort_values("exit")
    source = "figures/exit_latency.csv"
    if len(rows) != run.num_exits:
        spec = dataset_spec(run.config.dataset)
        rows = evaluate.exit_latency(build_model(make_config(profile, arch=arch, **overrides)),
                                     spec.input_shape, batches=(batch,),
                                     threads=(threads,), warmup=3, repeats=profile_settings(profile).latency_repeats)
        source = "timed in this notebook"
    return rows.assign(arch=arch, source=source).reset_index(drop=True)


def _accuracy_findings(comparison, archs, regimes) -> list[str]:
    lines = verdicts.advantage_findings(comparison, "mixed", "regime", within="arch") if "mixed" in regimes else []
    orders = {arch: verdicts.order(comparison.select(arch=arch)) for arch in archs}
    same = all(orders[a] == orders[archs[0]] for a in archs)
    lines.append("The order of the regimes " + ("is the same for every architecture" if same else
                                                "changes with the architecture") + ": "
                 + "; ".join(f"{a}: " + ", ".join(f"{o[b]} ({b:.0%})" for b in evaluate.BUDGETS)
                             for a, o in orders.items()) + ".")
    if {"disjoint", "joint", "mixed"} <= set(regimes):
        for arch in archs:
            final = comparison.select(arch=arch).budget_table("regime", reference=False)[(1.0, "mean")]
            lines.append(f"{arch} at the full budget: joint − disjoint {100 * (final['joint'] - final['disjoint']):+.2f}, "
                         f"mixed − disjoint {100 * (final['mixed'] - final['disjoint']):+.2f} points.")
        gaps = {name: (SETTINGS[name].paper["joint"] - SETTINGS[name].paper["disjoint"],
                       SETTINGS[name].paper["mixed"] - SETTINGS[name].paper["disjoint"]) for name in PAPER_ROWS}
        lines.append("In the paper (Table 1, 100 % budget, CIFAR-100) these gaps are "
                     + "; ".join(f"{j:+.2f} and {m:+.2f} points for {SETTINGS[n].description.split(' (')[0]}"
                                 for n, (j, m) in gaps.items()) + ".")
    return lines


def _time_findings(latency: dict[str, pd.DataFrame]) -> list[str]:
    lines = []
    for arch, rows in latency.items():
        gap = rows["time_relative"] - rows["flops_relative"]
        worst = int(gap.abs().idxmax())
        lines.append(f"{arch} ({rows['source'].iloc[0]}): exit {worst} takes {rows['time_relative'][worst]:.0%} of the "
                     f"final exit's time for {rows['flops_relative'][worst]:.0%} of its FLOPs, the largest gap of its "
                     f"exits ({'time above FLOPs' if gap[worst] > 0 else 'time below FLOPs'}); the final exit takes "
                     f"{rows['ms_per_image'].iloc[-1]:.2f} ms per image.")
    return lines


def draw_tradeoff(result: Result):
    return plots.plot_tradeoff_panels(result["study"], panel="arch", hue="regime", columns=len(result["archs"]),
                                      share_x=False)  # the architectures differ in what their exits cost


def draw_time(result: Result):
    """Each exit's time against its FLOPs (left), and the trade-off against expected time per image."""
    archs, regimes, latency, comparison = result["archs"], result["regimes"], result["latency"], result["study"]
    fig, axes = plt.subplots(1, 1 + len(archs), figsize=(4.2 * (1 + len(archs)), 3.8), squeeze=False)
    axes = axes[0]
    arch_colors = plots.colors_for(archs)
    for arch, rows in latency.items():
        axes[0].plot(rows["flops_relative"], rows["time_relative"], "o-", color=arch_colors[arch], label=arch)
    axes[0].plot([0, 1], [0, 1], "k:", linewidth=0.8)
    axes[0].set_xlabel("FLOPs (share of the final exit's)")
    axes[0].set_ylabel("time (share of the final exit's)")
    axes[0].set_title(f"batch {result['batch']}, {result['threads']} thread(s)", fontsize=9)
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
    return fig


FIGURES = {"architectures_tradeoff": draw_tradeoff, "architectures_time": draw_time}

__all__ = ["FIGURES", "NOTEBOOK", "PAPER_ROWS", "TABLES", "TITLE", "exit_times", "run"]
