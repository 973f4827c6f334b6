"""Chapter 06 · Ablations: what else decides how a multi-exit model should be trained?
(``notebooks/06_ablations``).

:func:`run` varies, one at a time, the choices the regime comparison held fixed, each through
the same study piece (a grid → runs from the store → offline evaluation → tables), and checks
the paper's central claim under each change (mixed best or near best: not behind the best other
regime, by the 95 % interval over seeds of :mod:`mexlib.verdicts`; a section trained with one
seed has no interval and says so):

1. **exit criterion** (no training): max-softmax confidence, normalised entropy and patience on
   the regimes chapter's runs;
2. **pretraining length**: N epochs split k : N − k between phase 1 and phase 2;
3. **head depth**; 4. **placement** of the heads; 5. **loss weighting**.
"""

from __future__ import annotations

import math

import pandas as pd

from .. import plots, verdicts
from ..config import make_config, profile_settings
from ..evaluate import format_budget_table
from ..models import arch_spec
from ..study import run_study
from .base import Result, records_stale_runs

NOTEBOOK = "06_ablations"
TITLE = "Ablations: what else decides how a multi-exit model should be trained?"
SECTIONS = ("criterion", "pretraining", "heads", "placement", "weighting")
TABLES = tuple(f"ablation_{s}_{t}" for s in SECTIONS for t in ("budget_table", "budget_table_raw",
                                                                   "budget_table_validation", "budget_table_seeds")) + (
    "ablation_heads_exit_costs", "ablation_wall_times", "ablation_findings")


