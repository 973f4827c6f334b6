"""Shared fixtures. Tests never write into the repository's data, runs or figures folders.
Every test has a time limit (pyproject.toml); ``hang_watchdog`` ends a run whose test hangs."""

from __future__ import annotations

import os

import pytest
import torch

from mexlib.hardware import threads_per_job

pytest_plugins = ["hang_watchdog"]

#: ``make test`` runs the suite on two workers (pytest-xdist, ``-n 2``); the scheduler below
#: hands them a test file at a time. The notebook tests share one smoke-profile run store and leave the executed
#: notebooks that the report test builds its site from, so those two files form one unit of
#: work. The longest units go first, so that the short ones fill the end and neither worker
#: waits for the other's long file: seconds on the development machine, 2026-11-29.
SHARED_UNITS = {"tests/test_report.py": "tests/test_notebooks.py"}
LONGEST_UNITS = ["tests/test_notebooks.py",  # 229 s with the report test
                 "tests/test_sweep.py",  # 48
                 "tests/test_hardware.py",  # 46
                 "tests/test_emulated_cpu.py",  # 40
                 "tests/test_benchmarks.py",  # 39
                 "tests/test_study.py",  # 26
                 "tests/test_time_limits.py",  # 24
                 "tests/test_train.py",  # 23
                 "tests/test_methods.py",  # 22
                 "tests/test_store.py"]  # 21; the rest take under 10 s each


def _unit(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return SHARED_UNITS.get(path, path)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        unit = _unit(item.nodeid)
        return LONGEST_UNITS.index(unit) if unit in LONGEST_UNITS else len(LONGEST_UNITS)
    items.sort(key=rank)  # stable: the rest keep their order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadFileScheduling

    class SharedUnitScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # keep the collection's order: the longest unit first
    return SharedUnitScheduling(config, log)


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path_factory, monkeypatch):
    runs = tmp_path_factory.mktemp("runs")
    figures = tmp_path_factory.mktemp("figures")
    monkeypatch.setenv("MEXLIB_RUNS", str(runs))
    monkeypatch.setenv("MEXLIB_FIGURES", str(figures))


def threads_per_worker() -> int:
    """Threads for each test process: two, or the worker's share of the CPUs when the suite runs
    on several workers (two workers on two cores: one thread each; OpenMP threads that outnumber
    the cores make every process wait at each barrier, and the suite ran slower in parallel)."""
    return min(2, threads_per_job(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(autouse=True, scope="session")
def _threads():
    threads = threads_per_worker()
    torch.set_num_threads(min(threads, torch.get_num_threads()))
    if "PYTEST_XDIST_WORKER" in os.environ:  # and for what the tests start: kernels, jobs, checks
        os.environ["OMP_NUM_THREADS"] = str(threads)


@pytest.fixture(scope="session")
def smoke_reproduction(tmp_path_factory):
    """Where the notebook tests leave their executed smoke-profile notebooks and figures (as
    ``make reproduce PROFILE=smoke`` would: ``build/notebooks/smoke/`` and ``figures/smoke/``),
    so the report test builds its site from them instead of executing every notebook again."""
    folder = tmp_path_factory.mktemp("smoke-reproduction")
    (folder / "build" / "notebooks" / "smoke").mkdir(parents=True)
    (folder / "figures" / "smoke").mkdir(parents=True)
    return folder
