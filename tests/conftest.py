"""Shared fixtures. Tests never write into the repository's data, runs, figures or build folders
(checked at the end of every session: a change there fails the run, naming the files).
Every test has a time limit (pyproject.toml); ``hang_watchdog`` ends a run whose test hangs, and
``child_reaper`` kills whatever a test started and left running."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from mexlib import paths
from mexlib.hardware import threads_per_job

pytest_plugins = ["hang_watchdog", "child_reaper"]

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


#: The repository's folders the tests must leave as they found them (the run store, which a
#: training in the background may be filling meanwhile, apart: every test has its own).
KEPT_AS_FOUND = ("data", "build")


def _snapshot() -> dict[str, tuple[int, int]]:
    found = {}
    for name in KEPT_AS_FOUND:
        folder = paths.ROOT / name
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path.is_relative_to(paths.ROOT / "data" / "runs"):
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found[str(path.relative_to(paths.ROOT))] = (stat.st_size, stat.st_mtime_ns)
    return found


def pytest_configure(config):
    """Datasets and build output of this test session in scratch folders of its own (inherited by
    every process a test starts: kernels, jobs, checks), never the repository's; strict mode, so
    no test reads a run that other code trained."""
    if not os.environ.get("MEXLIB_TEST_SCRATCH"):
        scratch = Path(tempfile.mkdtemp(prefix="mexlib-tests-"))
        os.environ["MEXLIB_TEST_SCRATCH"] = str(scratch)  # xdist workers inherit it: one for all
    scratch = Path(os.environ["MEXLIB_TEST_SCRATCH"])
    os.environ["MEXLIB_DATA"] = str(scratch / "data")
    os.environ["MEXLIB_BUILD"] = str(scratch / "build")
    os.environ["MEXLIB_STRICT"] = "1"  # a stored run of other code fails the test that reads it
    if not hasattr(config, "workerinput"):  # the controller (or a run without workers)
        config._found_in_repository = _snapshot()


def pytest_unconfigure(config):
    before = getattr(config, "_found_in_repository", None)
    if before is None:
        return
    after = _snapshot()
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    shutil.rmtree(os.environ.get("MEXLIB_TEST_SCRATCH", ""), ignore_errors=True)
    if changed:
        raise pytest.UsageError("the tests changed the repository's " + " and ".join(KEPT_AS_FOUND)
                                + " folders: " + ", ".join(changed[:20]))


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
