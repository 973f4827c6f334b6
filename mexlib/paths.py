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

No other module builds a path relative to the working directory. :func:`write_whole` is how a
file that others read while it changes (a checkpoint, a marker, a results file) is written.
"""

from __future__ import annotations

import os
import uuid
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


def write_whole(path: Path, data: str | bytes) -> None:
    """``data`` into ``path`` whole or not at all: written to a temporary file of this call's own
    beside it (made with the process's umask, as a plain write would) and renamed over ``path``,
    so a reader sees the old file or the new one, never half of one, and two writers never share
    a temporary file. A failure (a full disk, a read-only folder) raises its ``OSError`` and
    leaves ``path`` as it was and no temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with tmp.open("xb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
