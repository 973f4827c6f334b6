"""The notebooks: stored clean, parameterised, executed by papermill, validated by nbval."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from mexlib import chapters, paths, reproduce
from mexlib.config import figures_dir
from mexlib.notebook import unknown_parameters

ROOT = paths.ROOT
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
#: Beyond profile=smoke, what the notebook test passes to keep it short (nbval runs it twice).
#: 02_methods: two trained methods and PBEE on SDN's runs; every method trains in every regime
#: in tests/test_methods.py, and ZTW (whose ensemble stage is the slowest at smoke scale) in the
#: grid of tests/test_study.py.
#: 03_landscape and 04_representations: small planes, paths and samples (the estimators have
#: their own tests in tests/test_analysis.py).
#: 06_ablations: one seed in every section (the profile's two otherwise); 07_architectures: one
#: seed (the MSDNet and ViT runs are its own; the regimes notebook covers two seeds).
SMOKE_TEST_PARAMETERS = {"00_data": {"samples_per_class": 2},
                         "02_methods": {"methods": ["sdn", "pbee", "gpf"]},
                         "04_representations": {"sample_size": 256, "training_size": 128, "resamples": 10},
                         "06_ablations": {"seeds": [0]},
                         "07_architectures": {"seeds": [0]}}


def test_there_are_notebooks():
    assert [nb.name for nb in NOTEBOOKS][:4] == ["00_data.ipynb", "00_tour.ipynb", "01_regimes.ipynb",
                                                 "02_methods.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_opens_and_closes_like_a_chapter(notebook):
    """The question it answers first; "What we found", computed, at the end; a link onwards."""
    cells = nbformat.read(notebook, as_version=4).cells
    assert "**The question" in cells[0].source
    found = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and "## What we found" in c.source]
    assert found, f"{notebook.name} has no 'What we found' section"
    assert any(c.cell_type == "code" for c in cells[found[-1]:]), "its findings must be computed"
    names = {nb.name for nb in NOTEBOOKS}
    links = re.findall(r"\]\((\d\d_\w+\.ipynb)\)", "\n".join(c.source for c in cells[found[-1]:]))
    assert links and set(links) <= names, f"{notebook.name} links to {links}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_parameterised(notebook):
    nb = nbformat.read(notebook, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{notebook.name} is stored with outputs; clear them before committing"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert "parameters" in nb.cells[1].metadata.get("tags", []), \
        "the cell after the title must be tagged 'parameters'"
    assert "profile" in nb.cells[1].source
    assert "check_parameters()" in nb.cells[2].source


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_matches_its_source(notebook):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from make_notebook import render
    finally:
        sys.path.pop(0)
    source = ROOT / "notebooks" / "src" / f"{notebook.stem}.py"
    assert notebook.read_text() == render(source), \
        f"{notebook.name} differs from {source.name}: run `make notebooks`"


def test_unknown_parameters_are_found_in_the_history():
    history = ["", "profile = 'cpu'\nseeds = None\n", "# Parameters\nprofile = 'smoke'\nseed = 3\n", "x = 1"]
    unknown, declared = unknown_parameters(history)
    assert unknown == {"seed"} and declared == {"profile", "seeds"}
    assert unknown_parameters(history[:2] + history[3:]) == (set(), set())


def _execute(notebook: Path, out: Path, **parameters):
    return papermill.execute_notebook(str(notebook), str(out), parameters=parameters,
                                      kernel_name="python3", cwd=str(notebook.parent),
                                      progress_bar=False)


def test_unknown_parameter_stops_the_notebook(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="unknown notebook parameter.*seed"):
        _execute(NOTEBOOKS[1], tmp_path / "out.ipynb", profile="smoke", seed=3)


def test_unknown_profile_stops_the_notebook_with_the_valid_ones(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="valid profiles: smoke, cpu, paper"):
        _execute(NOTEBOOKS[0], tmp_path / "out.ipynb", profile="laptop")


@pytest.mark.notebooks
@pytest.mark.timeout(300)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_scale(notebook, tmp_path, smoke_reproduction, monkeypatch):
    """papermill executes the notebook with profile=smoke; the executed copy and its figures are
    kept for nbval (the next test) and the report test (``smoke_reproduction``). The notebooks
    share one run store, as in ``make reproduce PROFILE=smoke``: a run one notebook trained, the
    next reads."""
    monkeypatch.setenv("MEXLIB_RUNS", str(smoke_reproduction / "runs"))
    executed = tmp_path / notebook.name
    _execute(notebook, executed, **reproduce.unattended_parameters(notebook, "smoke"),
             **SMOKE_TEST_PARAMETERS.get(notebook.stem, {}))
    figures = figures_dir("smoke")
    saved = sorted(p.name for p in figures.glob("*.png"))
    assert saved, "the notebook saved no figure"
    assert all((figures / name.replace(".png", ".pdf")).is_file() for name in saved)
    assert not list(figures_dir("cpu").glob("*.png")), "a smoke run wrote cpu-profile figures"
    # every file it wrote is one its chapter declares, so the report files it under this notebook
    owners = {p.name: getattr(chapters.owner(p.stem), "NOTEBOOK", None) for p in figures.iterdir() if p.is_file()}
    assert {name for name, owner in owners.items() if owner != notebook.stem} == set(), owners
    checked = sum("NBVAL_CHECK_OUTPUT" in c.source for c in nbformat.read(executed, 4).cells)
    assert checked >= 1
    shutil.copy2(executed, smoke_reproduction / "build" / "notebooks" / "smoke" / notebook.name)
    for saved_file in figures.iterdir():
        shutil.copy2(saved_file, smoke_reproduction / "figures" / "smoke" / saved_file.name)


@pytest.mark.notebooks
@pytest.mark.timeout(600)  # 196 s as on the AVX2 machine (tools/slower_cpu.sh 1.1), 88 s here (2026-12-05)
def test_every_executed_notebook_reruns_to_its_own_outputs_under_nbval(tmp_path, smoke_reproduction, monkeypatch):
    """nbval reruns each executed notebook and compares the outputs of the cells marked
    NBVAL_CHECK_OUTPUT: the second run reads every run and analysis back from the store, so a
    result that changes once cached fails here. One nbval process for all notebooks (each still
    in a kernel of its own): a pytest start per notebook was a repeated cost of the suite. A
    notebook the previous test did not execute in this session (this test run alone) is
    executed first."""
    monkeypatch.setenv("MEXLIB_RUNS", str(smoke_reproduction / "runs"))
    folder = smoke_reproduction / "build" / "notebooks" / "smoke"
    for notebook in NOTEBOOKS:
        if not (folder / notebook.name).is_file():
            _execute(notebook, folder / notebook.name, **reproduce.unattended_parameters(notebook, "smoke"),
                     **SMOKE_TEST_PARAMETERS.get(notebook.stem, {}))
    executed = [folder / nb.name for nb in NOTEBOOKS]
    for notebook in executed:  # nbval reruns a copy, so the report's copies keep their first outputs
        shutil.copy2(notebook, tmp_path / notebook.name)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                             "--nbval-sanitize-with", str(SANITIZE), *[str(tmp_path / nb.name) for nb in executed]],
                            cwd=tmp_path, capture_output=True, text=True, timeout=570)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    cells = sum(c.cell_type == "code" for nb in executed for c in nbformat.read(nb, 4).cells)
    assert passed and int(passed.group(1)) == cells, result.stdout[-2000:]  # every code cell ran and passed
