"""One visual style, and the writers for every figure and table of the study.

Figures are saved as PNG and PDF, tables as CSV and Markdown, into
:func:`mexlib.config.figures_dir` of the profile (``figures/`` for ``cpu``, ``figures/<profile>/``
otherwise). Notebooks call :func:`save_figure` and :func:`save_table`, never ``savefig``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.lines
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns

from .config import figures_dir
from .evaluate import format_mean_std

#: One colour per regime, the same in every figure.
REGIME_COLORS = {"disjoint": "#4C72B0", "joint": "#DD8452", "mixed": "#55A868", "backbone": "#555555"}
REGIME_ORDER = ("disjoint", "joint", "mixed")


def use_style() -> None:
    """The package's plotting style: seaborn's whitegrid, paper context, readable sizes."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    matplotlib.rcParams.update({
        "figure.dpi": 110,
        "savefig.dpi": 160,
        "savefig.bbox": "tight",
        "axes.titleweight": "bold",
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "pdf.fonttype": 42,  # embed TrueType fonts so PDFs stay editable
        "svg.hashsalt": "mexlib",
    })


def _output_folder(profile: str) -> Path:
    folder = figures_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_figure(fig: plt.Figure, name: str, profile: str) -> list[Path]:
    """Save ``fig`` as ``<name>.png`` and ``<name>.pdf`` in the profile's figures folder."""
    folder = _output_folder(profile)
    written = []
    for suffix in ("png", "pdf"):
        path = folder / f"{name}.{suffix}"
        # No creation date in the PDF, so a rerun with the same results changes no byte.
        fig.savefig(path, metadata={"CreationDate": None} if suffix == "pdf" else None)
        written.append(path)
    return written


def save_table(table: pd.DataFrame, name: str, profile: str, index: bool = True,
               percent: bool | Iterable = False, note: str | None = None) -> list[Path]:
    """Save ``table`` as ``<name>.csv`` (full precision) and ``<name>.md`` (as
    :func:`readable` shows it) in the profile's figures folder. ``percent`` names the columns
    (first header level) holding fractions, or ``True`` for all; ``note``: a line under the
    Markdown table (the CSV stays a plain table)."""
    folder = _output_folder(profile)
    csv, markdown = folder / f"{name}.csv", folder / f"{name}.md"
    table.to_csv(csv, index=index)
    shown = readable(table if index else table.reset_index(drop=True), percent)
    markdown.write_text(shown.to_markdown(index=False) + "\n" + (f"\n{note}\n" if note else ""))
    return [csv, markdown]


def readable(table: pd.DataFrame, percent: bool | Iterable = False) -> pd.DataFrame:
    """``table`` as a reader should see it: flat headers (one column per index level, header
    tuples joined by spaces), ``mean ± std`` in one cell where the columns come in pairs
    ``(key, "mean")``, ``(key, "std")``, fractions in percent with one decimal in the columns
    named by ``percent`` (their headers end in "(%)"), other numbers to three significant
    digits, "—" for a missing value. Text cells are kept as they are."""
    as_percent = (lambda key: True) if percent is True else (lambda key, keys=set(percent or ()): key in keys)
    out: dict[str, list[str]] = {}
    index = table.index
    if not (isinstance(index, pd.RangeIndex) and index.name is None):
        names = [n if n is not None else "" for n in index.names]
        for level, name in enumerate(names):
            out[str(name)] = [_cell(v, False) for v in index.get_level_values(level)]
    columns = list(table.columns)
    done = set()
    for column in columns:
        if column in done:
            continue
        key, stat = (column[0], column[-1]) if isinstance(column, tuple) else (column, None)
        pct = as_percent(key)
        pair = (key, "std") if stat == "mean" and (key, "std") in table.columns else None
        header = " ".join(str(c) for c in column) if isinstance(column, tuple) else str(column)
        if pair is not None:
            header, done = str(key), done | {pair}
            cells = [_cell(m, pct, s) for m, s in zip(table[column], table[pair])]
        else:
            cells = [_cell(v, pct) for v in table[column]]
        out[header + (" (%)" if pct else "")] = cells
    return pd.DataFrame(out)


def _cell(value, pct: bool, std=None) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)  # text (and numpy integers) as they are
    return format_mean_std(value, std, percent=pct)


def findings_text(findings: Iterable[tuple[str, Iterable[str]]]) -> str:
    """A notebook's findings, ``(title, lines)`` per section, as Markdown: a heading per
    section, a bullet per line."""
    return "\n".join(f"### {title}\n" + "\n".join(f"- {line}" for line in lines) + "\n" for title, lines in findings)


