"""The regime comparison at smoke scale: tables, findings and plots agree with the runs."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

from mexlib import evaluate, plots, study, verdicts
from mexlib.stats import t_interval
from mexlib.store import RunStore

matplotlib.use("Agg")


def _expected(study_, by, group, rival, budget, picked="validation"):
    """The comparison ``group − rival`` at ``budget`` computed here from the per-seed table:
    the seeds both have a point for, their differences, and the t interval of those."""
    table = study_.seed_table(by, picked)
    table = table[table["budget"] == budget]

    def values(key):
        key = key if isinstance(key, tuple) else (key,)
        mask = np.logical_and.reduce([table[f].map(lambda v, k=k: v == k) for f, k in zip(by, key)])
        return table[mask].set_index("seed")["accuracy"].dropna()

    mine, theirs = values(group), values(rival)
    common = mine.index.intersection(theirs.index)
    differences = (mine[common] - theirs[common]).to_numpy()
    mean, low, high = t_interval(differences)
    return mean, low, high, len(common)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return RunStore(tmp_path_factory.mktemp("study-runs"), device="cpu", progress=False)


@pytest.fixture(scope="module")
def comparison(store):
    return study.compare_regimes("smoke", store=store)


@pytest.fixture(scope="module")
def grid(store, comparison):
    """Methods × regimes, after the regime comparison has stored SDN's runs."""
    trained_before = len(store.trained)
    result = study.run_study("smoke", {"method": ["sdn", "pbee", "ztw"], "regime": ["disjoint", "joint", "mixed"]},
                             store=store)
    result.trained_here = store.trained[trained_before:]
    return result


def test_every_regime_and_seed_is_present_and_backbones_are_shared(comparison):
    assert {(r.values["regime"], r.seed) for r in comparison.runs} == \
        {(r, s) for r in ("disjoint", "joint", "mixed") for s in (0, 1)}
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
                curve = comparison.run(seed, regime=regime).curve
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
        run = comparison.run(seed, regime="disjoint")
        logits, labels = run.logits("test")
        backbone_logits, _ = run.backbone.logits("test")
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
    table = comparison.validation_budget_table()  # the verdicts read the thresholds fixed on validation
    findings = verdicts.regime_findings(comparison)
    for budget, line in zip(evaluate.BUDGETS, findings):
        assert f"{budget:.0%}" in line and "thresholds fixed on validation" in line
        means = {r: table.loc[r, (budget, "mean")] for r in comparison.regimes}
        fitting = sorted((r for r in means if not math.isnan(means[r])), key=means.get, reverse=True)
        if not fitting:
            assert "no regime" in line
        elif len(fitting) > 1:
            best, second = fitting[:2]
            assert f"; {best} against {second}: " in line
            mean, low, high, n = _expected(comparison, ["regime"], best, second, budget)
            assert f"{100 * mean:+.2f} points" in line and f"n = {n}" in line
            verdict = "ahead" if low > 0 else "behind" if high < 0 else "not distinguishable"
            assert f": {verdict}" in line
    assert any(line.startswith("Paper's claim") for line in findings)
    assert any(line.startswith("First exit") for line in findings)


def test_seed_tables_hold_the_values_the_budget_tables_average(comparison):
    for picked, table in (("test", comparison.budget_table(reference=False)),
                          ("validation", comparison.validation_budget_table())):
        seeds = comparison.seed_table(picked=picked)
        assert len(seeds) == len(comparison.runs) * len(evaluate.BUDGETS)
        for regime in comparison.regimes:
            for budget in evaluate.BUDGETS:
                values = seeds[(seeds["regime"] == regime) & (seeds["budget"] == budget)]
                assert sorted(values["seed"]) == sorted(comparison.seeds)
                got = table.loc[regime, (budget, "mean")]
                expected = values["accuracy"].mean(skipna=False)
                assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
                if picked == "validation":
                    assert (math.isnan(got) or
                            table.loc[regime, (budget, "cost")] == pytest.approx(values["cost"].mean()))
    with pytest.raises(ValueError, match="valid: test, validation"):
        comparison.seed_table(picked="oracle")


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
        picks = [evaluate.choose_on_validation(comparison.run(s, regime=regime).val_curve,
                                               comparison.run(s, regime=regime).curve)
                 for s in comparison.seeds]
        for budget in evaluate.BUDGETS:
            accuracies = [p.loc[budget, "accuracy"] for p in picks]
            got = table.loc[regime, (budget, "mean")]
            expected = float(np.mean(accuracies))
            assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected)
            # never better than the best test point within the chosen points' own cost
            for p, seed in zip(picks, comparison.seeds):
                if not math.isnan(p.loc[budget, "accuracy"]):
                    curve = comparison.run(seed, regime=regime).curve
                    within = curve[curve["cost"] <= p.loc[budget, "cost"] + 1e-9]
                    assert p.loc[budget, "accuracy"] <= within["accuracy"].max() + 1e-12


