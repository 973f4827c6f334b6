"""The library's layers (pyproject.toml's import-linter contracts): imports flow down, no cycles.

The contracts are checked on the package as it is, and on a copy with one import running back
up (a lazy one, inside a function, as the architecture registry once had) and one cycle, which
they must reject: a contract that passes everything would not be worth running."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    if not LINT.is_file():
        pytest.fail(f"{LINT} is missing: import-linter is a test dependency (pyproject.toml)")
    return subprocess.run([str(LINT), "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=100, env={"PYTHONPATH": str(cwd), "PATH": ""})


def test_the_package_keeps_its_layers_and_has_no_cycles():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize("module, line, broken", [
    ("train.py", "def _later():\n    from .study import run_study  # a lazy import back up\n", "mexlib's layers"),
    ("models/backbones.py", "def _later():\n    from .architectures import arch_spec\n",
     "no import cycles between sibling modules"),
])
def test_an_import_running_back_up_or_a_cycle_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "mexlib", tmp_path / "mexlib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "mexlib" / module, "a") as handle:
        handle.write("\n\n" + line)
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert f"{broken} BROKEN" in result.stdout, result.stdout
