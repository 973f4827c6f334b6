"""Every test has a time limit: past it a test fails with its name and the run goes on; a test
stuck in native code, out of reach of pytest-timeout's signal, ends the run with its name (on
xdist workers: fails with its name, and the run goes on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hang_watchdog import HUNG_EXIT_STATUS, time_limit
from mexlib import paths
from mexlib.processes import kill

TESTS = Path(__file__).resolve().parent

SLOW_AND_STUCK = '''
import pathlib, signal, subprocess, time
import pytest

def start_children(name):
    """A child in a session of its own, with a grandchild; their pids in <name>.pids."""
    child = subprocess.Popen(["sh", "-c", "sleep 60 & echo $$ $!; wait"], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    pathlib.Path(f"{name}.pids").write_text(child.stdout.readline())

@pytest.mark.timeout(1)
def test_slow_in_python():
    start_children("slow")
    time.sleep(30)

def test_quick():
    start_children("quick")  # and ends, leaving them running

@pytest.mark.timeout(1)
def test_stuck_in_native_code():
    start_children("stuck")
    # a blocked SIGALRM stands in for a native kernel that never returns to Python
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(30)

def test_never_reached():
    pass
'''


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEXLIB_WATCHDOG_GRACE": "2",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(paths.ROOT)])}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "hang_watchdog", "-p", "no:cacheprovider",
                           "-o", "timeout_method=signal", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)


def _running(folder: Path, name: str) -> list[int]:
    """Which of the processes test ``name`` started (``<name>.pids``) still run (zombies aside)."""
    pids = [int(p) for p in (folder / f"{name}.pids").read_text().split()]
    assert len(pids) == 2
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            running.append(pid)
    return running


def test_a_slow_test_fails_by_name_and_a_stuck_one_stops_the_run_by_name(tmp_path):
    """And no process these tests started outlives them: not the timed-out test's children, not
    those a passing test left running, not those of the test the watchdog stopped."""
    (tmp_path / "test_limits.py").write_text(SLOW_AND_STUCK)
    slow = _pytest(tmp_path, "-v", "-p", "child_reaper", "test_limits.py", "-k", "slow or quick")
    assert slow.returncode == 1
    assert "FAILED test_limits.py::test_slow_in_python - Failed: Timeout (>1.0s)" in slow.stdout
    assert "test_limits.py::test_quick PASSED" in slow.stdout  # the run went on after it
    assert _running(tmp_path, "slow") == [] and _running(tmp_path, "quick") == []
    assert "LeftRunning: test_limits.py::test_quick left 2 process(es) running: killed" in slow.stdout
    done = _pytest(tmp_path, "-v", "-p", "child_reaper", "test_limits.py")
    output = done.stdout + done.stderr
    assert "test_limits.py::test_slow_in_python FAILED" in output
    assert done.returncode == HUNG_EXIT_STATUS
    assert "HUNG TEST: test_limits.py::test_stuck_in_native_code" in done.stderr
    assert "test_never_reached" not in output
    assert _running(tmp_path, "stuck") == []


def test_without_the_reaper_the_children_would_outlive_their_test(tmp_path):
    """The control of the test above: the same tests without the plugin leave their children."""
    (tmp_path / "test_limits.py").write_text(SLOW_AND_STUCK)
    _pytest(tmp_path, "-p", "no:child_reaper", "test_limits.py", "-k", "quick")
    left = _running(tmp_path, "quick")
    try:
        assert len(left) == 2
    finally:
        kill(set(left))


def test_the_watchdog_reads_the_limit_as_pytest_timeout_does(tmp_path):
    """Marker, then ``--timeout``, then the ini value, then PYTEST_TIMEOUT, through public API."""
    (tmp_path / "test_three.py").write_text(
        "import pytest\n@pytest.mark.timeout(7)\ndef test_marked(): pass\n"
        "@pytest.mark.timeout(timeout=8)\ndef test_keyword(): pass\ndef test_plain(): pass\n")
    (tmp_path / "conftest.py").write_text(
        "import json, pathlib\nfrom hang_watchdog import time_limit\n"
        "def pytest_collection_finish(session):\n"
        "    pathlib.Path('limits.json').write_text(json.dumps({i.name: time_limit(i) for i in session.items}))\n")
    for args, env, plain in (([], {"PYTEST_TIMEOUT": "5"}, 5.0), (["-o", "timeout=4"], {"PYTEST_TIMEOUT": "5"}, 4.0),
                             (["--timeout", "3", "-o", "timeout=4"], {}, 3.0), ([], {}, 0.0)):
        environment = {k: v for k, v in os.environ.items() if k != "PYTEST_TIMEOUT"}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "/dev/null",
                        "--rootdir", str(tmp_path), *args, "test_three.py"], cwd=tmp_path, timeout=60,
                       env={**environment, **env, "PYTHONPATH": os.pathsep.join([str(TESTS), str(paths.ROOT)])},
                       capture_output=True)
        limits = json.loads((tmp_path / "limits.json").read_text())
        assert limits == {"test_marked": 7.0, "test_keyword": 8.0, "test_plain": plain}, (args, env)


def test_on_parallel_workers_a_stuck_test_fails_by_name_and_the_run_goes_on(tmp_path):
    """``make test`` runs the suite on pytest-xdist workers: the watchdog ends the worker, xdist
    reports the test it was running as failed and goes on with a fresh worker."""
    (tmp_path / "test_limits.py").write_text(SLOW_AND_STUCK)
    done = _pytest(tmp_path, "-n", "2", "-rf", "test_limits.py")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "HUNG TEST: test_limits.py::test_stuck_in_native_code" in output
    assert "FAILED test_limits.py::test_stuck_in_native_code - worker" in output
    assert "FAILED test_limits.py::test_slow_in_python - Failed: Timeout" in output
    assert "2 failed, 2 passed" in output  # test_never_reached ran after all


def test_the_suite_sets_a_limit_on_every_test(request):
    assert request.config.getini("timeout") and float(request.config.getini("timeout")) > 0
    assert request.config.getini("timeout_method") == "signal"
    for item in request.session.items:
        assert 0 < time_limit(item) <= 600, item.nodeid


def _limit(decorators, default: float) -> float:
    import ast

    for decorator in decorators:
        if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                and decorator.func.attr == "timeout" and decorator.args
                and isinstance(decorator.args[0], ast.Constant)):
            return float(decorator.args[0].value)
    return default


def test_no_inner_timeout_outlasts_the_test_that_sets_it():
    """A subprocess or wait given more time than its test has would be cut short by the test's
    own limit, with a less useful message: every literal ``timeout=`` inside a test is below
    the test's limit, and inside a helper or fixture below the largest limit of its module's
    tests (the tests that may call it)."""
    import ast
    import tomllib

    default = float(tomllib.loads((paths.ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["timeout"])
    too_long = []
    for file in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(file.read_text())
        functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        tests = {f.name: _limit(f.decorator_list, default) for f in functions if f.name.startswith("test_")}
        module_limit = max(tests.values(), default=default)
        for function in functions:
            limit = tests.get(function.name, module_limit)
            for node in ast.walk(function):
                for keyword in getattr(node, "keywords", []) if isinstance(node, ast.Call) else []:
                    if (keyword.arg == "timeout" and isinstance(keyword.value, ast.Constant)
                            and isinstance(keyword.value.value, (int, float)) and keyword.value.value >= limit):
                        too_long.append(f"{file.name}:{node.lineno} {function.name}: timeout={keyword.value.value} "
                                        f"against a limit of {limit:g} s")
    assert not too_long, "\n".join(too_long)
