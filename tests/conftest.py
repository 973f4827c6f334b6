"""Shared fixtures. Tests never write into the repository's data, runs or figures folders.
Every test has a time limit (pyproject.toml); ``hang_watchdog`` ends a run whose test hangs."""

from __future__ import annotations

import pytest
import torch

pytest_plugins = ["hang_watchdog"]


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path_factory, monkeypatch):
    runs = tmp_path_factory.mktemp("runs")
    figures = tmp_path_factory.mktemp("figures")
    monkeypatch.setenv("MEXLIB_RUNS", str(runs))
    monkeypatch.setenv("MEXLIB_FIGURES", str(figures))


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def smoke_reproduction(tmp_path_factory):
    """Where the notebook tests leave their executed smoke-profile notebooks and figures (as
    ``make reproduce PROFILE=smoke`` would: ``build/notebooks/smoke/`` and ``figures/smoke/``),
    so the report test builds its site from them instead of executing every notebook again."""
    folder = tmp_path_factory.mktemp("smoke-reproduction")
    (folder / "build" / "notebooks" / "smoke").mkdir(parents=True)
    (folder / "figures" / "smoke").mkdir(parents=True)
    return folder
