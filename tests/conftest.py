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
