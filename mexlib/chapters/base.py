"""What every chapter returns: a :class:`Result` holding its tables, its findings and what its
figures need, so that a notebook (or a user's script, or a test) calls ``chapter.run(...)`` and
then only displays, draws and saves.

A chapter module declares ``NOTEBOOK`` (the notebook it serves), ``TITLE``, ``FIGURES`` (each
figure's file name and the function that draws it from a result) and ``TABLES`` (every table
and text it may save, by file name); the report (:mod:`mexlib.report`) groups the files in
``figures/`` by these declarations.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .. import plots
from ..evaluate import format_budget_table, format_mean_std
from ..settings import setting_for
from ..store import stale_reads, stale_runs

#: The findings section that names the stored runs other code trained.
STALE_SECTION = "Runs from other code"


@dataclass
class Table:
    """A table as saved: the frame and how :func:`mexlib.plots.save_table` writes it."""

    frame: pd.DataFrame
    percent: bool | Iterable[str] = False

    def markdown(self) -> str:
        """The table as its Markdown file shows it."""
        return plots.readable(self.frame, self.percent).to_markdown(index=False)


@dataclass
class Result:
    """A chapter's outcome for one profile: ``tables`` (file name → :class:`Table`),
    ``findings`` (``(section title, sentences)``; sentences computed from the tables, never
    written by hand), ``data`` (whatever the figures and the notebook's text need) and the
    chapter's figure drawers (file name → function of this result)."""

    profile: str
    findings_name: str
    drawers: Mapping[str, Callable[["Result"], Any]]
    tables: dict[str, Table] = field(default_factory=dict)
    findings: list[tuple[str, list[str]]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    flat_findings: bool = False  # one list of sentences, saved as bullets without headings
    stale: dict[str, str] = field(default_factory=dict)  # stored runs other code trained: name → its fingerprint

    def __getitem__(self, name: str) -> Any:
        """``result["budget"]``: an entry of :attr:`data`."""
        return self.data[name]

    def add(self, name: str, frame: pd.DataFrame, percent: bool | Iterable[str] = False) -> pd.DataFrame:
        self.tables[name] = Table(frame, percent if isinstance(percent, bool) else list(percent))
        return frame

    def add_paired_tables(self, prefix: str, study, by=None) -> pd.DataFrame:
        """The tables a chapter's paired verdicts rest on: ``{prefix}_budget_table_validation``
        (each seed's threshold fixed on validation) and ``{prefix}_budget_table_seeds`` (every
        seed's values, :func:`seed_table`), grouped by the grid fields ``by``; returns the
        validation table."""
        validation = study.validation_budget_table(by)
        self.add(f"{prefix}_budget_table_validation", format_budget_table(validation))
        self.add(f"{prefix}_budget_table_seeds", seed_table(study, by))
        return validation

    def stale_note(self, names: bool = True) -> str | None:
        """A sentence on the stored runs behind this result that other code trained (each code's
        fingerprint with its count of runs; ``names``: and the runs' folders), or None when there
        are none."""
        if not self.stale:
            return None
        counts = Counter(self.stale.values())
        n = len(self.stale)
        text = (f"{n} stored run{'s' if n > 1 else ''} behind these results {'were' if n > 1 else 'was'} trained "
                f"by other code than this one's (" + ", ".join(f"code {fingerprint}: {count}" for fingerprint, count
                                                               in counts.items()) + ")")
        if not names:
            return text + "; the findings name them."
        return (text + ": " + ", ".join(self.stale) + ". They are reused because the results version is unchanged; "
                "`make reproduce STRICT=1` refuses them (train them again if that change alters results).")

    def findings_markdown(self) -> str:
        """The findings as their Markdown file holds them, with the stale runs' note last."""
        findings = self.findings + ([(STALE_SECTION, [self.stale_note()])] if self.stale else [])
        if self.flat_findings:
            return "".join(f"- {line}\n" for _, lines in findings for line in lines)
        return plots.findings_text(findings)

    def section(self, title: str) -> str:
        """One section's sentences as Markdown bullets (for the notebook, under that section)."""
        (lines,) = [lines for t, lines in self.findings if t == title]
        return "\n".join(f"* {line}" for line in lines)

    def save(self) -> None:
        """Write every table (CSV and Markdown) and the findings into the profile's figures."""
        for name, table in self.tables.items():
            plots.save_table(table.frame, name, self.profile, percent=table.percent, note=self.stale_note(names=False))
        plots.save_text(self.findings_markdown(), self.findings_name, self.profile)

    def figure(self, name: str):
        """Draw the figure ``name``, save it (PNG and PDF) into the profile's figures and return it."""
        if name not in self.drawers:
            raise ValueError(f"unknown figure {name!r}; this chapter's figures: {', '.join(self.drawers)}")
        fig = self.drawers[name](self)
        plots.save_figure(fig, name, self.profile)
        return fig


def records_stale_runs(run: Callable[..., Result]) -> Callable[..., Result]:
    """A chapter's ``run``, whose result names the stored runs it read that other code trained
    (:attr:`Result.stale`: in its findings and under its Markdown tables)."""
    @functools.wraps(run)
    def wrapper(*args, **kwargs) -> Result:
        mark = stale_reads()
        result = run(*args, **kwargs)
        result.stale = stale_runs(since=mark)
        return result
    return wrapper


def against_the_paper(study, table: pd.DataFrame, within: str | None = None) -> pd.DataFrame | None:
    """Ours at the full budget (from ``table``, a budget table of ``study`` by ``within`` and
    regime, or by regime alone) beside the paper's Table 1 (as read by third parties), for every
    group whose runs have the paper's numbers (the paper profile of a Table 1 setting); None if
    none has."""
    rows = []
    for value in study.values(within) if within else [None]:
        part = study.select(**{within: value}) if within else study
        setting = setting_for(part.runs[0].config)
        for regime in part.regimes if setting is not None else ():
            key = (value, regime) if within else regime
            rows.append({**({within: value} if within else {}), "regime": regime,
                         "ours (100 %)": format_mean_std(table.loc[key, (1.0, "mean")], table.loc[key, (1.0, "std")]),
                         "paper (100 %)": f"{setting.paper[regime]:.2f}"})
    return pd.DataFrame(rows).set_index([within, "regime"] if within else "regime") if rows else None


def seed_table(study, by=None) -> pd.DataFrame:
    """Each run's accuracy and cost (percent) at each budget, both ways of picking the point
    (``picked``: the best test point, or the threshold fixed on validation), by the grid fields
    ``by`` (None: all of them): what every mean, std and interval of a chapter is computed from,
    for a reader to redo any test."""
    parts = [study.seed_table(by, picked=picked).assign(picked=picked) for picked in ("test", "validation")]
    table = pd.concat(parts, ignore_index=True)
    table[["accuracy", "cost"]] = (100 * table[["accuracy", "cost"]]).round(4)
    table["budget"] = (100 * table["budget"]).round().astype(int)
    return table.set_index(["picked", *study.by_fields(by), "seed", "budget"])


__all__ = ["Result", "Table", "against_the_paper", "seed_table"]
