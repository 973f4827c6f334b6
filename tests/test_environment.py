"""The environment files agree, paths are overridable, and the reproduce entry point checks input."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
import tomllib

import pytest
import yaml

from mexlib import paths, reproduce
from mexlib.config import figures_dir

ROOT = paths.ROOT


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_conda_environment_matches_pyproject_and_makefile():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    version = python.split("=", 1)[1]
    minimum = re.match(r">=\s*([\d.]+)", _pyproject()["project"]["requires-python"]).group(1)
    assert version == minimum
    assert re.search(rf"^PYTHON\s*\?=\s*python{re.escape(version)}$",
                     (ROOT / "Makefile").read_text(), re.M)
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["-e .[test]"], "the conda environment installs this package, nothing else"
    assert "pip" in deps


def test_pyproject_is_the_one_list_of_requirements():
    project = _pyproject()["project"]
    names = {re.split(r"[<>=!~ ]", d)[0].lower() for d in project["dependencies"]}
    assert {"torch", "torchvision", "jupyterlab", "papermill", "ipykernel", "matplotlib",
            "seaborn", "pandas", "tqdm"} <= names
    test_names = {re.split(r"[<>=!~ ]", d)[0].lower() for d in project["optional-dependencies"]["test"]}
    assert {"pytest", "nbval"} <= test_names
    assert not list(ROOT.glob("requirements*.txt"))


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "dataset-fashion-mnist" in ci
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make reproduce" in readme


def test_folders_follow_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("MEXLIB_DATA", str(tmp_path / "d"))
    monkeypatch.delenv("MEXLIB_RUNS", raising=False)
    monkeypatch.setenv("MEXLIB_FIGURES", str(tmp_path / "f"))
    monkeypatch.setenv("MEXLIB_BUILD", str(tmp_path / "b"))
    assert paths.data_dir() == tmp_path / "d"
    assert paths.runs_dir() == tmp_path / "d" / "runs"
    assert paths.build_dir() == tmp_path / "b"
    assert figures_dir("cpu") == tmp_path / "f"
    assert figures_dir("smoke") == tmp_path / "f" / "smoke"
    monkeypatch.delenv("MEXLIB_FIGURES")
    assert paths.figures_root() == ROOT / "figures" == figures_dir("cpu")
    with pytest.raises(ValueError, match="valid profiles: smoke, cpu, paper"):
        figures_dir("laptop")


def test_reproduce_rejects_unknown_profiles_and_notebooks():
    with pytest.raises(ValueError, match="valid profiles: smoke, cpu, paper"):
        reproduce.execute("laptop")
    with pytest.raises(ValueError, match="valid: 00_data, 00_tour, 01_regimes"):
        reproduce.execute("smoke", only=["99_missing"])
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "laptop"])
    with pytest.raises(ValueError, match="valid executors: inline, local, slurm, debug"):
        reproduce.execute("smoke", executor="cluster")


def test_every_notebook_that_trains_takes_the_executor_parameters():
    """``make reproduce EXECUTOR=local`` reaches every notebook that trains runs."""
    import papermill
    # the notebooks that train: the tour's comparison, and every chapter that runs a study
    training = [nb for nb in reproduce.notebooks() if "compare_regimes(" in nb.read_text()
                or ("from mexlib.chapters import" in nb.read_text() and "chapter.run(" in nb.read_text())]
    assert len(training) >= 8
    for notebook in training:
        declared = papermill.inspect_notebook(str(notebook))
        assert {"executor", "workers"} <= set(declared), notebook.name
        assert "executor=executor" in notebook.read_text(), notebook.name


def _tiny_notebook(path, source: str) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("profile = 'cpu'")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_smoke_notebooks_run_two_at_a_time_with_a_thread_each(tmp_path, monkeypatch):
    """Each notebook waits until the other has started, so the run ends only if both run at
    once; each kernel gets its share of the cores as threads."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, other in (("01_a", "02_b"), ("02_b", "01_a")):
        _tiny_notebook(folder / f"{name}.ipynb", textwrap.dedent(f"""
            import os, pathlib, time
            here = pathlib.Path(os.getcwd())
            (here / "{name}.started").write_text(os.environ.get("OMP_NUM_THREADS", "unset"))
            deadline = time.monotonic() + 60
            while not (here / "{other}.started").exists():
                assert time.monotonic() < deadline, "the other notebook never started"
                time.sleep(0.05)
            """))
    monkeypatch.setattr(paths, "notebooks_dir", lambda: folder)
    monkeypatch.setenv("MEXLIB_BUILD", str(tmp_path / "build"))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert reproduce.default_jobs("smoke") == min(2, len(os.sched_getaffinity(0))) and reproduce.default_jobs("cpu") == 1
    timings = reproduce.execute("smoke", jobs=2)
    assert [name for name, _ in timings] == ["01_a.ipynb", "02_b.ipynb"]
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert {(folder / f"{n}.started").read_text() for n in ("01_a", "02_b")} == {share}
    assert "OMP_NUM_THREADS" not in os.environ  # the parent's environment as it was
    assert sorted(p.name for p in (tmp_path / "build" / "notebooks" / "smoke").iterdir()) == \
        ["01_a.ipynb", "02_b.ipynb"]