# --- the general grid ----------------------------------------------------------------------

def test_grid_reuses_sdn_runs_and_phase_one_for_every_method(grid):
    assert len(grid.runs) == 3 * 3 * 2
    # only ZTW trained: SDN's runs were stored, PBEE reads them, phase 1 is shared
    assert grid.trained_here and all(name.startswith("run-") for name in grid.trained_here)
    assert len(grid.trained_here) == 3 * 2
    for seed in grid.seeds:
        for regime in grid.values("regime"):
            sdn, pbee = (grid.run(seed, method=m, regime=regime) for m in ("sdn", "pbee"))
            assert sdn.run.path == pbee.run.path and pbee.policy == "patience"
            ztw = grid.run(seed, method="ztw", regime=regime)
            if regime != "joint":
                assert ztw.backbone.path == sdn.backbone.path


def test_grid_tables_group_by_any_field(grid):
    table = grid.budget_table(["method", "regime"])
    assert table.index.names == ["method", "regime"]
    for (method, regime), runs in grid.groups(["method", "regime"]).items():
        for budget in evaluate.BUDGETS:
            per_seed = [evaluate.accuracy_at_budgets(r.curve).loc[budget] for r in runs]
            got = table.loc[(method, regime), (budget, "mean")]
            assert (math.isnan(got) and any(map(math.isnan, per_seed))) or got == pytest.approx(np.mean(per_seed))
    by_method = grid.budget_table("method", reference=False)
    assert list(by_method.index) == ["sdn", "pbee", "ztw"]
    for method in by_method.index:  # pooled over regimes and seeds
        runs = grid.groups("method")[method]
        expected = np.mean([evaluate.accuracy_at_budgets(r.curve).loc[1.0] for r in runs])
        assert by_method.loc[method, (1.0, "mean")] == pytest.approx(expected)
    costs = grid.cost_table("method")
    assert costs.loc["sdn"].tolist() == costs.loc["pbee"].tolist()
    assert costs.loc["ztw", "exit 1"] > costs.loc["sdn", "exit 1"]
    with pytest.raises(ValueError, match="differ in cost"):
        grid.costs
    assert grid.select(method="ztw").costs.flops_per_exit == grid.groups("method")["ztw"][0].costs.flops_per_exit
    summary = grid.summary(["method", "regime"])
    assert summary.shape[0] == 9
    shares = grid.exit_distribution(0.9, by=["method", "regime"])
    assert np.allclose(shares.sum(axis=1), 1.0)


def test_advantage_verdicts_follow_the_per_seed_differences(grid):
    frame = verdicts.advantage(grid, "mixed", "regime", within="method")
    table = grid.validation_budget_table(["method", "regime"])
    assert set(frame["method"]) == {"sdn", "pbee", "ztw"}
    for _, row in frame.iterrows():
        others = {r: table.loc[(row["method"], r), (row["budget"], "mean")] for r in ("disjoint", "joint")}
        others = {r: v for r, v in others.items() if not math.isnan(v)}
        assert row["best other"] == max(others, key=others.get)
        mean, low, high, n = _expected(grid, ["method", "regime"], (row["method"], "mixed"),
                                       (row["method"], row["best other"]), row["budget"])
        assert row["gap"] == pytest.approx(mean) and row["seeds"] == n and row["paired"]
        assert (row["low"], row["high"]) == pytest.approx((low, high), nan_ok=True)
        assert row["verdict"] == ("ahead" if low > 0 else "behind" if high < 0 else "not distinguishable")
    lines = verdicts.advantage_findings(grid, "mixed", "regime", within="method")
    assert len(lines) == 3 and all(line.split(":")[0] in ("sdn", "pbee", "ztw") for line in lines)
    for line, (method, part) in zip(lines, frame.groupby("method", sort=False)):
        assert f"is ahead of the best other regime at {(part['verdict'] == 'ahead').sum()}," in line
        assert f"behind at {(part['verdict'] == 'behind').sum()} of {len(part)} budgets" in line
    on_test = verdicts.advantage(grid, "mixed", "regime", within="method", picked="test")
    test_table = grid.budget_table(["method", "regime"], reference=False)
    for _, row in on_test.iterrows():
        assert row["mixed"] == pytest.approx(test_table.loc[(row["method"], "mixed"), (row["budget"], "mean")])


