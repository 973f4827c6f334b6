"""``make report``: the static site of a smoke-profile reproduce, opened in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

from mexlib import report, reproduce

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def test_report_needs_a_reproduce_first_and_a_known_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("MEXLIB_BUILD", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make reproduce PROFILE=smoke"):
        report.build_report("smoke")
    with pytest.raises(ValueError, match="valid profiles: smoke, cpu, paper"):
        report.build_report("laptop")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_report_opens_offline_in_a_browser_with_every_link_and_image(tmp_path, monkeypatch, smoke_reproduction):
    browser_path = _browser()
    if browser_path is None:
        pytest.skip("no Chromium here: install Debian's chromium package (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    executed = sorted((smoke_reproduction / "build" / "notebooks" / "smoke").glob("*.ipynb"))
    if [p.stem for p in executed] == [p.stem for p in reproduce.notebooks()]:
        # the notebook tests of this session executed every notebook at smoke scale
        monkeypatch.setenv("MEXLIB_BUILD", str(smoke_reproduction / "build"))
        monkeypatch.setenv("MEXLIB_FIGURES", str(smoke_reproduction / "figures"))
    else:  # run alone: a smoke-profile reproduce of its own
        monkeypatch.setenv("MEXLIB_BUILD", str(tmp_path / "build"))
        reproduce.execute("smoke")
    index = report.build_report("smoke", out=tmp_path / "site")
    pages = sorted(p.name for p in index.parent.glob("*.html"))
    assert pages == sorted(["index.html"] + [f"{nb.stem}.html" for nb in reproduce.notebooks()])

    from mexlib import paths
    screenshot = paths.build_dir() / "report-index.png"
    problems, visited = [], set()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        queue = [index.as_uri()]
        while queue:
            url = queue.pop(0)
            if url in visited:
                continue
            visited.add(url)
            if urlparse(url).scheme in ("http", "https"):
                continue  # a reference outside the site (a paper, a repository): not followed offline
            assert urlparse(url).scheme == "file", f"unexpected link: {url}"
            target = Path(urlparse(url).path)
            assert target.is_file(), f"broken link: {url}"
            page.goto(url)
            page.wait_for_load_state("load")
            if target.suffix == ".html":
                broken = page.eval_on_selector_all(
                    "img", "images => images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
                assert not broken, f"{target.name}: images that did not load: {broken}"
                links = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
                queue += [urldefrag(link)[0] for link in links if not link.startswith(("javascript:", "mailto:"))
                          and urldefrag(link)[0]]
            if url == index.as_uri():  # into the build folder, beside the reproduce's notebooks
                page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert not problems, "\n".join(problems[:20])
    assert screenshot.stat().st_size > 10_000
    notebooks_visited = {Path(urlparse(u).path).name for u in visited if u.endswith(".html")}
    assert {f"{nb.stem}.html" for nb in reproduce.notebooks()} <= notebooks_visited
    figures = list((index.parent / "figures").glob("*.png"))
    assert figures and all(f.as_uri() in visited for f in figures)


def test_report_never_replaces_a_folder_it_did_not_write(tmp_path, monkeypatch):
    monkeypatch.setenv("MEXLIB_BUILD", str(tmp_path / "build"))
    notebooks = tmp_path / "build" / "notebooks" / "smoke"
    notebooks.mkdir(parents=True)
    shutil.copy2(reproduce.notebooks()[0], notebooks / reproduce.notebooks()[0].name)  # unexecuted is enough
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("months of work")
    with pytest.raises(FileExistsError, match="holds something other than a report"):
        report.build_report("smoke", out=precious)
    assert (precious / "thesis.tex").is_file()
    index = report.build_report("smoke", out=tmp_path / "site")
    assert report.build_report("smoke", out=tmp_path / "site") == index  # its own folder: rebuilt


def _stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.iterdir() if p.is_file()}


def test_every_committed_figure_and_table_belongs_to_a_chapter_section():
    """The report groups files by what the chapters declare (no hand-kept map to go stale): every
    file of the committed cpu-profile figures belongs to a chapter, and every file a chapter
    declares for the cpu profile is there (the paper-only tables beside the paper's numbers apart)."""
    from mexlib import chapters, paths

    present = _stems(paths.ROOT / "figures")  # the committed ones (the tests' own MEXLIB_FIGURES is empty)
    assert present, "no committed figures"
    orphans = sorted(stem for stem in present if chapters.owner(stem) is None)
    assert not orphans, f"files no chapter declares (they would land under 'Other figures'): {orphans}"
    declared = {stem for c in chapters.CHAPTERS for stem in chapters.outputs(c) if not stem.endswith("_against_the_paper")}
    assert not declared - present, f"declared but not in figures/: {sorted(declared - present)}"
    assert report._owner("regimes_tradeoff.png") == "01_regimes" and report._owner("exit_latency.csv") == "07_architectures"
    assert report._owner("stray_plot.png") == "other"