def test_a_failing_notebook_stops_the_queue_and_is_raised(tmp_path, monkeypatch):
    import papermill

    folder = tmp_path / "notebooks"
    folder.mkdir()
    _tiny_notebook(folder / "01_fails.ipynb", "raise RuntimeError('broken on purpose')")
    _tiny_notebook(folder / "02_runs.ipynb", "import time; time.sleep(5)")
    _tiny_notebook(folder / "03_waits.ipynb", "open('03.ran', 'w').close()")
    monkeypatch.setattr(paths, "notebooks_dir", lambda: folder)
    monkeypatch.setenv("MEXLIB_BUILD", str(tmp_path / "build"))
    with pytest.raises(papermill.PapermillExecutionError, match="broken on purpose"):
        reproduce.execute("smoke", jobs=2)
    executed = tmp_path / "build" / "notebooks" / "smoke"
    assert (executed / "02_runs.ipynb").is_file()  # the one running at the time finished
    assert not (folder / "03.ran").exists() and not (executed / "03_waits.ipynb").exists()
    with pytest.raises(ValueError, match="at least 1"):
        reproduce.execute("smoke", jobs=0)


def test_the_longest_test_files_that_go_first_exist():
    """tests/conftest.py hands the workers the longest files first; a renamed one would silently
    go back to the end of the queue."""
    from conftest import LONGEST_UNITS, SHARED_UNITS

    assert LONGEST_UNITS and all((paths.ROOT / unit).is_file() for unit in LONGEST_UNITS)
    assert set(SHARED_UNITS.values()) <= set(LONGEST_UNITS)


# --- tools/install.py: uv with pip's settings -------------------------------------------------

INSTALL = ROOT / "tools" / "install.py"


