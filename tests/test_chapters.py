"""The chapters called from Python, without papermill: what a user's script does."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")  # a script, not a notebook: no inline backend here

from mexlib import chapters, verdicts  # noqa: E402
from mexlib.chapters import gradients, regimes  # noqa: E402
from mexlib.config import figures_dir  # noqa: E402


@pytest.mark.slow
def test_a_chapter_runs_from_a_script_and_saves_what_it_declares():
    result = regimes.run("smoke", seeds=[0, 1], epochs=1)
    study = result["study"]
    # its tables are the study's, and its findings the verdicts computed from them
    assert result.tables["regimes_budget_table_raw"].frame.equals(study.budget_table())
    assert result.findings == [("Regimes", verdicts.regime_findings(study))]
    assert "regimes_against_the_paper" not in result.tables  # the smoke profile is not the paper's
    result.save()
    fig = result.figure("regimes_tradeoff")
    assert fig.axes
    with pytest.raises(ValueError, match="this chapter's figures: regimes_tradeoff, regimes_exits"):
        result.figure("regimes_tradeof")
    written = {p.name for p in figures_dir("smoke").iterdir()}
    assert {"regimes_tradeoff.png", "regimes_tradeoff.pdf", "regimes_findings.md"} <= written
    assert {f"{name}.csv" for name in result.tables} <= written
    assert {p.split(".")[0] for p in written} <= set(chapters.outputs(regimes))
    text = (figures_dir("smoke") / "regimes_findings.md").read_text()
    assert text == "".join(f"- {line}\n" for line in verdicts.regime_findings(study))


def test_a_chapter_rejects_bad_parameters_with_the_valid_choices():
    with pytest.raises(ValueError, match="valid regimes: joint, mixed"):
        gradients.run("smoke", regimes=["disjoint", "joint"])
    with pytest.raises(ValueError, match="valid profiles: smoke, cpu, paper"):
        regimes.run("laptop")


def test_our_numbers_stand_beside_the_papers_only_in_its_settings():
    """The paper-profile table of ours against Table 1 (never made at the smoke or cpu scale)."""
    import numpy as np
    import pandas as pd

    from mexlib.chapters.base import against_the_paper
    from mexlib.config import make_config
    from mexlib.settings import SETTINGS, setting_config
    from mexlib.study import Study, StudyRun

    def study_of(configs):
        runs = [StudyRun(dict(arch=c.arch, regime=c.regime), c.seed, c, None, None, "confidence", None,
                         pd.DataFrame(), pd.DataFrame()) for c in configs]
        return Study(runs, ("arch", "regime"))

    regimes = ["disjoint", "joint", "mixed"]
    paper = [setting_config("resnet34-cifar100", regime=r) for r in regimes]
    ours = [make_config("smoke", regime=r) for r in regimes]
    index = pd.MultiIndex.from_tuples([(c.arch, c.regime) for c in paper + ours], names=["arch", "regime"])
    columns = pd.MultiIndex.from_product([[1.0], ["mean", "std"]], names=["budget", "stat"])
    table = pd.DataFrame(np.tile([0.7512, 0.0031], (6, 1)), index=index, columns=columns)
    beside = against_the_paper(study_of(paper + ours), table, within="arch")
    assert list(beside.index) == [(paper[0].arch, r) for r in regimes]  # the smoke rows have no paper numbers
    assert beside["paper (100 %)"].tolist() == [f"{SETTINGS['resnet34-cifar100'].paper[r]:.2f}" for r in regimes]
    assert beside["ours (100 %)"].tolist() == ["75.1 ± 0.3"] * 3
    assert against_the_paper(study_of(ours), table.loc[[c.arch for c in ours]], within="arch") is None


def test_the_count_baseline_is_the_share_of_internal_exits_whose_gradient_reaches_each_block():
    """Each exit's loss alone, backpropagated through the smoke and cpu models: the blocks it
    reaches (a nonzero gradient), counted per block, give the gradients chapter's baseline."""
    import torch

    from mexlib.analysis import block_parameter_counts
    import torch.nn.functional as F
    from mexlib.analysis.recording import _block_parameters
    from mexlib.config import make_config
    from mexlib.train import build_model

    for profile in ("smoke", "cpu"):
        config = make_config(profile)
        model = build_model(config)
        blocks = [(name, params) for name, params in _block_parameters(model) if name != "heads"]
        assert [name for name, _ in blocks] == list(block_parameter_counts(model))
        x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        y = torch.tensor([0, 1, 2, 3])
        reached = []  # per exit, the blocks its loss sends a gradient to
        for k in range(model.num_exits):
            model.zero_grad(set_to_none=True)
            logits = model.forward_context(x, outputs=False).logits
            F.cross_entropy(logits[k], y).backward()
            reached.append([any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
                            for _, params in blocks])
        final = model.num_exits - 1
        expected = [sum(reached[k][b] for k in range(final)) / sum(reached[k][b] for k in range(model.num_exits))
                    for b in range(len(blocks))]
        assert gradients.count_baseline(config.exit_after_blocks, len(blocks)).tolist() == pytest.approx(expected)


