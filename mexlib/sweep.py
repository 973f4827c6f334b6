"""Sweeps: a study's grid trained as jobs, in this process or through submitit, on this machine
or on a SLURM cluster, into one run store.

A sweep turns configurations into **tasks**: each distinct phase-1 backbone the grid needs, then
each distinct run. A task is one call of :class:`TrainTask`, which trains its configuration into
the run store (:meth:`mexlib.store.RunStore.get_or_run`) and returns the stored folder's name.
Everything a sweep knows about its state comes from the store alone (:func:`sweep_state`):

- ``done``: the finished run is in the store;
- ``running``: a process holds the task's training lock;
- ``failed``: the last attempt raised; the store keeps the error, the traceback and the job's log
  file;
- ``interrupted``: an attempt stopped without finishing or failing (killed, preempted, out of
  time) and left an epoch checkpoint, from which the next attempt resumes;
- ``queued``: submitted to a cluster's queue by an earlier sweep and not started yet (the store
  names the job);
- ``missing``: never started.

The store's :class:`mexlib.work_area.WorkArea` keeps this state; a sweep reads and writes it only
through that API.

:func:`sweep` submits the tasks that are not done or running (``failed``, ``interrupted`` and
``missing``) and, by default, waits for them. Executors (``executor=``):

- ``inline``: in this process, one after another (what a notebook does without a sweep);
- ``local``: submitit's local executor, ``workers`` jobs at a time on this machine, each with
  ``threads`` torch threads (on 2 cores, two 1-thread jobs train about 1.3× faster than one
  2-thread process: small convolutions do not use two threads well);
- ``slurm``: submitit's SLURM executor; ``slurm`` options set the partition, GPUs per job,
  time limit, CPUs per task and array parallelism. Jobs that hit their time limit or are
  preempted are requeued by submitit (:class:`TrainTask` is checkpointable) and resume from the
  run's last epoch checkpoint;
- ``debug``: submitit's debug executor, in this process (the submission path without
  processes, for debugging).

Backbones are trained before the runs that start from them: ``local`` starts a disjoint or
mixed run once its own backbone has ended and fills free slots meanwhile with the tasks that need
none (the other backbones, the joint runs); ``slurm`` makes the runs' array depend on the
backbones' array.
Two jobs that need the same missing backbone anyway never both train it: the store's lock makes
the second wait and then read the first's result.

From a shell: ``python -m mexlib.sweep status|run --profile cpu --grid method=sdn,gpf
--grid regime=disjoint,joint,mixed --seeds 0,1,2 [--set epochs=3] [--executor local]``.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import torch

from . import paths
from .arguments import int_list, positive_int
from .config import PROFILES, RunConfig, grid_configs, profile_seeds
from .hardware import threads_per_job
from .jobs import job_in_queue, jobs_stop_with_this_process, run_local
from .store import RunStore, StaleRunError, UnreadableEntryError, backbone_key, clean, leftovers, run_key

EXECUTORS = {
    "inline": "in this process, one task after another",
    "local": "submitit's local executor: `workers` jobs at a time on this machine",
    "slurm": "submitit's SLURM executor (partition, GPUs, time limit, array parallelism)",
    "debug": "submitit's debug executor (in this process, through the submission path)",
}
STATUSES = ("done", "running", "queued", "lost", "failed", "interrupted", "missing", "damaged", "stale",
            "unreadable")
#: Statuses that need a person: ``sweep status`` exits with 1 when a task has one.
TROUBLE = ("lost", "failed", "damaged", "stale", "unreadable")
#: SLURM options of :func:`sweep` and their submitit names.
SLURM_OPTIONS = {"partition": "slurm_partition", "gpus_per_job": "gpus_per_node",
                 "time_limit_min": "timeout_min", "cpus_per_task": "cpus_per_task",
                 "array_parallelism": "slurm_array_parallelism", "mem_gb": "mem_gb",
                 "account": "slurm_account", "qos": "slurm_qos"}


@dataclass(frozen=True)
class Task:
    """One unit of a sweep: a phase-1 backbone or a run, by its store key."""

    kind: str  # "backbone" or "run"
    key: str
    config: RunConfig

    @property
    def folder(self) -> str:
        return f"{self.kind}-{self.key}"

    @property
    def needs(self) -> str | None:
        """The key of the phase-1 backbone a run starts from (None: a backbone, or a joint run)."""
        return backbone_key(self.config) if self.kind == "run" and "backbone" in self.config.phases else None

    @property
    def label(self) -> str:
        c = self.config
        if self.kind == "backbone":
            return f"backbone {c.arch} seed {c.seed} ({c.backbone_phase.epochs} epochs)"
        return f"{c.method} {c.regime} {c.arch} seed {c.seed}"


def plan(configs: Iterable[RunConfig], store: RunStore, resolve=None) -> list[Task]:
    """The distinct tasks of ``configs``: their phase-1 backbones first, then the runs, keyed as
    they will train (``resolve``: how the jobs' device resolves a configuration; default the
    store's)."""
    resolve = resolve or store.resolve
    backbones, runs = {}, {}
    for config in configs:
        config = resolve(config)
        if "backbone" in config.phases:
            backbones.setdefault(backbone_key(config), config)
        runs.setdefault(run_key(config), config)
    return ([Task("backbone", k, c) for k, c in backbones.items()]
            + [Task("run", k, c) for k, c in runs.items()])


# --- state, from the store alone ----------------------------------------------------------------

def task_state(task: Task, store: RunStore) -> dict:
    """The task's status (:data:`STATUSES`) and, where it failed, the error and the log file. A
    stored run of other code in strict mode is ``stale``; an entry or state file this process may
    not read is ``unreadable`` (with the path and the cause); neither stops the others' status."""
    row = dict(kind=task.kind, key=task.key, task=task.label, status="missing", error="", log="", checkpoint="")
    try:
        return _task_state(task, store, row)
    except StaleRunError as error:
        return {**row, "status": "stale", "error": str(error)}
    except OSError as error:  # UnreadableEntryError, or a state file another user keeps from us
        return {**row, "status": "unreadable", "error": str(error) if isinstance(error, UnreadableEntryError)
                else f"{error.filename or store.root}: {error.strerror or error}"}


def _task_state(task: Task, store: RunStore, row: dict) -> dict:
    found = store.find_backbone(task.config) if task.kind == "backbone" else store.find(task.config)
    if found is not None:
        return {**row, "status": "done"}
    if store.work.is_locked(task.key):
        return {**row, "status": "running"}
    checkpoints = store.work.checkpoints(task.key)
    if checkpoints:
        row["checkpoint"] = ", ".join(p.name for p in checkpoints)
    failure, queued = store.work.failure(task.key), store.work.queued(task.key)
    damaged = [record["damaged"] for record in (failure, queued) if record is not None and "damaged" in record]
    if damaged:  # a state file cut short: shown as it is; the task is submitted again like a failed one
        return {**row, "status": "damaged", "error": "; ".join(damaged)}
    if failure is not None:
        return {**row, "status": "failed", "error": failure.get("error", ""), "log": failure.get("log") or ""}
    if queued is not None:
        job = str(queued.get("job"))
        waiting = job_in_queue(job)
        if waiting is False:
            return {**row, "status": "lost", "error": f"job {job}, queued {queued.get('time')}, is no longer in the "
                                                      f"cluster's queue and never started the task: `sweep run` "
                                                      f"submits it again"}
        note = "" if waiting else " (no squeue here to ask whether it still waits: --resubmit submits it again)"
        return {**row, "status": "queued", "log": f"job {job} since {queued.get('time')}{note}"}
    return {**row, "status": "interrupted" if checkpoints else "missing"}


def sweep_state(configs: Iterable[RunConfig], store: RunStore | None = None, resolve=None) -> pd.DataFrame:
    """A row per task of ``configs``: kind, key, task, status, error, log, checkpoint."""
    store = store or RunStore(progress=False)
    return pd.DataFrame([task_state(t, store) for t in plan(configs, store, resolve)],
                        columns=["kind", "key", "task", "status", "error", "log", "checkpoint"])


# --- the job ------------------------------------------------------------------------------------

def _submitit_log() -> str | None:
    try:
        import submitit
        return str(submitit.JobEnvironment().paths.stdout)
    except Exception:  # not inside a submitit job
        return None


class TrainTask:
    """The body of a job: train one task's configuration into the run store at ``root``.

    Checkpointable for submitit: a job stopped by its time limit or preempted is requeued with
    the same task, which resumes from the run's last epoch checkpoint. A task that raises leaves
    ``work/<key>.failed.json`` (error, traceback, log file) and re-raises."""

    def __init__(self, kind: str, config: dict, root: str, threads: int | None = None,
                 device: str = "auto"):
        self.kind, self.config, self.root = kind, config, str(root)
        self.threads, self.device = threads, device

    def __call__(self) -> str:
        if self.threads:
            torch.set_num_threads(self.threads)
        config = RunConfig.from_dict(self.config)
        store = RunStore(self.root, device=self.device, progress=False)
        key = backbone_key(store.resolve(config)) if self.kind == "backbone" else run_key(store.resolve(config))
        store.work.starting(key)  # neither failed nor queued any more: it runs now
        try:
            run = store.get_or_run_backbone(config) if self.kind == "backbone" else store.get_or_run(config)
        except Exception as error:
            store.work.record_failure(key, {"error": f"{type(error).__name__}: {error}",
                                            "traceback": traceback.format_exc(), "log": _submitit_log(),
                                            "time": time.strftime("%Y-%m-%d %H:%M:%S")})
            raise
        return run.path.name

    def checkpoint(self, *args, **kwargs):
        import submitit.helpers
        return submitit.helpers.DelayedSubmission(TrainTask(self.kind, self.config, self.root,
                                                            self.threads, self.device))


# --- submitting ---------------------------------------------------------------------------------

def _executor(name: str, folder: Path, threads: int | None, slurm: Mapping[str, Any] | None):
    import submitit
    if name == "debug":
        return submitit.DebugExecutor(folder=folder)
    if name == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=7 * 24 * 60)  # the sweep decides; no local limit
        return executor
    options = dict(slurm or {})
    unknown = set(options) - set(SLURM_OPTIONS)
    if unknown:
        raise ValueError(f"unknown SLURM options {sorted(unknown)}; valid: {', '.join(SLURM_OPTIONS)}")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    parameters = {SLURM_OPTIONS[k]: v for k, v in options.items()}
    parameters.setdefault("timeout_min", 24 * 60)
    parameters.setdefault("cpus_per_task", threads or 8)
    executor.update_parameters(name="mexlib", slurm_signal_delay_s=120, **parameters)
    return executor


