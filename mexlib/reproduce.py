"""Execute every notebook with papermill: ``python -m mexlib.reproduce --profile cpu``.

This is what ``make reproduce`` runs. It makes sure the default dataset is present, then
executes ``notebooks/*.ipynb`` in order with the profile as parameter; executed copies go to
``build/notebooks/<profile>/`` and every figure and table to the profile's figures folder.
``--executor local`` (``make reproduce EXECUTOR=local``) has the notebooks that train runs
train the missing ones as parallel jobs, ``--executor slurm`` on a SLURM cluster
(:mod:`mexlib.sweep`); the notebooks then evaluate from the store as always. The default,
``--executor auto``, is ``local`` on a machine with a CUDA GPU, with as many jobs as the GPUs
hold (:func:`mexlib.hardware.local_jobs`: a small model leaves most of a GPU idle), and
``inline`` on the CPU, where one process already uses every core.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from unittest import mock

from . import paths
from .config import PROFILES, figures_dir, make_config, profile_settings
from .data import load_dataset
from .arguments import flag, positive_int
from .hardware import local_jobs, resolve_device, threads_per_job, usable_cores
from .store import strict_mode
from .sweep import EXECUTORS


def resolve_executor(executor: str = "auto", workers: int | None = None, profile: str = "cpu") -> tuple[str, int]:
    """``executor`` and ``workers`` as the notebooks get them: ``"auto"`` is ``"local"`` where
    PyTorch sees a CUDA GPU and ``"inline"`` elsewhere; ``workers=None`` is
    :func:`mexlib.hardware.local_jobs` (every GPU's share, or 2 on the CPU)."""
    from .sweep import EXECUTORS
    if executor != "auto" and executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: auto, {', '.join(EXECUTORS)}")
    device = resolve_device("auto")
    if executor == "auto":
        executor = "local" if device.type == "cuda" else "inline"
    if workers is None:
        workers = local_jobs(device, profile)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return executor, workers


def selected(only) -> list:
    """The notebooks ``only`` names (stems or file names; None or empty: all), in notebook order;
    a name that is no notebook raises, naming the valid ones."""
    every = notebooks()
    valid = {nb.stem for nb in every} | {nb.name for nb in every}
    unknown = [name for name in only or () if name not in valid]
    if unknown:
        raise ValueError(f"unknown notebooks {unknown}; valid: {', '.join(nb.stem for nb in every)}")
    return [nb for nb in every if not only or nb.stem in only or nb.name in only]


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


def default_jobs(profile: str) -> int:
    """Notebooks executed at a time by default (:attr:`mexlib.config.Profile.notebooks_at_once`,
    at most one per core): two for the smoke profile, whose notebooks spend most of their time
    starting kernels, importing and drawing, which one thread does; one otherwise, where each
    notebook's training needs every core (``--executor local`` runs the training in parallel)."""
    return min(profile_settings(profile).notebooks_at_once, usable_cores())


def execute(profile: str, only: list[str] | None = None, kernel: str = "python3",
            executor: str = "inline", workers: int = 2, jobs: int | None = None) -> list[tuple[str, float]]:
    """Execute the notebooks (``only``: these) with ``profile``; ``jobs`` of them at a time
    (None: :func:`default_jobs`), each kernel then with ``cores / jobs`` torch threads. Notebooks
    that need the same run share it through the run store (one trains it, the other waits for
    it). A notebook that fails stops the ones not yet started; those running finish; the first
    failure is raised. Returns (notebook, seconds) in notebook order."""
    from .sweep import EXECUTORS
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    profile_settings(profile)  # an unknown profile raises with the valid ones
    jobs = default_jobs(profile) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    chosen = selected(only)
    out_dir = paths.build_dir() / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)

    def run(notebook) -> tuple[str, float]:
        import papermill

        started = time.perf_counter()
        print(f"[reproduce] {notebook.name} (profile {profile})", flush=True)
        parameters = unattended_parameters(notebook, profile, executor, workers)
        # The kernel starts in the notebooks' folder through nbclient's resources, not papermill's
        # ``cwd``: that one changes this process's directory, which two notebooks run from two
        # threads would race on (a kernel could start in the other's restored directory).
        papermill.execute_notebook(str(notebook), str(out_dir / notebook.name),
                                   parameters=parameters, kernel_name=kernel, progress_bar=False,
                                   resources={"metadata": {"path": str(paths.notebooks_dir())}})
        seconds = time.perf_counter() - started
        print(f"[reproduce] {notebook.name} done in {seconds:.0f} s", flush=True)
        return notebook.name, seconds

    if jobs == 1 or len(chosen) == 1:
        return [run(notebook) for notebook in chosen]
    # each kernel started from here inherits its share of the cores
    with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": str(threads_per_job(jobs))}):
        finished = _in_parallel(run, chosen, jobs)
    return [(notebook.name, finished[notebook.name]) for notebook in chosen]


def _in_parallel(run, items: list, jobs: int) -> dict:
    """``run`` on each of ``items``, ``jobs`` at a time, in order; after a failure none starts, those
    running finish, and the first failure is raised. Returns {name: seconds}."""
    pending, running, finished, failure = list(items), set(), {}, None
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        while running or (pending and failure is None):
            while pending and failure is None and len(running) < jobs:
                running.add(pool.submit(run, pending.pop(0)))
            done, running = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
            for future in done:
                if future.exception() is not None:
                    failure = failure or future.exception()
                else:
                    name, seconds = future.result()
                    finished[name] = seconds
    if failure is not None:
        raise failure
    return finished


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--notebook", action="append", help="run only this notebook (repeatable)")
    parser.add_argument("--executor", default="auto", choices=("auto", *EXECUTORS), help="how missing runs train: auto (default: local "
                        "on a CUDA machine, else inline), inline (in the notebook), local (parallel jobs here), "
                        "slurm (a cluster); see mexlib.sweep")
    parser.add_argument("--workers", type=positive_int, default=None, help="jobs at a time with --executor "
                        "local (default: 2 on the CPU; on a GPU machine as many as the GPUs hold, "
                        "MEXLIB_JOBS_PER_GPU per GPU if set)")
    parser.add_argument("--jobs", type=positive_int, default=None, help="notebooks executed at a time (default: 2 "
                        "for the smoke profile, else 1)")
    parser.add_argument("--strict", nargs="?", type=flag, const=True, default=None,
                        help="refuse stored runs that other code trained (MEXLIB_STRICT=1 for the notebooks and "
                        "their jobs) instead of noting them in the outputs; --strict=no turns it off; default: "
                        "MEXLIB_STRICT's value")
    args = parser.parse_args(argv)
    try:
        selected(args.notebook)
        strict = strict_mode() if args.strict is None else args.strict
    except ValueError as error:
        parser.error(str(error))
    os.environ["MEXLIB_STRICT"] = "1" if strict else "0"  # inherited by every kernel and the jobs it starts
    # fail early, with instructions, when the profile's dataset is missing
    load_dataset(make_config(args.profile).dataset)
    executor, workers = resolve_executor(args.executor, args.workers, args.profile)
    if executor == "local":
        print(f"[reproduce] missing runs train as {workers} local jobs at a time on {resolve_device('auto')}",
              flush=True)
    started = time.perf_counter()
    timings = execute(args.profile, args.notebook, executor=executor, workers=workers, jobs=args.jobs)
    print(f"[reproduce] {len(timings)} notebooks in {time.perf_counter() - started:.0f} s; "
          f"figures and tables in {figures_dir(args.profile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
