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

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent

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


def figures_root() -> Path:
    """Figures and tables; each profile's folder under it: :func:`mexlib.config.figures_dir`."""
    return _folder("MEXLIB_FIGURES", ROOT / "figures")


def notebooks_dir() -> Path:
    return ROOT / "notebooks"
