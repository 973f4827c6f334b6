"""A pytest plugin that ends a run whose test hangs where pytest-timeout cannot stop it.

pytest-timeout (``timeout_method = "signal"``) fails a test that runs past its limit with the
test's name, and the run goes on. But its SIGALRM is handled by Python between bytecodes, so a
test stuck inside a native kernel (a oneDNN convolution that never returns, say) never sees it.
This plugin starts a timer thread for every test; when a test is still running
``WATCHDOG_GRACE_SECONDS`` (``MEXLIB_WATCHDOG_GRACE``, default 30) after its limit, it prints
the test's name and every thread's stack and exits the process with status 3, so the run ends
as a failure that names the test instead of stalling. On pytest-xdist's workers (``make test``)
the worker ends, xdist reports the test it was running as failed ("worker crashed while running
...") and the run goes on with a fresh worker. ``tests/conftest.py`` loads it (``-p hang_watchdog``).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading

import pytest
import pytest_timeout

WATCHDOG_GRACE_SECONDS = float(os.environ.get("MEXLIB_WATCHDOG_GRACE", "30"))
HUNG_EXIT_STATUS = 3


def time_limit(item: pytest.Item) -> float:
    """The test's limit as pytest-timeout sets it, read through pytest's public API only (its
    private settings reader may change in any release): the ``timeout`` marker's value, else
    ``--timeout``, else the ini value ``timeout``, else ``PYTEST_TIMEOUT``; 0: none."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
        if value is not None:
            return float(value)
    for value in (item.config.getoption("timeout", None), item.config.getini("timeout"),
                  os.environ.get("PYTEST_TIMEOUT")):
        if value not in (None, ""):
            return float(value)
    return 0.0


def _stop_hung_test(item: pytest.Item, seconds: float) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # give the real stderr back (pytest captures it at the fd level)
        capture.suspend_global_capture(in_=True)
    err = sys.stderr
    err.write(f"\n\nHUNG TEST: {item.nodeid} is still running {seconds:.0f} s after it started, "
              f"past its time limit, stuck where pytest-timeout's signal cannot reach it (native "
              f"code). Every thread's stack:\n")
    err.flush()
    faulthandler.dump_traceback(file=err, all_threads=True)
    err.write(f"\nHUNG TEST: {item.nodeid}; stopping the test run.\n")
    err.flush()
    from mexlib.processes import descendants, kill

    kill(descendants())  # no child of this process outlives it
    os._exit(HUNG_EXIT_STATUS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    limit = time_limit(item)
    watchdog = None
    debugging = item.config.getvalue("usepdb") or pytest_timeout.is_debugging()
    if limit > 0 and not debugging:
        seconds = limit + WATCHDOG_GRACE_SECONDS
        watchdog = threading.Timer(seconds, _stop_hung_test, (item, seconds))
        watchdog.daemon = True
        watchdog.start()
    try:
        yield
    finally:
        if watchdog is not None:
            watchdog.cancel()
