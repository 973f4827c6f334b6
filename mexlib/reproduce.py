"""Execute every notebook with papermill: ``python -m mexlib.reproduce --profile cpu``.

This is what ``make reproduce`` runs. It makes sure the default dataset is present, then
executes ``notebooks/*.ipynb`` in order with the profile as parameter; executed copies go to
``build/notebooks/<profile>/`` and every figure and table to the profile's figures folder.
``--executor local`` (``make reproduce EXECUTOR=local``) has the notebooks that train runs
train the missing ones as parallel jobs, ``--executor slurm`` on a SLURM cluster
(:mod:`mexlib.sweep`); the notebooks then evaluate from the store as always.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import paths
from .config import PROFILES, make_config
from .data import load_dataset


def notebooks() -> list:
    return sorted(paths.notebooks_dir().glob("[0-9]*.ipynb"))


def unattended_parameters(notebook, profile: str, executor: str = "inline", workers: int = 2) -> dict:
    """The parameters of ``notebook`` executed without a person at it (``make reproduce``, the
    notebook tests): the profile, the executor for the notebooks that train runs, and no live
    widgets (``live = False``: 00_tour says why)."""
    import papermill

    parameters = {"profile": profile}
    declared = papermill.inspect_notebook(str(notebook))
    if executor != "inline" and "executor" in declared:  # the notebooks that train runs
        parameters.update(executor=executor, workers=workers)
    if "live" in declared:
        parameters["live"] = False
    return parameters


def execute(profile: str, only: list[str] | None = None, kernel: str = "python3",
            executor: str = "inline", workers: int = 2) -> list[tuple[str, float]]:
    import papermill

    from .sweep import EXECUTORS
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    selected = [nb for nb in notebooks() if not only or nb.stem in only or nb.name in only]
    if only and len(selected) != len(only):
        raise ValueError(f"unknown notebooks in {only}; valid: {', '.join(nb.stem for nb in notebooks())}")
    out_dir = paths.build_dir() / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = []
    for notebook in selected:
        started = time.perf_counter()
        print(f"[reproduce] {notebook.name} (profile {profile})", flush=True)
        parameters = unattended_parameters(notebook, profile, executor, workers)
        papermill.execute_notebook(str(notebook), str(out_dir / notebook.name),
                                   parameters=parameters, kernel_name=kernel,
                                   cwd=str(paths.notebooks_dir()), progress_bar=False)
        timings.append((notebook.name, time.perf_counter() - started))
        print(f"[reproduce] {notebook.name} done in {timings[-1][1]:.0f} s", flush=True)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--notebook", action="append", help="run only this notebook (repeatable)")
    parser.add_argument("--executor", default="inline", help="how missing runs train: inline (default), "
                        "local (parallel jobs here), slurm (a cluster); see mexlib.sweep")
    parser.add_argument("--workers", type=int, default=2, help="jobs at a time with --executor local")
    args = parser.parse_args(argv)
    # fail early, with instructions, when the profile's dataset is missing
    load_dataset(make_config(args.profile).dataset)
    started = time.perf_counter()
    timings = execute(args.profile, args.notebook, executor=args.executor, workers=args.workers)
    print(f"[reproduce] {len(timings)} notebooks in {time.perf_counter() - started:.0f} s; "
          f"figures and tables in {paths.figures_dir(args.profile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