def default_placements(num_blocks: int) -> list[tuple[int, ...]]:
    """Every block, every second block, the second half of the backbone."""
    return [tuple(range(1, num_blocks)), tuple(range(2, num_blocks, 2)), tuple(range(num_blocks // 2 + 1, num_blocks))]


@records_stale_runs
def run(profile: str = "cpu", seeds=None, ablation_seeds=None, regimes=("disjoint", "joint", "mixed"),
        total_epochs: int | None = None, policies=("confidence", "entropy", "patience"), heads=("pool", "conv2"),
        placements=None, weightings=("sdn", "sdn-depth", "sdn-ge"), weighting_regimes=("joint", "mixed"),
        device: str = "auto", executor: str = "inline", workers: int = 2, **overrides) -> Result:
    """Every section. ``seeds``: of every section (None: the profile's); ``ablation_seeds``: of
    the sections that train new runs (None: ``seeds``); ``total_epochs``: N of the pretraining
    split (None: the profile's epoch cap per phase); ``placements``: None for
    :func:`default_placements`."""
    regimes, policies, heads = list(regimes), list(policies), list(heads)
    weightings, weighting_regimes = list(weightings), list(weighting_regimes)
    if ablation_seeds is None:
        ablation_seeds = seeds
    how = dict(device=device, progress=profile_settings(profile).progress, executor=executor, workers=workers)
    base = make_config(profile, **overrides)
    num_blocks = arch_spec(base.arch).num_blocks
    total_epochs = base.joint_phase.epochs if total_epochs is None else total_epochs
    splits = sorted({math.ceil(total_epochs * f) for f in (0, 0.25, 0.5, 0.75, 1)})
    placements = default_placements(num_blocks) if placements is None else placements
    placements = list(dict.fromkeys(tuple(p) for p in placements if len(p)))
    result = Result(profile, "ablation_findings", FIGURES, data=dict(
        base=base, num_blocks=num_blocks, total_epochs=total_epochs, splits=splits, placements=placements,
        sections={}))

    def section(name, study, by, panel, hue="regime", backbone=True):
        table = study.budget_table(by, reference=backbone)
        result.data["sections"][name] = dict(study=study, panel=panel, hue=hue, backbone=backbone, table=table)
        result.add(f"ablation_{name}_budget_table", format_budget_table(table))
        result.add(f"ablation_{name}_budget_table_raw", table, percent=True)
        result.add_paired_tables(f"ablation_{name}", study, by)
        return table

    # 2 · exit criterion, on the regimes chapter's runs
    criterion = run_study(profile, {"policy": policies, "regime": regimes}, seeds=seeds, **how, **overrides)
    section("criterion", criterion, ["policy", "regime"], panel="policy")
    result.findings.append(("Exit criterion", _criterion_findings(criterion, policies, regimes)))
    # 1 · pretraining length
    pretraining = run_study(profile, {"backbone_epochs": splits}, seeds=ablation_seeds, **how,
                            total_epochs=total_epochs, **overrides)
    table = section("pretraining", pretraining, "backbone_epochs", panel=None, hue="backbone_epochs", backbone=False)
    result.findings.append(("Pretraining length", _pretraining_findings(pretraining, table, total_epochs)))
    # 3 · head depth
    head_study = run_study(profile, {"head": heads, "regime": regimes}, seeds=ablation_seeds, **how, **overrides)
    section("heads", head_study, ["head", "regime"], panel="head")
    result.add("ablation_heads_exit_costs", head_study.cost_table("head"), percent=True)
    lines = verdicts.advantage_findings(head_study, "mixed", "regime", within="head")
    lines += verdicts.ranking(head_study, "head", within="regime", budgets=[0.25, 0.5, 1.0])
    if "mixed" in regimes:
        lines.append(verdicts.paper_claim(head_study, "head"))
    result.findings.append(("Head depth", lines))
    # 4 · placement
    placement = run_study(profile, {"exit_after_blocks": placements, "regime": regimes}, seeds=ablation_seeds,
                          **how, **overrides)
    section("placement", placement, ["exit_after_blocks", "regime"], panel="exit_after_blocks")
    lines = verdicts.advantage_findings(placement, "mixed", "regime", within="exit_after_blocks")
    lines += verdicts.ranking(placement, "exit_after_blocks", within="regime", budgets=[0.25, 0.5, 1.0])
    if "mixed" in regimes:
        lines.append(verdicts.paper_claim(placement, "exit_after_blocks"))
    result.findings.append(("Placement", lines))
    # 5 · loss weighting
    weighting = run_study(profile, {"method": weightings, "regime": weighting_regimes}, seeds=ablation_seeds,
                          **how, **overrides)
    section("weighting", weighting, ["method", "regime"], panel="regime", hue="method")
    lines = verdicts.ranking(weighting, "method", within="regime")
    if "mixed" in weighting_regimes:  # can a weighting reach the default loss's mixed training?
        lines += verdicts.against_findings(weighting, {"method": weightings[0], "regime": "mixed"},
                                           budgets=[0.25, 0.5, 1.0])
    if {"mixed", "joint"} <= set(weighting_regimes):
        lines.append("Mixed against joint with each loss: "
                     + verdicts.paper_claim(weighting, "method"))
    result.findings.append(("Loss weighting", lines))
    wall = _wall_times(result.data["sections"])
    result.add("ablation_wall_times", wall.set_index(["section", "run", "seed"]))
    result.data["minutes"] = (wall.groupby("section", sort=False)["seconds"].sum() / 60).rename("training minutes")
    result.data["runs_trained"] = len(wall)
    return result


def _criterion_findings(criterion, policies, regimes) -> list[str]:
    lines, orders = [], {}
    for policy in policies:
        part = criterion.select(policy=policy)
        orders[policy] = verdicts.order(part, (0.25, 0.5))
        if "mixed" in regimes:
            (line,) = verdicts.advantage_findings(part, "mixed", "regime")
            lines.append(f"{policy} rule: " + line.removeprefix("Overall: "))
            lines.append(f"{policy} rule: " + verdicts.paper_claim(part))
    same = all(orders[p] == orders[policies[0]] for p in policies)
    lines.append("The order of the regimes at 25 % and 50 % of the cost is "
                 + ("the same under every criterion" if same else "not the same under every criterion")
                 + ": " + "; ".join(f"{p}: {o[0.25]} (25 %), {o[0.5]} (50 %)" for p, o in orders.items()) + ".")
    return lines


def _pretraining_findings(pretraining, table: pd.DataFrame, total_epochs: int) -> list[str]:
    lines = verdicts.ranking(pretraining, "backbone_epochs")
    values = verdicts.seed_values(pretraining, "backbone_epochs")
    best = {}
    for b in (0.25, 0.5, 1.0):
        ranked, comparison = verdicts.lead(values, b)
        if comparison is not None:  # the leader against the runner-up, as the ranking above judges it
            best[b] = f"k = {next(iter(ranked))}" + ("" if comparison.verdict == "ahead" else
                                                    f" ({comparison.verdict} from k = {list(ranked)[1]})")
    lines.append("Best split (backbone epochs k of N = "
                 f"{total_epochs}; thresholds fixed on validation): "
                 + (", ".join(f"{k} at {b:.0%}" for b, k in best.items()) or "none")
                 + ". k = 0 is the joint regime, k = N the disjoint one, every k between a mixed run.")
    ends = [k for k in (0, total_epochs) if k in table.index]  # joint and disjoint
    between = [k for k in table.index if k not in ends]  # the mixed splits
    if ends and between:
        judged = verdicts.best_versus(pretraining, "backbone_epochs", between, ends)
        judged = judged[judged["verdict"] != "one seed"]
        near_best = int((judged["verdict"] != "behind").sum())
        holds = "holds" if len(judged) and near_best == len(judged) else "does not hold"
        lines.append("Paper's claim 'mixed is best or near best at every budget', with a fixed budget of "
                     f"N = {total_epochs} epochs: {holds} here (the best mixed split is not behind the better "
                     f"end at {near_best} of {len(judged)} budgets, ahead at "
                     f"{int((judged['verdict'] == 'ahead').sum())}; 95 % interval over seeds).")
    return lines


def _wall_times(sections: dict) -> pd.DataFrame:
    """Training seconds of the runs each section trained itself: the runs the criterion section
    reads are the regimes chapter's, and a run two sections share counts once, in the first."""
    shared = set(sections["criterion"]["study"].wall_times()["stored"])
    wall = pd.concat([s["study"].wall_times()[["run", "seed", "seconds", "stored"]].assign(section=name)
                      for name, s in sections.items() if name != "criterion"])
    return wall[~wall["stored"].isin(shared)].drop_duplicates("stored")


def _draw(name: str):
    def draw(result: Result):
        s = result["sections"][name]
        if s["panel"]:
            return plots.plot_tradeoff_panels(s["study"], panel=s["panel"], hue=s["hue"], backbone=s["backbone"])
        return plots.plot_tradeoff(s["study"], hue=s["hue"], backbone=s["backbone"])
    draw.__doc__ = f"The {name} section's accuracy against cost."
    return draw


FIGURES = {f"ablation_{name}_tradeoff": _draw(name) for name in SECTIONS}

__all__ = ["FIGURES", "NOTEBOOK", "SECTIONS", "TABLES", "TITLE", "default_placements", "run"]