def test_against_a_reference_group_follows_the_per_seed_differences(grid):
    reference = {"method": "sdn", "regime": "mixed"}
    frame = verdicts.against(grid, reference)
    table = grid.validation_budget_table(["method", "regime"])
    assert set(zip(frame["method"], frame["regime"])) <= set(table.index) - {("sdn", "mixed")}
    assert len(set(zip(frame["method"], frame["regime"]))) == 8
    for _, row in frame.iterrows():
        mean, low, high, n = _expected(grid, ["method", "regime"], (row["method"], row["regime"]), ("sdn", "mixed"),
                                       row["budget"])
        assert row["gap"] == pytest.approx(mean) and row["seeds"] == n
        assert row["verdict"] == ("ahead" if low > 0 else "behind" if high < 0 else "not distinguishable")
    lines = verdicts.against_findings(grid, reference, budgets=[1.0])
    assert len(lines) == 8 and all(" against sdn, mixed (thresholds fixed on validation): " in line for line in lines)
    assert lines[0].startswith("sdn, disjoint against")
    one_field = verdicts.against(grid.select(method="sdn"), {"regime": "joint"})
    assert set(one_field["regime"]) <= {"disjoint", "mixed"}
    with pytest.raises(ValueError, match="no runs with"):
        verdicts.against(grid, {"method": "l2w", "regime": "mixed"})
    with pytest.raises(ValueError, match="unknown grid fields"):
        verdicts.against(grid, {"arch": "resnet-smoke"})


def test_grid_panels_figure(grid):
    fig = plots.plot_tradeoff_panels(grid, panel="method", hue="regime")
    assert sum(ax.get_visible() for ax in fig.axes) == 3
    panels = {ax.get_title().split()[0]: ax for ax in fig.axes if ax.get_visible()}
    # PBEE's patience rule has a handful of operating points: drawn as points, not joined
    drawn = sorted(c.get_label() for c in panels["pbee"].containers)  # the backbone's star is one too
    assert drawn == ["backbone alone", "disjoint", "joint", "mixed"]
    assert not [line for line in panels["pbee"].lines if line.get_label() in ("disjoint", "joint", "mixed")]
    assert all(line.get_linestyle() == "-" for line in panels["sdn"].lines
               if line.get_label() in ("disjoint", "joint", "mixed"))
    assert panels["sdn"].get_shared_x_axes().joined(panels["sdn"], panels["ztw"])
    apart = plots.plot_tradeoff_panels(grid, panel="method", hue="regime", share_x=False)
    first, second = [ax for ax in apart.axes if ax.get_visible()][:2]
    assert not first.get_shared_x_axes().joined(first, second)
    matplotlib.pyplot.close(apart)
    written = plots.save_figure(fig, "test_panels", "smoke")
    assert all(p.stat().st_size > 1000 for p in written)
    matplotlib.pyplot.close(fig)


def test_bad_grid_fields_raise(grid):
    with pytest.raises(ValueError, match="this study's fields: method, regime"):
        grid.budget_table("arch")
    with pytest.raises(ValueError, match="valid methods"):
        study.run_study("smoke", {"method": ["sdn", "msdnet"]})
    with pytest.raises(ValueError, match="cannot be both a grid field and fixed"):
        study.run_study("smoke", {"method": ["sdn"]}, method="gpf")
    with pytest.raises(ValueError, match="no run matches"):
        grid.select(method="gpf")


def test_wall_times_count_each_stored_run_once(grid):
    wall = grid.wall_times()
    assert not wall["run"].str.startswith("pbee").any()  # PBEE's runs are SDN's
    assert (wall["run"] == "backbone (phase 1)").sum() == len(grid.seeds)
    assert len(wall) == len(grid.seeds) * (1 + 2 * 3)  # backbones, then SDN's and ZTW's runs


