"""Every command-line entry point, given bad input, stops with a usage error (exit status 2) that
names what is valid, never with a traceback; and yes/no settings read every spelling of yes."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (module or script, arguments, words the usage error must hold)
BAD_INPUT = {
    "sweep seed as a grid": ("mexlib.sweep", ["status", "--profile", "smoke", "--grid", "seed=0,1"], "--seeds"),
    "sweep seed as a value": ("mexlib.sweep", ["status", "--profile", "smoke", "--set", "seed=5"], "--seeds"),
    "sweep profile as a value": ("mexlib.sweep", ["status", "--profile", "smoke", "--set", "profile=cpu"], "--profile"),
    "sweep grid and value": ("mexlib.sweep", ["status", "--profile", "smoke", "--set", "regime=joint", "--grid",
                                              "regime=mixed"], "regime is both a grid axis and a fixed value"),
    "sweep phase as a number": ("mexlib.sweep", ["status", "--profile", "smoke", "--set", "joint_phase=3"],
                                "joint_phase takes a PhaseConfig or a dict of its fields"),
    "sweep unknown regime": ("mexlib.sweep", ["status", "--profile", "smoke", "--grid", "regime=3"],
                             "valid regimes: disjoint, joint, mixed"),
    "sweep lr nan": ("mexlib.sweep", ["status", "--profile", "smoke", "--set", "lr=nan"], "lr must be a finite number"),
    "reproduce executor": ("mexlib.reproduce", ["--executor", "nope"], "choose from 'auto', 'inline', 'local'"),
    "reproduce jobs": ("mexlib.reproduce", ["--jobs", "0"], "1 or more"),
    "reproduce notebook": ("mexlib.reproduce", ["--notebook", "nope"], "valid: 00_data, 00_tour, 01_regimes"),
    "reproduce strict": ("mexlib.reproduce", ["--strict=maybe"], "neither yes (1, true, yes, on) nor no"),
    "kernel_check batch": ("mexlib.kernel_check", ["--batch", "0"], "1 or more"),
    "kernel_check threads": ("mexlib.kernel_check", ["--threads", "0"], "1 or more"),
    "kernel_check device": ("mexlib.kernel_check", ["--device", "nope"], "valid: auto, cpu, cuda, cuda:<index> or mps"),
    "exit_latency archs": ("benchmarks/exit_latency.py", ["--archs", "nope"], "valid architectures: resnet-smoke"),
    "make_notebook flag": ("tools/make_notebook.py", ["--nope"], "unrecognized arguments: --nope"),
    "make_notebook name": ("tools/make_notebook.py", ["nope"], "valid: 00_data"),
}


def _main(target: str):
    if target.endswith(".py"):
        path = ROOT / target
        spec = importlib.util.spec_from_file_location(f"entry_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main
    return importlib.import_module(target).main


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_a_usage_error_naming_the_valid_choices(case, capsys, tmp_path, monkeypatch):
    target, argv, words = BAD_INPUT[case]
    monkeypatch.setenv("MEXLIB_RUNS", str(tmp_path / "runs"))
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    before = {nb: nb.read_bytes() for nb in notebooks}
    with pytest.raises(SystemExit) as stop:
        _main(target)(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "usage:" in err, err
    assert {nb: nb.read_bytes() for nb in notebooks} == before  # nothing rewritten on the way out
    assert not (tmp_path / "runs").exists()  # nothing trained or stored


def test_a_bad_value_from_a_shell_is_a_usage_error_not_a_traceback(tmp_path):
    """The real process, through ``python -m mexlib``: exit status 2 and no traceback."""
    env = {**os.environ, "MEXLIB_RUNS": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mexlib", "sweep", "status", "--profile", "smoke", "--grid",
                           "seed=0,1"], capture_output=True, text=True, env=env, timeout=100)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "--seeds" in done.stderr, done.stderr


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "yes", "Yes", "on", "ON"])
def test_every_spelling_of_yes_is_strict(word, monkeypatch):
    from mexlib.arguments import flag
    from mexlib.store import strict_mode

    assert flag(word) is True
    monkeypatch.setenv("MEXLIB_STRICT", word)
    assert strict_mode() is True


@pytest.mark.parametrize("word", ["", "0", "false", "no", "OFF"])
def test_every_spelling_of_no_is_not_strict(word, monkeypatch):
    from mexlib.arguments import flag
    from mexlib.store import strict_mode

    assert flag(word) is False
    monkeypatch.setenv("MEXLIB_STRICT", word)
    assert strict_mode() is False


def test_a_strict_setting_that_is_neither_is_refused(monkeypatch):
    from mexlib.arguments import flag
    from mexlib.store import strict_mode

    with pytest.raises(argparse.ArgumentTypeError, match="neither yes"):
        flag("maybe")
    monkeypatch.setenv("MEXLIB_STRICT", "maybe")
    with pytest.raises(ValueError, match="MEXLIB_STRICT: 'maybe' is neither yes"):
        strict_mode()


def test_one_command_names_its_commands_and_refuses_others(capsys):
    from mexlib.cli import COMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main([]) == 2 and "usage: mexlib COMMAND" in capsys.readouterr().out
    assert main(["nope"]) == 2
    assert "unknown command 'nope'; valid commands: reproduce, report, sweep, store, kernel-check" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # a command's own bad input: its usage error
        main(["sweep", "status", "--profile", "laptop"])
    assert stop.value.code == 2 and "invalid choice: 'laptop'" in capsys.readouterr().err


def test_the_installed_command_runs():
    """``pip install`` puts a ``mexlib`` command beside the interpreter (pyproject's scripts)."""
    command = Path(sys.executable).parent / ("mexlib.exe" if os.name == "nt" else "mexlib")
    if not command.exists():
        pytest.skip(f"{command} is not installed: this environment predates the command (reinstall the package)")
    done = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "mexlib COMMAND" in done.stdout, done.stderr
