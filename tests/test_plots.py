"""Tables as readers see them: flat headers, mean ± std in one cell, percent with one decimal."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mexlib import plots
from mexlib.config import figures_dir


def _summary() -> pd.DataFrame:
    columns = pd.MultiIndex.from_product([["accuracy", "seconds"], ["mean", "std"]])
    table = pd.DataFrame([[0.90765, 0.00163, 181.5, 3.25], [0.8926, np.nan, 12.0, 0.5]],
                         index=pd.Index(["disjoint", "joint"], name="regime"), columns=columns)
    table[("accuracy", "cost")] = [0.2517, 0.2537]  # a statistic without a pair stays a column
    return table


def test_readable_pairs_mean_and_std_and_shows_percent_where_asked():
    shown = plots.readable(_summary(), percent=["accuracy"])
    assert list(shown.columns) == ["regime", "accuracy (%)", "seconds", "accuracy cost (%)"]
    assert shown["accuracy (%)"].tolist() == ["90.8 ± 0.2", "89.3"]  # one seed: the mean alone
    assert shown["seconds"].tolist() == ["182 ± 3.25", "12 ± 0.5"]
    assert shown["accuracy cost (%)"].tolist() == ["25.2", "25.4"]


def test_readable_flattens_index_levels_and_marks_missing_values():
    table = pd.DataFrame({"seconds": [1.23456, np.nan]},
                         index=pd.MultiIndex.from_tuples([("joint", 0), ("mixed", 1)], names=["run", "seed"]))
    shown = plots.readable(table)
    assert shown.to_dict("list") == {"run": ["joint", "mixed"], "seed": ["0", "1"], "seconds": ["1.23", "—"]}
    every = plots.readable(pd.DataFrame({"a": [0.5], "b": [0.25]}), percent=True)
    assert every.to_dict("list") == {"a (%)": ["50.0"], "b (%)": ["25.0"]}


def test_save_table_keeps_full_precision_in_csv_and_writes_the_readable_markdown():
    table = _summary()
    csv, markdown = plots.save_table(table, "summary_test", "smoke", percent=["accuracy"])
    assert csv.parent == figures_dir("smoke")
    again = pd.read_csv(csv, header=[0, 1], index_col=0)
    assert np.allclose(again[("accuracy", "mean")], table[("accuracy", "mean")])
    text = markdown.read_text()
    assert "accuracy (%)" in text and "90.8 ± 0.2" in text and "('accuracy', 'mean')" not in text


def test_an_equal_compute_control_has_its_regimes_colour_darker_and_comes_after_it():
    import matplotlib.colors

    values = ["mixed", "joint, 20 epochs", "disjoint, 20-epoch backbone", "joint", "disjoint"]
    colors = plots.colors_for(values)
    for control, regime in (("joint, 20 epochs", "joint"), ("disjoint, 20-epoch backbone", "disjoint")):
        assert colors[regime] == plots.REGIME_COLORS[regime]
        mine, base = (np.array(matplotlib.colors.to_rgb(colors[v])) for v in (control, regime))
        assert np.allclose(mine, base * 0.55, atol=1 / 255)  # the same hue, darker
        assert plots.is_control(control) and not plots.is_control(regime)
    assert plots._ordered(values) == ["disjoint", "disjoint, 20-epoch backbone", "joint", "joint, 20 epochs", "mixed"]
    import seaborn as sns

    other = plots.colors_for(["pool", "conv2"])  # not regimes: seaborn's default palette, in order
    assert [matplotlib.colors.to_hex(c) for c in other.values()] == sns.color_palette(n_colors=2).as_hex()
