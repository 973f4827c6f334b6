"""A pytest plugin: no process a test starts outlives the test.

A test that starts a child (``subprocess.Popen``, a submitit local job, a benchmark script) and
fails or times out before it stops that child would leave it running; on a 2-core machine it
slows every later test. After each test's teardown this plugin kills every process that
descends from the test process and appeared while the test body ran, each one's process group
with it (the tests start their children in sessions of their own, ``start_new_session=True``, so
a grandchild that lost its parent is still found through its group). Processes started by
fixtures while setting a test up (a module's shared kernel, say) are left to those fixtures.
The hang watchdog (``hang_watchdog``) kills every descendant before it ends a stuck worker.
Linux only (it reads ``/proc``); elsewhere it does nothing. ``tests/conftest.py`` loads it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

PROC = Path("/proc")


def _parents() -> dict[int, list[int]]:
    """Every process's children, from ``/proc/<pid>/stat`` (the parent is its fourth field)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(pid: int | None = None) -> set[int]:
    """The processes below ``pid`` (default: this one), at any depth."""
    tree = _parents()
    found: set[int] = set()
    todo = [os.getpid() if pid is None else pid]
    while todo:
        for child in tree.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill(pids: set[int]) -> set[int]:
    """SIGKILL to ``pids`` and to each one's process group (unless it is ours); returns the pids
    that were still there. Direct children are reaped, so none stays a zombie."""
    own = os.getpgid(0)
    alive, groups = set(), set()
    for pid in pids:
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        alive.add(pid)
        if group != own:
            groups.add(group)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    for pid in alive:
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
            except ChildProcessError:  # not ours to reap (a grandchild), or reaped already
                break
            time.sleep(0.01)
    return alive


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    item.stash[_BEFORE] = descendants()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    before = item.stash.get(_BEFORE, None)
    if before is None:  # the test body never ran (setup failed or was skipped)
        return
    left = kill(descendants() - before)
    if left:
        item.warn(LeftRunning(f"{item.nodeid} left {len(left)} process(es) running: killed {sorted(left)}"))


class LeftRunning(pytest.PytestWarning):
    """A test ended with processes it started still running (they were killed)."""


_BEFORE = pytest.StashKey[set]()
