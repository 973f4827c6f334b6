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
V2 = Path("/sys/fs/cgroup")
V1 = Path("/sys/fs/cgroup/cpu")


def _usable() -> Path | None:
    """Where the tool makes its group (its own test: v2 with the cpu controller, else v1's cpu
    controller), when this process is root; else None."""
    if os.geteuid() != 0:
        return None
    if (V2 / "cgroup.controllers").is_file():
        return V2 if "cpu" in (V2 / "cgroup.controllers").read_text().split() else None
    return V1 if (V1 / "cpu.cfs_quota_us").is_file() else None


PARENT = _usable()
needs_cgroups = pytest.mark.skipif(PARENT is None, reason="needs root and a cgroup cpu controller")

#: Busy one thread for 0.3 s of CPU time, then report the times, the ISA settings and the quota
#: of the cgroup it ran in (v1's cpu controller or v2's single hierarchy).
BURN = """
import json, os, time
start, cpu = time.perf_counter(), time.process_time()
while time.process_time() - cpu < 0.3:
    pass
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
lines = open("/proc/self/cgroup").read().splitlines()
v1 = [l.split(":", 2)[2] for l in lines if "cpu" in l.split(":")[1].split(",")]
if v1:
    base = "/sys/fs/cgroup/cpu" + v1[0]
    quota = [int(open(base + "/cpu.cfs_quota_us").read()), int(open(base + "/cpu.cfs_period_us").read())]
else:
    base = "/sys/fs/cgroup" + [l.split(":", 2)[2] for l in lines if l.startswith("0::")][0]
    quota = [int(v) for v in open(base + "/cpu.max").read().split()]
print(json.dumps({"wall": wall, "cpu": cpu, "quota": quota, "group": os.path.basename(base),
                  "isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "aten": os.environ.get("ATEN_CPU_CAPABILITY")}))
"""


def _tool(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The tool run with ``env`` added to this environment, less any ISA caps of its own (the
    suite may itself run under the tool)."""
    base = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    return subprocess.run(["bash", str(TOOL), *args], capture_output=True, text=True, timeout=60,
                          env={**base, **env})


def _groups() -> set[str]:
    return {p.name for p in PARENT.glob("mexlib-slower-*")}


def test_usage_and_bad_settings_are_refused_with_a_message():
    usage = _tool()
    assert usage.returncode == 2 and "tools/slower_cpu.sh CPUS COMMAND" in usage.stderr
    for bad in ("fast", "0", "-1"):
        result = _tool(bad, "true")
        assert result.returncode == 2 and "CPUS must be a number of cores" in result.stderr
    result = _tool("1", "true", SLOWER_CPU_ISA="avx512")
    assert result.returncode == 2 and "SLOWER_CPU_ISA must be avx2 (the default) or native" in result.stderr


@needs_cgroups
def test_the_command_runs_in_its_own_group_with_its_quota_and_avx2_kernels():
    before = _groups()
    slow = _tool("0.2", sys.executable, "-c", BURN)
    assert slow.returncode == 0, slow.stderr
    measured = json.loads(slow.stdout)
    assert measured["group"].startswith("mexlib-slower-")
    assert measured["quota"] == [20_000, 100_000]  # 0.2 cores: 20 ms of every 100 ms
    assert measured["wall"] > 3 * measured["cpu"], measured  # held to it (unthrottled: equal)
    assert (measured["isa"], measured["aten"]) == ("AVX2", "avx2")
    assert "[slower_cpu] exit status 0" in slow.stderr
    native = json.loads(_tool("1.5", sys.executable, "-c", BURN, SLOWER_CPU_ISA="native").stdout)
    assert native["quota"] == [150_000, 100_000] and native["isa"] is None, native
    assert _groups() == before  # each group is removed afterwards


@needs_cgroups
def test_the_commands_exit_status_is_passed_on():
    result = _tool("1", sys.executable, "-c", "raise SystemExit(3)")
    assert result.returncode == 3 and "[slower_cpu] exit status 3" in result.stderr
