"""The jobs of a sweep, on this machine and on a cluster: local jobs started as slots free up and
what they need is trained (:func:`run_local`), stopped with the sweep that started them
(:func:`jobs_stop_with_this_process`), and whether a job queued on SLURM may still start its
task (:func:`job_in_queue`). :mod:`mexlib.sweep` plans the tasks and keeps their state."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import threading
import time

from .hardware import least_busy_gpu
from .processes import descendants, kill

#: SLURM job states in which a queued job may still start its task.
WAITING_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING",
                  "SUSPENDED", "STAGE_OUT")


def job_in_queue(job: str) -> bool | None:
    """Whether the SLURM job ``job`` may still start its task: in the cluster's queue in a state
    of :data:`WAITING_STATES` (``squeue`` lists an ended job for a while, as COMPLETED, FAILED,
    CANCELLED, TIMEOUT...: gone too); None where this machine has no ``squeue`` or it does not answer."""
    if shutil.which("squeue") is None:
        return None
    try:
        done = subprocess.run(["squeue", "--noheader", "--jobs", job, "--format", "%T"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:  # SLURM answers an unknown (long finished) job id with an error
        return False if "invalid job id" in done.stderr.lower() else None
    return any(state.strip().upper() in WAITING_STATES for state in done.stdout.splitlines())


def run_local(runner, bodies, workers: int, poll_s: float, log, gpus: int = 0,
               submitted: list | None = None) -> list:
    """At most ``workers`` jobs at a time, each started as soon as a slot is free and what it
    needs is trained: the first task in plan order (backbones, then runs) that needs no backbone
    of this sweep still in training. So a joint run, which needs none, fills a slot while the
    last backbones train, and a disjoint or mixed run waits only for its own backbone (if that
    job failed, the run trains the backbone itself, as a run does without a sweep). With
    ``gpus``, each job sees one GPU, the one running the fewest of the active jobs
    (:func:`mexlib.hardware.least_busy_gpu`). ``submitted``: the list each started job is added
    to as it starts (what a stop must end)."""
    queue, active = list(bodies), []
    submitted = [] if submitted is None else submitted
    pending = {t.key for t, _ in bodies if t.kind == "backbone"}  # backbones not yet ended
    while queue or active:
        running = []
        for task, job, gpu in active:  # one look at each job: one that ends meanwhile is seen next time
            if job.done():
                pending.discard(task.key)
            else:
                running.append((task, job, gpu))
        active = running
        while len(active) < workers:
            ready = next((i for i, (t, _) in enumerate(queue) if t.needs not in pending), None)
            if ready is None:
                break
            task, body = queue.pop(ready)
            gpu = least_busy_gpu([g for _, _, g in active], gpus) if gpus else None
            if gpu is not None:
                runner.update_parameters(gpus_per_node=1, visible_gpus=(gpu,))
            job = runner.submit(body)
            log(f"[sweep] started {task.label} (job {job.job_id}{'' if gpu is None else f', GPU {gpu}'})")
            active.append((task, job, gpu))
            submitted.append((task, job))
        if active:
            time.sleep(poll_s)
    return submitted


@contextlib.contextmanager
def jobs_stop_with_this_process(jobs: list, log):
    """Local jobs end with the sweep that started them: SIGTERM (as ``kill`` sends) is turned into
    a KeyboardInterrupt (as Ctrl-C raises), and either stops every job still running, its whole
    process tree, before it propagates (a job started but not yet listed too: every process this
    one started meanwhile). Their epoch checkpoints stay: the next sweep resumes them."""
    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    main = threading.current_thread() is threading.main_thread()
    before = descendants()
    previous = signal.signal(signal.SIGTERM, terminate) if main else None
    try:
        yield
    except KeyboardInterrupt:
        if main:  # a second Ctrl-C or kill must not cut the stop short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        running = [(task, job) for task, job in jobs if not job.done()]
        tree = descendants() - before
        for _, job in running:
            process = getattr(job, "_process", None)  # submitit's local job: its controller process
            if process is not None and process.poll() is None:
                tree |= {process.pid} | descendants(process.pid)
            else:
                job.cancel(check=False)  # submitit's own stop
        kill(tree)  # the whole trees, at once and quietly
        if main:
            signal.signal(signal.SIGINT, interrupt)
        log(f"[sweep] stopped: {len(running)} local jobs ended with it "
            f"({', '.join(task.label for task, _ in running) or 'none running'}); their epoch checkpoints stay, "
            f"and the next sweep resumes them")
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["WAITING_STATES", "job_in_queue", "jobs_stop_with_this_process", "run_local"]
