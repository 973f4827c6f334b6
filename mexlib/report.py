"""The whole study as a static site: ``python -m mexlib.report --profile cpu`` (``make report``).

It renders the executed notebooks of the last ``make reproduce`` of a profile
(``build/notebooks/<profile>/``) to HTML with their code hidden (``--code`` keeps it), turns
every table of the profile's figures folder into an HTML page, copies the figures, and writes an
index page that links every notebook, figure and table, into ``build/report/<profile>/``. The
site needs nothing but the files: remote scripts and styles that nbconvert's template would load
(MathJax, require.js, the widget manager) are left out, links between notebooks point at their
HTML pages, and images are embedded or copied next to the pages, so it opens offline from disk
(``index.html``).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from . import chapters, paths
from .config import PROFILES, profile_settings
from .config import figures_dir as config_figures_dir

#: The file that marks a folder as a report, which a rebuild may replace.
MARKER = ".mexlib-report"
_REMOTE = re.compile(r"<script[^>]*\ssrc=\"https?://[^\"]*\"[^>]*>\s*</script>|<link[^>]*\shref=\"https?://[^\"]*\"[^>]*>",
                     re.I)
_REMOTE_INLINE = re.compile(r"<script[^>]*>(?:(?!</script>).)*?import\(\s*\"https?://(?:(?!</script>).)*</script>", re.S)
_STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
.figures figure { margin: 0; width: 320px; } .figures img { width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 90%; } td, th { border: 1px solid #ddd; padding: .2em .5em; }
figcaption { font-size: 85%; } ul.tables { columns: 2; }
</style>"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"{_STYLE}</head><body>\n{body}\n</body></html>\n")


def _notebook_html(source: Path, code: bool) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=not code, exclude_input_prompt=True,
                            exclude_output_prompt=True, embed_images=True)
    exporter.mathjax_url = ""
    notebook = nbformat.read(source, as_version=4)
    notebook.metadata.pop("widgets", None)  # widget state needs the remote widget manager
    body, _ = exporter.from_notebook_node(notebook)
    body = _REMOTE.sub("", body)
    body = re.sub(r"<script[^>]*>\s*</script>", "", body)  # empty script tags left by empty URLs
    body = _REMOTE_INLINE.sub("", body)  # scripts that would import from the web (mermaid)
    return re.sub(r'href="(\d\d_\w+)\.ipynb"', r'href="\1.html"', body)


def _title(notebook: Path) -> str:
    """The notebook's own title: the first heading of its first cell."""
    import nbformat
    first = nbformat.read(notebook, as_version=4).cells[0].source
    heading = next((line.lstrip("# ").strip() for line in first.splitlines() if line.startswith("# ")), None)
    return heading or notebook.stem


def _owner(name: str) -> str:
    """The notebook whose chapter declares the figure or table ``name`` (a file name), or "other"."""
    chapter = chapters.owner(Path(name).stem)
    return chapter.NOTEBOOK if chapter is not None else "other"


def build_report(profile: str = "cpu", out: str | Path | None = None, code: bool = False) -> Path:
    """Build the site and return its index page."""
    profile_settings(profile)  # an unknown profile raises with the valid ones
    executed = sorted((paths.build_dir() / "notebooks" / profile).glob("[0-9]*.ipynb"))
    if not executed:
        raise FileNotFoundError(f"no executed notebooks in {paths.build_dir() / 'notebooks' / profile}: "
                                f"run `make reproduce PROFILE={profile}` first")
    out = Path(out) if out is not None else paths.build_dir() / "report" / profile
    if out.exists():
        if not (out / MARKER).is_file() and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and holds something other than a report; choose another folder")
        shutil.rmtree(out)
    (out / "figures").mkdir(parents=True)
    (out / MARKER).write_text("a site written by mexlib.report; it replaces this folder when rebuilt\n")
    (out / "tables").mkdir()
    for notebook in executed:
        (out / f"{notebook.stem}.html").write_text(_notebook_html(notebook, code))
    figures_dir = config_figures_dir(profile)
    figures = sorted(figures_dir.glob("*.png"))
    for figure in figures:
        shutil.copy2(figure, out / "figures" / figure.name)
        pdf = figure.with_suffix(".pdf")
        if pdf.is_file():
            shutil.copy2(pdf, out / "figures" / pdf.name)
    tables = sorted(figures_dir.glob("*.csv"))
    for table in tables:
        frame = pd.read_csv(table)
        markdown = table.with_suffix(".md")
        shutil.copy2(table, out / "tables" / table.name)
        body = (f"<p><a href=\"../index.html\">← the study</a></p><h1>{html.escape(table.stem)}</h1>"
                f"<p>From <code>{html.escape(str(table.relative_to(paths.ROOT) if table.is_relative_to(paths.ROOT) else table))}</code>"
                f" (full precision; the notebook's Markdown rendering is <code>{html.escape(markdown.name)}</code>).</p>"
                + frame.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.4g}"))
        (out / "tables" / f"{table.stem}.html").write_text(_page(table.stem, body))
    texts = sorted(p for p in figures_dir.glob("*.md") if not p.with_suffix(".csv").is_file())
    for text in texts:  # generated prose: the notebooks' findings
        body = (f"<p><a href=\"../index.html\">← the study</a></p><h1>{html.escape(text.stem)}</h1>"
                f"<pre style=\"white-space: pre-wrap\">{html.escape(text.read_text())}</pre>")
        (out / "tables" / f"{text.stem}.html").write_text(_page(text.stem, body))
    sections = []
    for notebook in executed + [Path("other")]:
        name = notebook.stem if notebook.name != "other" else "other"
        mine_figures = [f for f in figures if _owner(f.name) == name]
        mine_tables = [t.stem for t in tables + texts if _owner(t.name) == name]
        if name == "other" and not (mine_figures or mine_tables):
            continue
        title = _title(notebook) if name != "other" else "Other figures and tables"
        parts = [f"<h2>{html.escape(title)}</h2>"]
        if name != "other":
            parts.append(f"<p><a href=\"{name}.html\">Read the notebook</a> (executed, code hidden)</p>")
        if mine_figures:
            parts.append("<div class=\"figures\">" + "".join(
                f"<figure><a href=\"figures/{f.name}\"><img src=\"figures/{f.name}\" alt=\"{html.escape(f.stem)}\"></a>"
                f"<figcaption>{html.escape(f.stem)}</figcaption></figure>" for f in mine_figures) + "</div>")
        if mine_tables:
            parts.append("<ul class=\"tables\">" + "".join(
                f"<li><a href=\"tables/{t}.html\">{html.escape(t)}</a></li>" for t in mine_tables) + "</ul>")
        sections.append("\n".join(parts))
    index = (f"<h1>How to train your multi-exit model: the study ({html.escape(profile)} profile)</h1>"
             f"<p>{len(executed)} notebooks, {len(figures)} figures and {len(tables) + len(texts)} tables, from the "
             f"last <code>make reproduce PROFILE={html.escape(profile)}</code>. Start with the guided tour.</p>"
             + "\n".join(sections))
    (out / "index.html").write_text(_page(f"mexlib study ({profile})", index))
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--out", default=None, help="the site's folder (default build/report/<profile>)")
    parser.add_argument("--code", action="store_true", help="keep the notebooks' code in the pages")
    args = parser.parse_args(argv)
    index = build_report(args.profile, args.out, args.code)
    print(f"[report] {index} (open it in a browser; it needs no server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
