"""tools/slower_cpu.sh: a command runs with AVX2 kernels and a share of the cores' time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mexlib import paths

TOOL = paths.ROOT / "tools" / "slower_cpu.sh"
CGROUPS = Path("/sys/fs/cgroup")
# cgroup v2 (one tree) or v1's cpu controller, writable by this process
CPU_CONTROLLER = CGROUPS if (CGROUPS / "cgroup.controllers").is_file() else CGROUPS / "cpu"
WRITABLE = CPU_CONTROLLER.is_dir() and os.access(CPU_CONTROLLER, os.W_OK)

BURN = """
import json, os, time
start, cpu = time.perf_counter(), time.process_time()
while time.process_time() - cpu < 0.3:  # one thread busy for 0.3 s of CPU time
    pass
print(json.dumps({"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                  "isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                  "aten": os.environ.get("ATEN_CPU_CAPABILITY")}))
"""


def _tool(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(TOOL), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def _groups() -> set[str]:
    return {p.name for p in CPU_CONTROLLER.glob("mexlib-slower-*")}


def test_usage_and_a_bad_share_are_refused_with_a_message():
    usage = _tool()
    assert usage.returncode == 2 and "tools/slower_cpu.sh CPUS COMMAND" in usage.stdout
    for bad in ("fast", "0", "-1"):
        result = _tool(bad, "true")
        assert result.returncode == 2 and "CPUS must be a number of cores" in result.stderr


@pytest.mark.skipif(not WRITABLE, reason="needs root and a writable cgroup cpu controller")
def test_the_command_gets_its_share_of_cpu_time_and_avx2_kernels():
    before = _groups()
    slow = _tool("0.2", sys.executable, "-c", BURN)
    assert slow.returncode == 0, slow.stderr
    measured = json.loads(slow.stdout)
    # 0.2 cores: 20 ms of every 100 ms, so 0.3 s of CPU takes over a second (unthrottled: 0.3 s)
    assert measured["wall"] > 3 * measured["cpu"], measured
    assert (measured["isa"], measured["aten"]) == ("AVX2", "avx2")
    assert "[slower_cpu] exit status 0" in slow.stderr
    native = json.loads(_tool("2", sys.executable, "-c", BURN, SLOWER_CPU_ISA="native").stdout)
    assert native["wall"] < 2 * native["cpu"] and native["isa"] is None, native
    assert _groups() == before  # its cgroup is removed afterwards


@pytest.mark.skipif(not WRITABLE, reason="needs root and a writable cgroup cpu controller")
def test_the_commands_exit_status_is_passed_on():
    result = _tool("1", sys.executable, "-c", "raise SystemExit(3)")
    assert result.returncode == 3 and "[slower_cpu] exit status 3" in result.stderr
