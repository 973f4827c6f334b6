"""Write a notebook from a plain-text source with cell markers (maintainer tool).

The notebooks in ``notebooks/`` are committed without outputs. Their sources live next to
them as ``notebooks/src/<name>.py``: cells are separated by lines ``# %% [markdown]``,
``# %%`` or ``# %% [parameters]`` (a code cell tagged ``parameters``); markdown lines start
with ``# ``. Run ``python tools/make_notebook.py`` to regenerate every notebook; a test
checks that the committed notebooks match their sources.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks" / "src"


def parse(text: str) -> list:
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l.lstrip("#") for l in body.split("\n"))
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
            if tags:
                cell.metadata["tags"] = list(tags)
        cell.pop("id", None)
        cells.append(cell)

    for line in text.split("\n"):
        if line.startswith("# %%"):
            flush()
            marker = line[4:].strip()
            kind = "markdown" if marker == "[markdown]" else "code"
            tags = ["parameters"] if marker == "[parameters]" else []
            lines = []
        else:
            lines.append(line)
    flush()
    return cells


def build(source: Path) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = parse(source.read_text())
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"{source.stem[:12]}-{i:02d}"
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    return notebook


def render(source: Path) -> str:
    return nbformat.writes(build(source)) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write notebooks/*.ipynb from notebooks/src/*.py.")
    parser.add_argument("names", nargs="*", help="only these notebooks (e.g. 01_regimes); default: all")
    args = parser.parse_args(argv)
    valid = [source.stem for source in sorted(SOURCES.glob("*.py"))]
    unknown = [name for name in args.names if name not in valid]
    if unknown:
        parser.error(f"unknown notebooks {unknown}; valid: {', '.join(valid)}")
    for source in sorted(SOURCES.glob("*.py")):
        if args.names and source.stem not in args.names:
            continue
        target = ROOT / "notebooks" / f"{source.stem}.ipynb"
        target.write_text(render(source))
        print("wrote", target.relative_to(ROOT))


if __name__ == "__main__":
    sys.exit(main())
