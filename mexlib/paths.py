"""Where everything lives, anchored at the repository root.

Every folder can be moved with an environment variable, so a cluster job or a test can point
the package at scratch space without touching code:

=================  ==================  =========================================
folder             variable            default
=================  ==================  =========================================
datasets           ``MEXLIB_DATA``     ``<root>/data``
run store          ``MEXLIB_RUNS``     ``<root>/data/runs``
figures, tables    ``MEXLIB_FIGURES``  ``<root>/figures``
build output       ``MEXLIB_BUILD``    ``<root>/build``
=================  ==================  =========================================

No other module builds a path relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The profile whose figures are committed at the top of ``figures/``; others get a subfolder.
COMMITTED_PROFILE = "cpu"


def _folder(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """Datasets, one subfolder per dataset in torchvision's layout."""
    return _folder("MEXLIB_DATA", ROOT / "data")


def runs_dir() -> Path:
    """The run store (see :mod:`mexlib.store`)."""
    return _folder("MEXLIB_RUNS", data_dir() / "runs")


def build_dir() -> Path:
    """Executed notebooks and other build output; safe to delete."""
    return _folder("MEXLIB_BUILD", ROOT / "build")


def figures_dir(profile: str = COMMITTED_PROFILE) -> Path:
    """Figures and tables of one profile.

    The ``cpu`` profile writes to ``figures/`` itself (committed and shown in the README); every
    other profile writes to ``figures/<profile>/`` so a smoke or test run never overwrites the
    committed figures.
    """
    base = _folder("MEXLIB_FIGURES", ROOT / "figures")
    return base if profile == COMMITTED_PROFILE else base / profile


def notebooks_dir() -> Path:
    return ROOT / "notebooks"