def test_policy_as_a_grid_field_evaluates_the_same_stored_runs(store, comparison):
    trained_before = len(store.trained)
    criteria = study.run_study("smoke", {"policy": ["confidence", "entropy", "patience"],
                                         "regime": ["joint", "mixed"]}, store=store)
    assert len(store.trained) == trained_before  # nothing new to train
    for run in criteria.runs:
        same = comparison.run(run.seed, regime=run.values["regime"])
        assert run.run.path == same.run.path and run.policy == run.values["policy"]
        thresholds = None if run.policy == "patience" else study.THRESHOLDS
        expected = evaluate.tradeoff_curve(*run.logits("test"), run.costs.relative, run.policy, thresholds)
        assert run.curve.equals(expected)
    entropy = criteria.select(policy="entropy")
    assert entropy.policy == "entropy" and len(entropy.runs) == 2 * len(comparison.seeds)
    with pytest.raises(ValueError, match="cannot be both a grid field and fixed"):
        study.run_study("smoke", {"policy": ["entropy"]}, policy="entropy", store=store)
    with pytest.raises(ValueError, match="valid policies: confidence"):
        study.run_study("smoke", {"policy": ["margin"]}, store=store)


def test_a_field_with_tuple_values_groups_selects_and_judges(store, comparison):
    placement = study.run_study("smoke", {"exit_after_blocks": [(1, 2), (2,)], "regime": ["disjoint", "mixed"]},
                                seeds=[0], store=store)
    only_second = placement.select(exit_after_blocks=(2,))
    assert len(only_second.runs) == 2 and all(r.config.exit_after_blocks == (2,) for r in only_second.runs)
    assert len(placement.select(exit_after_blocks=[(1, 2), (2,)]).runs) == 4
    assert placement.run(0, exit_after_blocks=(1, 2), regime="mixed").run.path == \
        comparison.run(0, regime="mixed").run.path
    table = placement.budget_table("exit_after_blocks", reference=False)
    assert table.index.nlevels == 1 and list(table.index) == [(1, 2), (2,)]
    costs = placement.cost_table("exit_after_blocks")
    assert costs.loc[[(2,)]].isna().to_numpy().sum() == 1  # two exits, not three
    by_both = placement.validation_budget_table(["exit_after_blocks", "regime"])
    frame = verdicts.advantage(placement, "mixed", "regime", within="exit_after_blocks")
    assert set(map(tuple, frame["exit_after_blocks"])) == {(1, 2), (2,)}
    assert (frame["verdict"] == "one seed").all() and frame["low"].isna().all() and (frame["seeds"] == 1).all()
    for _, row in frame.iterrows():  # one seed: the difference alone
        mine = by_both.loc[[(row["exit_after_blocks"], "mixed")], (row["budget"], "mean")].iloc[0]
        other = by_both.loc[[(row["exit_after_blocks"], "disjoint")], (row["budget"], "mean")].iloc[0]
        assert row["gap"] == pytest.approx(mine - other)
    lines = verdicts.advantage_findings(placement, "mixed", "regime", within="exit_after_blocks")
    assert [line.split(":")[0] for line in lines] == ["(1, 2)", "(2,)"] and "one seed" in lines[0]
    assert "cannot be judged" in verdicts.paper_claim(placement, "exit_after_blocks")
    unjudged = verdicts.ranking(placement, "regime", within="exit_after_blocks", budgets=[1.0])
    assert all("one seed (" in line for line in unjudged if " against " in line)
    fig = plots.plot_tradeoff_panels(placement, panel="exit_after_blocks", hue="regime")
    assert sum(ax.get_visible() for ax in fig.axes) == 2
    matplotlib.pyplot.close(fig)


def test_a_pretraining_split_grid_reuses_the_joint_and_disjoint_runs(store, comparison):
    split = study.run_study("smoke", {"backbone_epochs": [0, 1, 2]}, seeds=[0], store=store, total_epochs=2)
    assert split.run(0, backbone_epochs=0).run.path == comparison.run(0, regime="joint").run.path
    assert split.run(0, backbone_epochs=2).run.path == comparison.run(0, regime="disjoint").run.path
    middle = split.run(0, backbone_epochs=1)
    assert middle.config.regime == "mixed" and middle.config.backbone_phase.epochs == 1
    assert middle.config.joint_phase.epochs == 1 and middle.backbone.path != comparison.run(0, regime="mixed").backbone.path
    table = split.validation_budget_table("backbone_epochs")
    frame = verdicts.best_versus(split, "backbone_epochs", [1], [0, 2])
    assert len(frame) and (frame["verdict"] == "one seed").all()
    for _, row in frame.iterrows():
        ends = {k: table.loc[k, (row["budget"], "mean")] for k in (0, 2)}
        ends = {k: v for k, v in ends.items() if not math.isnan(v)}
        assert row["best rival"] == max(ends, key=ends.get) and row["best"] == 1
        gap = table.loc[1, (row["budget"], "mean")] - ends[row["best rival"]]
        assert row["gap"] == pytest.approx(gap) and row["seeds"] == 1