def test_equal_basins_are_reported_as_a_tie():
    import pandas as pd

    from mexlib.chapters.landscape import _widest

    plane = 625  # a 25 × 25 plane: shares are counts of its points
    assert _widest(pd.Series({"disjoint": 80 / plane, "joint": 69 / plane, "mixed": 80 / plane})) == \
        "widest: disjoint and mixed, tied."
    assert _widest(pd.Series({"disjoint": 80 / plane, "joint": 69 / plane, "mixed": 81 / plane})) == "widest: mixed."


def test_the_landscape_paths_cover_every_seed_once_and_the_controls():
    from mexlib.chapters.landscape import CONTINUED, OTHER_HEADS, path_plan

    regimes = ["disjoint", "joint", "mixed"]
    plans = {s: path_plan(regimes, [0, 1, 2], s, controls=True) for s in (0, 1, 2)}
    for s, plan in plans.items():
        names = [p[0] for p in plan]
        assert names[:3] == ["disjoint – joint", "disjoint – mixed", "joint – mixed"]
        assert {f"disjoint – {CONTINUED}", f"mixed – {OTHER_HEADS}"} <= set(names)
        assert all(a[1] == s for _, _, a, _ in plan)  # every path starts at its seed's run
    # Seed to seed in a circle: each regime's three pairs of seeds once.
    pairs = {(a[0], frozenset((a[1], b[1]))) for plan in plans.values() for _, kind, a, b in plan if kind == "seed to seed"}
    assert len(pairs) == 9
    two = [p for s in (0, 1) for p in path_plan(regimes, [0, 1], s, controls=False) if p[1] == "seed to seed"]
    assert [(a, b) for _, _, a, b in two] == [((r, 0), (r, 1)) for r in regimes]
    assert not [p for p in path_plan(regimes, [0], 0, controls=False) if p[1] == "seed to seed"]


def _barriers(values: dict[str, list[float]]):
    import pandas as pd

    return pd.DataFrame([dict(path=name, kind="control" if "continued" in name or "other" in name else "regimes",
                              seed=s, total=v, **{"ends (total)": 0.5}) for name, per_seed in values.items()
                         for s, v in enumerate(per_seed)])


def test_landscape_intervals_and_findings_follow_the_paired_barriers():
    import numpy as np
    from scipy import stats as scipy_stats

    from mexlib.chapters.landscape import interval_table, path_findings

    values = {"disjoint – joint": [0.9, 1.0, 1.2], "disjoint – mixed": [0.03, 0.05, 0.02],
              "joint – mixed": [0.8, 0.7, 0.9], "disjoint – continued": [0.04, 0.05, 0.03],
              "disjoint – mixed, other heads": [0.31, 0.36, 0.26], "mixed – mixed, other heads": [0.2, 0.3, 0.25]}
    barriers = _barriers(values)
    intervals = interval_table(barriers)
    row = intervals.loc["disjoint – joint"]
    half = scipy_stats.t.ppf(0.975, 2) * np.std(values["disjoint – joint"], ddof=1) / np.sqrt(3)
    assert row["barrier"] == pytest.approx(np.mean(values["disjoint – joint"]))
    assert (row["low"], row["high"]) == pytest.approx((row["barrier"] - half, row["barrier"] + half))
    assert row["relative"] == pytest.approx(row["barrier"] / 0.5) and row["seeds"] == 3
    text = "\n".join(path_findings(barriers, intervals, ["disjoint", "joint", "mixed"]))
    assert "disjoint – joint against disjoint – mixed: higher" in text
    assert "the path between disjoint and mixed is lower than every path from joint" in text
    # The continued backbone ends as close to disjoint as mixed does (differences −0.01, 0, −0.01
    # have an interval over zero): the shared start explains the flat path.
    assert "disjoint – mixed against disjoint – continued: not distinguishable with 3 seeds" in text
    assert "needs nothing more than the shared start" in text
    assert "Identical head initialisations account for part of the flat path" in text
    # A mixed run far from disjoint, beyond the control: the verdict turns.
    values["disjoint – mixed"] = [0.5, 0.6, 0.55]
    barriers = _barriers(values)
    text = "\n".join(path_findings(barriers, interval_table(barriers), ["disjoint", "joint", "mixed"]))
    assert "more than the shared start explains" in text
    # joint – mixed exceeds it by 0.3, 0.1, 0.35: an interval over zero with 3 seeds, so no claim.
    assert "joint – mixed against disjoint – mixed: not distinguishable with 3 seeds" in text
    assert "is not lower than every path from joint" in text
