"""The study's chapters: one module per notebook, each a function from parameters to a
:class:`~mexlib.chapters.base.Result` (tables, computed findings, what the figures need).

========================  ============================  =======================================
notebook                  chapter                       question
========================  ============================  =======================================
``00_data``               :mod:`.dataset` (light)       the data set, its splits, augmentation
``00_tour``               :mod:`.tour` (light)          what an early exit is
``01_regimes``            :mod:`.regimes`               disjoint, joint or mixed?
``02_methods``            :mod:`.methods`               does it depend on the early-exit method?
``03_landscape``          :mod:`.landscape`             one basin or several?
``04_representations``    :mod:`.representations`       what do the blocks keep?
``05_gradients``          :mod:`.gradients`             which exits shape which blocks?
``06_ablations``          :mod:`.ablations`             what else decides it?
``07_architectures``      :mod:`.architectures`         does it depend on the network?
``08_language``           :mod:`.language`              on a pretrained text encoder?
========================  ============================  =======================================

A script runs a chapter without papermill::

    from mexlib.chapters import regimes
    result = regimes.run("smoke")
    print(result.tables["regimes_budget_table"].markdown())
    result.save()                       # tables and findings into figures/smoke/
    result.figure("regimes_tradeoff")   # drawn and saved
"""

from __future__ import annotations

from . import (ablations, architectures, dataset, gradients, landscape, language, methods, regimes, representations,
               tour)
from .base import Result, Table

#: Every chapter, in the order of the notebooks.
CHAPTERS = (dataset, tour, regimes, methods, landscape, representations, gradients, ablations, architectures, language)


def outputs(chapter) -> tuple[str, ...]:
    """The file names (without suffix) of every figure and table ``chapter`` may write."""
    return tuple(dict.fromkeys([*chapter.FIGURES, *chapter.TABLES]))


def owner(stem: str):
    """The chapter that writes the figure or table ``stem`` (a file name without suffix), or None."""
    return next((c for c in CHAPTERS if stem in outputs(c)), None)


__all__ = ["CHAPTERS", "Result", "Table", "ablations", "architectures", "dataset", "gradients", "landscape", "language",
           "methods",
           "outputs", "owner", "regimes", "representations", "tour"]