def _install_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_tool", INSTALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _settings_under(env: dict) -> dict:
    """pip_settings() in a fresh interpreter whose pip sees only ``env``'s configuration."""
    import json
    import subprocess
    import sys

    code = (f"import json, runpy; m = runpy.run_path({str(INSTALL)!r}); "
            "print(json.dumps(m['pip_settings']()))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _pip_free_env(tmp_path, **variables) -> dict:
    """The environment without any PIP_* variable, pip's site-wide files out of reach
    (XDG_CONFIG_DIRS), and the given variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(XDG_CONFIG_DIRS=str(tmp_path / "no-site-config"), HOME=str(tmp_path / "home"), **variables)
    return env


def test_uv_is_given_what_pip_would_use_in_pips_order_of_precedence(tmp_path):
    config = tmp_path / "pip.conf"
    config.write_text(textwrap.dedent("""\
        [global]
        index-url = https://mirror.example/simple
        extra-index-url =
            file:///srv/a/simple
            file:///srv/b/simple
        find-links = /wheels/from-file
        constraint = /global-constraints.txt
        timeout = 42
        [install]
        constraint = /install-constraints.txt
        """))
    env = _pip_free_env(tmp_path, PIP_CONFIG_FILE=str(config), PIP_FIND_LINKS="/wheels/from-env")
    settings = _settings_under(env)
    # the install section overrides the global one, a variable overrides the file, as in pip
    assert settings["constraints"] == ["/install-constraints.txt"]
    assert settings["find_links"] == ["/wheels/from-env"]
    command, uv_env = _install_module().uv_command(settings, python="/env/bin/python", uv="/bin/uv")
    assert command[:6] == ["/bin/uv", "pip", "install", "--quiet", "--python", "/env/bin/python"]
    assert "--compile-bytecode" in command
    pairs = list(zip(command, command[1:]))
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert ("--extra-index-url", "file:///srv/a/simple") in pairs and ("--extra-index-url", "file:///srv/b/simple") in pairs
    assert ("--find-links", "/wheels/from-env") in pairs and ("--constraint", "/install-constraints.txt") in pairs
    assert uv_env["UV_HTTP_TIMEOUT"] == "42"
    no_index = _settings_under({**env, "PIP_NO_INDEX": "1"})
    command, _ = _install_module().uv_command(no_index, python="/env/bin/python", uv="/bin/uv")
    assert "--no-index" in command and "--index-url" not in command


def _wheel(folder, name: str, version: str, code: str):
    """A pure-Python wheel written by hand (a module, METADATA, WHEEL and RECORD)."""
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": code,
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_uv_installs_and_byte_compiles_with_pips_settings_offline(tmp_path):
    """A real uv install, offline: a wheel from a local folder (PIP_FIND_LINKS, PIP_NO_INDEX)
    into a new environment, byte-compiled as pip would."""
    import shutil
    import subprocess
    import sys
    import venv

    uv = shutil.which("uv", path=os.path.dirname(sys.executable))
    if uv is None:
        pytest.skip("this environment was installed with pip (INSTALLER=pip, or uv could not be had)")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "mexlib_probe", "1.0", "ANSWER = 6 * 7\n")
    venv.create(tmp_path / "env", with_pip=False)
    python = str(tmp_path / "env" / "bin" / "python")
    env = _pip_free_env(tmp_path, PIP_FIND_LINKS=str(wheels), PIP_NO_INDEX="1", UV_CACHE_DIR=str(tmp_path / "cache"))
    command, uv_env = _install_module().uv_command(_settings_under(env), python=python, uv=uv)
    done = subprocess.run(command + ["mexlib_probe"], env=uv_env, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    answer = subprocess.run([python, "-c", "import mexlib_probe; print(mexlib_probe.ANSWER)"],
                            capture_output=True, text=True, timeout=60)
    assert answer.stdout.strip() == "42", answer.stderr
    assert list((tmp_path / "env").rglob("__pycache__/mexlib_probe.*.pyc")), "not byte-compiled"


def test_an_unknown_installer_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as stop:
        _install_module().main(["--installer", "conda", "-e", "."])
    assert stop.value.code == 2
    assert "valid installers: uv, pip" in capsys.readouterr().err


def test_reproduce_strict_refuses_stale_runs_in_every_kernel(tmp_path, monkeypatch):
    """``make reproduce STRICT=1`` passes ``--strict``: the kernels (and the jobs they start)
    see MEXLIB_STRICT=1, so their stores refuse runs of other code."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _tiny_notebook(folder / "01_a.ipynb", textwrap.dedent("""
        import os, pathlib
        from mexlib.store import RunStore
        pathlib.Path(os.getcwd(), "strict").write_text(str(RunStore(device="cpu").strict))
        """))
    monkeypatch.setattr(paths, "notebooks_dir", lambda: folder)
    monkeypatch.setenv("MEXLIB_BUILD", str(tmp_path / "build"))
    for flags, expected in (([], "False"), (["--strict"], "True")):
        monkeypatch.delenv("MEXLIB_STRICT", raising=False)
        assert reproduce.main(["--profile", "smoke", "--notebook", "01_a", *flags]) == 0
        assert (folder / "strict").read_text() == expected
    for strict, expected in (("STRICT=1", "--strict=1"), ("STRICT=TRUE", "--strict=TRUE"), ("STRICT=on", "--strict=on"),
                             ("STRICT=", None)):
        command = subprocess.run(["make", "-n", "-o", ".venv/.installed", "reproduce", strict], cwd=ROOT,
                                 capture_output=True, text=True, check=True, timeout=60).stdout
        (line,) = [line for line in command.splitlines() if "-m mexlib reproduce" in line]  # under make: more lines
        assert (expected in line.split()) if expected else "--strict" not in line, command