def save_text(text: str, name: str, profile: str) -> Path:
    """Save generated prose (e.g. a notebook's findings) as ``<name>.md``."""
    path = _output_folder(profile) / f"{name}.md"
    path.write_text(text)
    return path


def _base_regime(value) -> str | None:
    """The regime a value names: the regime itself, or the one an equal-compute control
    (``"joint, 20 epochs"``) varies; None for any other value."""
    base = str(value).split(",")[0]
    return base if base in REGIME_ORDER else None


def _ordered(values) -> list:
    """The regimes in their order, each followed by its controls; any other value after them."""
    def rank(value):
        base = _base_regime(value)
        return (REGIME_ORDER.index(base) if base else 99, base != value)
    return sorted(values, key=rank)


def colors_for(values) -> dict:
    """One colour per value: the regimes' fixed colours (an equal-compute control: its regime's,
    darker), else seaborn's default palette."""
    values = list(values)
    if all(v in REGIME_COLORS or _base_regime(v) for v in values):
        return {v: REGIME_COLORS[v] if v in REGIME_COLORS else
                matplotlib.colors.to_hex(np.array(matplotlib.colors.to_rgb(REGIME_COLORS[_base_regime(v)])) * 0.55)
                for v in values}
    return dict(zip(values, sns.color_palette(n_colors=len(values))))


def is_control(value) -> bool:
    """Whether a value of ``regime`` is an equal-compute control (drawn dashed)."""
    return _base_regime(value) is not None and str(value) != _base_regime(value)


def plot_tradeoff(study, hue: str = "regime", ax: plt.Axes | None = None, title: str | None = None,
                  legend: bool = True, backbone: bool = True) -> plt.Figure:
    """Accuracy against relative cost: a line per value of ``hue`` (mean over seeds, ± std
    band over the same thresholds), each exit alone as a dot, and with ``backbone`` the plain
    backbone as a star (mean over the study's phase-1 runs: turn it off where they differ in
    more than the seed)."""
    fig, ax = _figure(ax, (6.4, 4.4))
    groups = study.groups(hue)
    order = _ordered(groups)
    colors = colors_for(order)
    for value in order:
        curves = [r.curve for r in groups[value]]
        cost = pd.concat([c["cost"] for c in curves], axis=1).mean(axis=1)
        acc = pd.concat([c["accuracy"] for c in curves], axis=1) * 100
        mean, std = acc.mean(axis=1), acc.std(axis=1).fillna(0)
        ranked = cost.argsort()
        if all(r.policy == "patience" for r in groups[value]):
            # a handful of operating points (one per patience): points, not a line between them
            ax.errorbar(cost.iloc[ranked], mean.iloc[ranked], yerr=std.iloc[ranked], color=colors[value],
                        label=str(value), ls="none", marker="o", ms=4, capsize=2, lw=1)
            continue
        ax.plot(cost.iloc[ranked], mean.iloc[ranked], color=colors[value], label=str(value), lw=1.8,
                ls="--" if is_control(value) else "-")
        ax.fill_between(cost.iloc[ranked], (mean - std).iloc[ranked], (mean + std).iloc[ranked],
                        color=colors[value], alpha=0.18, lw=0)
    exits = study.per_exit_accuracy()
    points = exits.groupby([hue, "exit"], sort=False).agg(cost=("cost", "mean"), accuracy=("accuracy", "mean"))
    for (value, _), row in points.iterrows():
        ax.scatter(row["cost"], 100 * row["accuracy"], color=colors[value], s=22,
                   zorder=3, edgecolor="white", lw=0.6)
    accuracy = study.backbone_accuracy() if backbone else []
    if accuracy:
        backbone = pd.Series(accuracy) * 100
        ax.errorbar([1.0], [backbone.mean()], yerr=[backbone.std() if len(backbone) > 1 else 0],
                    marker="*", ms=11, color=REGIME_COLORS["backbone"], ls="none",
                    label="backbone alone")
    ax.set_xlabel("expected cost (share of the backbone's FLOPs)")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    low = min(points["accuracy"].min() * 100, ax.get_ylim()[1] - 1)
    ax.set_ylim(bottom=max(low - 2, 0))
    ax.set_title(title or f"Early-exit trade-off ({study.policy} rule, {_seeds(study)})")
    if legend:
        ax.legend(loc="lower right", title=None if hue == "regime" else hue)
    return fig


def _seeds(study) -> str:
    """"3 seeds", or "3–5 seeds" where the groups have different numbers of seeds (the controls)."""
    counts = sorted({len({r.seed for r in runs}) for runs in study.groups().values()})
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{text} seed" + ("s" if counts[-1] != 1 else "")


