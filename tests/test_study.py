"""The regime comparison at smoke scale: tables, findings and plots agree with the runs."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

from mexlib import evaluate, plots, study
from mexlib.store import RunStore

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("study-runs"), device="cpu", progress=False)
    return study.compare_regimes("smoke", store=store)


def test_every_regime_and_seed_is_present_and_backbones_are_shared(comparison):
    assert set(comparison.runs) == {(r, s) for r in ("disjoint", "joint", "mixed") for s in (0, 1)}
    # 2 backbones + 6 regime runs, each trained once
    assert sum(name.startswith("backbone-") for name in comparison.trained) == 2
    assert sum(name.startswith("run-") for name in comparison.trained) == 6
    assert comparison.costs.relative.shape == (comparison.num_exits,)


def test_budget_table_matches_the_curves(comparison):
    table = comparison.budget_table()
    for regime in comparison.regimes:
        for budget in evaluate.BUDGETS:
            per_seed = []
            for seed in comparison.seeds:
                curve = comparison.curves[(regime, seed)]
                fits = curve[curve["cost"] <= budget + 1e-9]
                per_seed.append(fits["accuracy"].max() if len(fits) else math.nan)
            expected = float(np.mean(per_seed))
            got = table.loc[regime, (budget, "mean")]
            assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected)
    backbone = table.loc["backbone alone (no exits)"]
    assert math.isnan(backbone[(0.25, "mean")])
    assert backbone[(1.0, "mean")] == pytest.approx(np.mean(comparison.backbone_accuracy()))


def test_disjoint_final_exit_is_the_backbone(comparison):
    for seed in comparison.seeds:
        logits, labels = comparison.test_logits("disjoint", seed)
        backbone_logits, _ = comparison.backbones[seed].logits("test")
        assert torch.equal(logits[-1], backbone_logits[-1])


def test_summary_and_exit_tables(comparison):
    summary = comparison.summary()
    exits = comparison.per_exit_accuracy()
    for regime in comparison.regimes:
        final = exits[(exits.regime == regime) & (exits.exit == comparison.num_exits - 1)]
        assert summary.loc[regime, ("final_exit_accuracy", "mean")] == pytest.approx(final.accuracy.mean())
        oracle = summary.loc[regime, ("oracle_accuracy", "mean")]
        best_exit = exits[exits.regime == regime].groupby("seed").accuracy.max().mean()
        assert oracle >= best_exit - 1e-12
    shares = comparison.exit_distribution(0.5)
    assert np.allclose(shares.sum(axis=1), 1.0)


def test_findings_follow_the_numbers(comparison):
    table = comparison.budget_table()
    findings = comparison.findings()
    for budget, line in zip(evaluate.BUDGETS, findings):
        assert f"{budget:.0%}" in line
        means = {r: table.loc[r, (budget, "mean")] for r in comparison.regimes}
        if all(math.isnan(m) for m in means.values()):
            assert "no regime" in line
        else:
            best = max((r for r in means if not math.isnan(means[r])), key=means.get)
            assert f"best {best}" in line
    assert any(line.startswith("Paper's claim") for line in findings)
    assert any(line.startswith("First exit") for line in findings)


def test_figures_are_drawn_and_saved(comparison):
    plots.use_style()
    for name, fig in [("tradeoff", plots.plot_tradeoff(comparison)),
                      ("exits", plots.plot_exits(comparison, 0.9)),
                      ("curves", plots.plot_training_curves(comparison.training_history(0),
                                                            comparison.num_exits))]:
        written = plots.save_figure(fig, f"test_{name}", "smoke")
        assert all(p.stat().st_size > 1000 for p in written)
        matplotlib.pyplot.close(fig)


def test_bad_regime_and_policy_raise():
    with pytest.raises(ValueError, match="valid regimes: disjoint, joint, mixed"):
        study.compare_regimes("smoke", regimes=("disjoint", "both"))
    with pytest.raises(ValueError, match="valid policies: confidence, entropy, patience"):
        study.compare_regimes("smoke", policy="oracle")


def test_validation_budget_table_scores_validation_picks_on_test(comparison):
    table = comparison.validation_budget_table()
    for regime in comparison.regimes:
        picks = [evaluate.choose_on_validation(comparison.val_curves[(regime, s)],
                                               comparison.curves[(regime, s)])
                 for s in comparison.seeds]
        for budget in evaluate.BUDGETS:
            accuracies = [p.loc[budget, "accuracy"] for p in picks]
            got = table.loc[regime, (budget, "mean")]
            expected = float(np.mean(accuracies))
            assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected)
            # never better than the best test point within the chosen points' own cost
            for p, seed in zip(picks, comparison.seeds):
                if not math.isnan(p.loc[budget, "accuracy"]):
                    curve = comparison.curves[(regime, seed)]
                    within = curve[curve["cost"] <= p.loc[budget, "cost"] + 1e-9]
                    assert p.loc[budget, "accuracy"] <= within["accuracy"].max() + 1e-12
