"""A pytest plugin: no process a test starts outlives the test.

A test that starts a child (``subprocess.Popen``, a submitit local job, a benchmark script) and
fails or times out before it stops that child would leave it running; on a 2-core machine it
slows every later test. After each test's teardown this plugin kills every process that
descends from the test process and appeared while the test body ran, each one's process group
with it (the tests start their children in sessions of their own, ``start_new_session=True``, so
a grandchild that lost its parent is still found through its group). Processes started by
fixtures while setting a test up (a module's shared kernel, say) are left to those fixtures.
The hang watchdog (``hang_watchdog``) kills every descendant before it ends a stuck worker.
Linux only (``mexlib.processes`` reads ``/proc``); elsewhere it does nothing. ``tests/conftest.py`` loads it.
"""

from __future__ import annotations

import pytest

from mexlib.processes import descendants, kill


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