def sweep(configs: Iterable[RunConfig], executor: str = "inline", workers: int = 2,
          threads: int | None = None, folder: str | Path | None = None, store: RunStore | None = None,
          slurm: Mapping[str, Any] | None = None, wait: bool = True, poll_s: float = 1.0,
          progress: bool = True, device: str | None = None, resubmit: bool = False) -> pd.DataFrame:
    """Train every task of ``configs`` that is not done or running, through ``executor``
    (:data:`EXECUTORS`); return :func:`sweep_state` after (with ``wait``, once every submitted job
    has ended), with a column ``submitted`` marking the tasks this call started. ``local``
    waits for its jobs whatever ``wait`` says (it starts them ``workers`` at a time).

    ``device``: where the jobs train (``"cpu"``, ``"cuda"``, ``"auto"``). By default the store's
    device, except on SLURM, where it is ``"cuda"`` when ``slurm`` asks for GPUs and ``"cpu"``
    otherwise, resolved on the node (a login node's own device does not matter); the tasks are
    keyed as they train there (a bf16 run stays bf16 on a GPU, which is assumed to have native
    bf16 when this machine cannot tell). Tasks queued on a cluster by an earlier sweep are not
    submitted again unless ``resubmit``. ``threads``: torch threads per job (``local`` default: the cores / ``workers``).
    ``folder`` keeps submitit's job files and logs (default ``build/sweeps``). A failed task does
    not stop the others; the returned state names it."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    configs = list(configs)
    store = store or RunStore(progress=progress)
    if device is None:
        device = (("cuda" if (slurm or {}).get("gpus_per_job") else "cpu") if executor == "slurm"
                  else str(store.device))
    resolve = partial(store.resolve, device=device)  # as the jobs' device will train them
    skip = ("done", "running", "stale", "unreadable") + (() if resubmit else ("queued",))
    tasks = [t for t in plan(configs, store, resolve) if task_state(t, store)["status"] not in skip]
    log = print if progress else (lambda *a, **k: None)
    log(f"[sweep] {len(tasks)} tasks to train through {executor} "
        f"({sum(t.kind == 'backbone' for t in tasks)} backbones, {sum(t.kind == 'run' for t in tasks)} runs)")
    if executor == "local" and threads is None:
        threads = threads_per_job(workers)
    bodies = [(t, TrainTask(t.kind, t.config.to_dict(), str(store.root), threads, device)) for t in tasks]
    submitted = {t.key for t in tasks}
    if executor == "inline":
        for task, body in bodies:
            try:
                body()
                log(f"[sweep] done: {task.label}")
            except Exception as error:
                log(f"[sweep] failed: {task.label}: {type(error).__name__}: {error}")
        return _after(configs, store, submitted, resolve)
    folder = Path(folder) if folder is not None else paths.build_dir() / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    runner = _executor(executor, folder / "%j", threads, slurm)
    # local jobs on CUDA: one GPU each (else submitit hides the GPUs from them), the least busy
    gpus = max(1, torch.cuda.device_count()) if executor == "local" and device.startswith("cuda") else 0
    if executor == "slurm":
        jobs = _submit_slurm(runner, bodies)
        for task, job in jobs:
            store.work.mark_queued(task.key, {"job": str(job.job_id), "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    elif executor == "local":
        jobs = []
        with jobs_stop_with_this_process(jobs, log):
            run_local(runner, bodies, workers, poll_s, log, gpus, jobs)
    else:
        jobs = [(task, runner.submit(body)) for task, body in bodies]
    if wait:
        for task, job in jobs:
            try:
                job.result()
                log(f"[sweep] done: {task.label}")
            except Exception as error:
                log(f"[sweep] failed: {task.label}: {str(error).strip().splitlines()[-1] if str(error) else error}")
    return _after(configs, store, submitted, resolve)


def _after(configs, store: RunStore, submitted: set, resolve) -> pd.DataFrame:
    state = sweep_state(configs, store, resolve)
    state["submitted"] = state["key"].isin(submitted)
    return state


def _submit_slurm(runner, bodies) -> list:
    """The backbones as one job array, the runs as another that waits for it."""
    submitted = []
    backbones = [(t, b) for t, b in bodies if t.kind == "backbone"]
    runs = [(t, b) for t, b in bodies if t.kind == "run"]
    if backbones:
        with runner.batch():
            jobs = [runner.submit(b) for _, b in backbones]
        submitted += list(zip([t for t, _ in backbones], jobs))
    if runs:
        if backbones:
            runner.update_parameters(slurm_additional_parameters={
                "dependency": "afterany:" + ":".join(str(j.job_id).split("_")[0] for _, j in submitted)})
        with runner.batch():
            jobs = [runner.submit(b) for _, b in runs]
        submitted += list(zip([t for t, _ in runs], jobs))
    return submitted


# --- command line -------------------------------------------------------------------------------

def _values(text: str) -> list:
    """``a,b`` → ["a", "b"]; a Python literal list (``[[1, 2], [2, 4]]``) as it is."""
    try:
        value = ast.literal_eval(text)
        if isinstance(value, list):
            return value
    except (ValueError, SyntaxError):
        pass
    values = []
    for item in text.split(","):
        try:
            values.append(ast.literal_eval(item))
        except (ValueError, SyntaxError):
            values.append(item)
    return values


def _value(text: str):
    """One value: a Python literal (``[2, 4]``, ``{"lr": 0.01}``, ``3``) or else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pairs(items: Sequence[str], what: str) -> dict:
    pairs = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--{what} takes name=value, got {item!r}")
        name, value = item.split("=", 1)
        pairs[name] = _values(value) if what == "grid" else _value(value)
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mexlib.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("status", "run", "clean"),
                        help="status: each task's state; run: train what is missing; clean: list (and with --yes "
                             "remove) what interrupted writes left in the store")
    parser.add_argument("--profile", default="cpu", choices=tuple(PROFILES))
    parser.add_argument("--grid", action="append", help="name=v1,v2 (repeatable; a list literal also works)")
    parser.add_argument("--seeds", type=int_list, default=None, help="comma-separated seeds (default: the profile's)")
    parser.add_argument("--set", action="append", help="name=value fixed for every run (repeatable)")
    parser.add_argument("--executor", default="local", choices=tuple(EXECUTORS))
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--slurm", action="append", help=f"SLURM option name=value: {', '.join(SLURM_OPTIONS)}")
    parser.add_argument("--resubmit", action="store_true", help="run: submit tasks queued by an earlier sweep "
                        "again, even where their job may still be in the cluster's queue")
    parser.add_argument("--yes", action="store_true", help="clean: remove the leftovers whose writer is gone "
                        "(without it, clean only lists them)")
    args = parser.parse_args(argv)
    if args.command == "clean":
        return _clean(paths.runs_dir(), args.yes)
    try:  # a bad name or value in --grid, --set or --slurm: the usage error, with the valid ones
        seeds = profile_seeds(args.profile, args.seeds)
        configs = grid_configs(args.profile, _pairs(args.grid, "grid"), seeds, **_pairs(args.set, "set"))
        slurm = _pairs(args.slurm, "slurm")
        unknown = set(slurm) - set(SLURM_OPTIONS)
        if unknown:
            raise ValueError(f"unknown SLURM options {sorted(unknown)}; valid: {', '.join(SLURM_OPTIONS)}")
        store = RunStore(progress=args.command == "run")  # MEXLIB_STRICT is read here
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    if args.command == "run":
        state = sweep(configs, args.executor, args.workers, args.threads, store=store, slurm=slurm,
                      resubmit=args.resubmit)
    else:
        state = sweep_state(configs, store)
    counts = state["status"].value_counts()
    print(state.drop(columns=["key"]).to_markdown(index=False))
    print(", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES))
    left = leftovers(store.root)
    if left:
        gone = [row for row in left if row["gone"]]
        print(f"{len(left)} leftovers of interrupted writes ({sum(r['bytes'] for r in left) / 1e6:.1f} MB), "
              f"{len(gone)} of them of writers that are gone: `python -m mexlib.sweep clean` lists them, "
              f"`--yes` removes those")
    return 1 if any(counts.get(s, 0) for s in TROUBLE) else 0


def _clean(root: Path, remove: bool) -> int:
    rows = clean(root, remove)
    if not rows:
        print(f"[sweep] {root}: no leftovers of interrupted writes")
        return 0
    table = pd.DataFrame([{"path": str(r["path"].relative_to(root)), "MB": round(r["bytes"] / 1e6, 2),
                           "writer gone": r["gone"], "why": r["why"], "removed": r["removed"]} for r in rows])
    print(table.to_markdown(index=False))
    gone = sum(r["gone"] for r in rows)
    if remove:
        print(f"[sweep] removed {sum(r['removed'] for r in rows)} leftovers; kept {len(rows) - gone} whose writer "
              f"may still run")
    else:
        print(f"[sweep] a dry run: {gone} of {len(rows)} leftovers have a writer that is gone; "
              f"`python -m mexlib.sweep clean --yes` removes them")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the jobs are stopped; no traceback
        sys.exit(130)


__all__ = ["EXECUTORS", "SLURM_OPTIONS", "STATUSES", "Task", "TrainTask", "plan",
           "sweep", "sweep_state", "task_state"]