def test_a_grid_over_architectures_has_a_backbone_row_per_architecture(store, comparison, grid):
    archs = study.run_study("smoke", {"arch": ["resnet-smoke", "msdnet-smoke"], "regime": ["disjoint", "mixed"]},
                            seeds=[0], store=store)
    table = archs.budget_table(["arch", "regime"])
    assert list(table.index) == [("resnet-smoke", "disjoint"), ("resnet-smoke", "mixed"),
                                 ("resnet-smoke", study.BACKBONE_ROW), ("msdnet-smoke", "disjoint"),
                                 ("msdnet-smoke", "mixed"), ("msdnet-smoke", study.BACKBONE_ROW)]
    for arch in ("resnet-smoke", "msdnet-smoke"):
        (expected,) = archs.select(arch=arch).backbone_accuracy()
        assert table.loc[(arch, study.BACKBONE_ROW), (1.0, "mean")] == pytest.approx(expected)
        # the disjoint regime's final exit is its architecture's own backbone
        disjoint = archs.run(0, arch=arch, regime="disjoint")
        assert float(evaluate.per_exit_accuracy(*disjoint.logits("test"))[-1]) == pytest.approx(expected)
    # methods share phase 1: one backbone row for all of them
    rows = grid.budget_table(["method", "regime"]).index
    assert sum(study.BACKBONE_ROW in key for key in rows) == 1


def test_equal_compute_controls_train_as_long_as_mixed_trains_its_backbone(store, comparison):
    epochs = study.control_epochs("smoke")
    mixed = comparison.run(0, regime="mixed").config
    assert epochs == mixed.backbone_phase.epochs + mixed.joint_phase.epochs
    controlled = study.compare_regimes("smoke", store=store, controls=True)
    labels = [study.CONTROLS[r].format(epochs=epochs) for r in ("joint", "disjoint")]
    assert controlled.regimes == ["disjoint", "joint", "mixed"] + labels
    for seed in controlled.seeds:
        joint = controlled.run(seed, regime=labels[0])
        (phase,) = [p for p in joint.run.history if "history" in p]
        assert phase["phase"] == "joint" and len(phase["history"]) == epochs  # every epoch trained
        assert joint.config.regime == "joint" and joint.config.joint_phase.patience is None
        disjoint = controlled.run(seed, regime=labels[1])
        assert disjoint.config.regime == "disjoint" and len(disjoint.backbone.history[0]["history"]) == epochs
        assert disjoint.config.heads_phase == comparison.run(seed, regime="disjoint").config.heads_phase
        assert disjoint.backbone.path != comparison.run(seed, regime="disjoint").backbone.path
        for regime in ("disjoint", "joint", "mixed"):  # the regimes' own runs, read back
            assert controlled.run(seed, regime=regime).run.path == comparison.run(seed, regime=regime).run.path
    # the reference row is the regimes' phase-1 backbone, not the controls' longer one
    assert controlled.backbone_accuracy() == comparison.backbone_accuracy()
    wall = controlled.wall_times()
    assert (wall["run"] == f"backbone (phase 1, {epochs} epochs)").sum() == len(controlled.seeds)
    findings = verdicts.regime_findings(controlled)
    (headline,) = [line for line in findings if line.startswith("Under equal compute")]
    for label in labels:
        (line,) = [line for line in findings if line.startswith(f"Mixed against {label} ")]
        for budget in evaluate.BUDGETS:
            if f"at {budget:.0%} " in line:
                mean, low, high, n = _expected(controlled, ["regime"], "mixed", label, budget)
                verdict = "ahead" if low > 0 else "behind" if high < 0 else "not distinguishable"
                assert f"at {budget:.0%} {verdict}" in line and f"{100 * mean:+.2f} points" in line
    counted = sum(line.count(" ahead (") for line in findings if line.startswith("Mixed against"))
    assert f"mixed is ahead in {counted}," in headline
    # the paper's claim is judged among the three regimes
    (claim,) = [line for line in findings if line.startswith("Paper's claim")]
    assert claim == verdicts.paper_claim(comparison)
    with pytest.raises(ValueError, match="as a dict of changes"):
        study.equal_compute_controls("smoke", store=store, joint_phase=3)