def plot_tradeoff_panels(study, panel: str = "method", hue: str = "regime", columns: int = 3,
                         share_y: bool = True, backbone: bool = True, share_x: bool = True) -> plt.Figure:
    """:func:`plot_tradeoff` once per value of ``panel`` (e.g. one panel per method, the
    regimes' curves in each), on shared axes (``share_x=False``: each panel's cost axis fits
    its own data, where the panels' models differ in cost)."""
    values = study.values(panel)
    rows = -(-len(values) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False,
                             sharex=share_x, sharey=share_y, layout="constrained")
    for ax, value in zip(axes.flat, values):
        part = study.select(**{panel: value})
        title = (f"{value} rule" if panel == "policy" else f"{value} ({part.policy} rule)" if panel == "method"
                 else f"{panel} = {value}")
        plot_tradeoff(part, hue, ax=ax, title=title, legend=False, backbone=backbone)
    for ax in axes.flat[len(values):]:
        ax.set_visible(False)
    if share_y:  # each panel set its own limits; on shared axes the last one won: cover every panel
        shown = list(axes.flat[:len(values)])
        highs = [y for ax in shown for line in ax.lines for y in line.get_ydata()]
        highs += [y for ax in shown for c in ax.collections for y in c.get_offsets()[:, 1]]
        lows = [ax.get_ylim()[0] for ax in shown]
        if highs:
            top = max(highs)
            shown[0].set_ylim(min(lows), top + 0.04 * (top - min(lows)))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    fig.suptitle(f"Accuracy against cost, one panel per {panel} (mean ± std over {_seeds(study)})")
    return fig


def plot_exits(study, threshold: float, hue: str = "regime") -> plt.Figure:
    """Left: each exit's own accuracy by ``hue`` (mean ± std over seeds). Right: the share of
    samples leaving at each exit at ``threshold``."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    exits = study.per_exit_accuracy().assign(accuracy=lambda d: d["accuracy"] * 100)
    order = _ordered(study.values(hue))
    colors = colors_for(order)
    sns.pointplot(data=exits, x="exit", y="accuracy", hue=hue, hue_order=order,
                  palette=colors, errorbar="sd", dodge=0.3, markersize=4, linewidth=1.5,
                  ax=left)
    left.set_xlabel("exit (0 = first internal classifier, last = final classifier)")
    left.set_ylabel("test accuracy of the exit alone (%)")
    left.set_title("Accuracy of every exit")
    shares = study.exit_distribution(threshold, by=hue).loc[order] * 100
    shares.T.plot.bar(ax=right, color=[colors[v] for v in order], width=0.8, rot=0)
    right.set_xlabel("exit")
    right.set_ylabel("share of test samples leaving here (%)")
    right.set_title(f"Where samples leave at threshold {threshold:g}")
    right.legend(title=None)
    return fig


def plot_training_curves(history: pd.DataFrame, num_exits: int) -> plt.Figure:
    """Validation accuracy per exit and epoch: a row of panels per regime, one per phase."""
    accuracy = history[history["metric"] == "val_acc"]
    panels = list(accuracy.groupby(["regime", "phase"], sort=False).groups)
    regimes = _ordered(dict.fromkeys(r for r, _ in panels))
    columns = max(sum(1 for r, _ in panels if r == regime) for regime in regimes)
    fig, axes = plt.subplots(len(regimes), columns, figsize=(4.2 * columns, 2.8 * len(regimes)),
                             squeeze=False, sharey=True, layout="constrained")
    palette = sns.color_palette("viridis", num_exits)
    for row, regime in enumerate(regimes):
        phases = [p for r, p in panels if r == regime]
        for col in range(columns):
            ax = axes[row, col]
            if col >= len(phases):
                ax.set_visible(False)
                continue
            frame = accuracy[(accuracy["regime"] == regime) & (accuracy["phase"] == phases[col])]
            for k, exit_frame in frame.groupby("exit"):
                ax.plot(exit_frame["epoch"] + 1, 100 * exit_frame["value"], marker="o", ms=3,
                        color=palette[k], label=f"exit {k}")
            ax.set_title(f"{regime}: phase '{phases[col]}'", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            if col == 0:
                ax.set_ylabel("validation accuracy (%)")
    handles = [matplotlib.lines.Line2D([], [], color=palette[k], marker="o", ms=3, label=f"exit {k}")
               for k in range(num_exits)]
    fig.legend(handles=handles, loc="outside right center")
    return fig


def _figure(ax, size):
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        return fig, ax
    return ax.figure, ax
