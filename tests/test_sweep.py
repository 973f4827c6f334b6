"""Sweeps: tasks planned from a grid, their state read from the store alone, jobs through
submitit's local executor (two at a time, one killed and resumed), the SLURM submission up to
the cluster, the command line and the study's executor option."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from pathlib import Path

import pytest
import torch

from mexlib import study
from mexlib.config import grid_configs, make_config
from mexlib.store import RunStore, run_key
from mexlib.jobs import run_local
from mexlib.sweep import STATUSES, _executor, main, plan, sweep, sweep_state

pytest.importorskip("submitit")


def _store(path) -> RunStore:
    return RunStore(path, device="cpu", progress=False)


def test_plan_lists_each_backbone_then_each_run_once(tmp_path):
    configs = grid_configs("smoke", {"method": ["sdn", "pbee"], "regime": ["disjoint", "joint", "mixed"]}, [0, 1])
    tasks = plan(configs, _store(tmp_path))
    kinds = [t.kind for t in tasks]
    assert kinds == ["backbone"] * 2 + ["run"] * 6  # PBEE's runs are SDN's
    assert len({t.key for t in tasks}) == len(tasks)
    with pytest.raises(ValueError, match="valid executors: inline, local, slurm, debug"):
        sweep(configs, executor="cluster", store=_store(tmp_path))


def test_state_comes_from_the_store_alone(tmp_path):
    store = _store(tmp_path)
    configs = [make_config("smoke", regime="joint", seed=s, epochs=1) for s in (0, 1, 2, 3)]
    assert set(sweep_state(configs, store)["status"]) == {"missing"}
    keys = [run_key(c) for c in configs]
    work = tmp_path / "work"
    work.mkdir()
    # a lock held by some process: running (the lock file's name is the store's business)
    held = store.work.lock(keys[0])
    held.__enter__()
    assert RunStore(tmp_path, progress=False).work.is_locked(keys[0])
    # a failure record: failed, with its error and log
    store.work.record_failure(keys[1], {"error": "RuntimeError: boom", "log": "/x/1_log.out"})
    # an epoch checkpoint without a lock or failure: interrupted
    (work / keys[2]).mkdir()
    (work / keys[2] / "joint.ckpt").write_bytes(b"")
    state = sweep_state(configs, store).set_index("key")
    assert [state.loc[k, "status"] for k in keys] == ["running", "failed", "interrupted", "missing"]
    assert state.loc[keys[1], "error"] == "RuntimeError: boom" and state.loc[keys[1], "log"] == "/x/1_log.out"
    held.__exit__(None, None, None)
    assert sweep_state(configs, store).set_index("key").loc[keys[0], "status"] == "missing"
    assert set(STATUSES) >= set(state["status"])


def _lock_holder(lock: Path) -> int | None:
    """The pid of the process that has ``lock`` open (Linux /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(lock) and int(pid) != os.getpid():
                    return int(pid)
        except OSError:
            continue
    return None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_local_jobs_two_at_a_time_one_killed_and_resumed_match_a_sequential_run(tmp_path):
    configs = [make_config("smoke", regime=r, seed=0) for r in ("disjoint", "joint", "mixed")]
    victim = make_config("smoke", regime="joint", seed=1, epochs=6)  # long enough to be caught mid-run
    configs.append(victim)
    store = _store(tmp_path / "runs")
    key = run_key(victim)
    result = {}
    thread = threading.Thread(target=lambda: result.update(state=sweep(
        configs, "local", workers=2, threads=1, folder=tmp_path / "jobs", store=store, poll_s=0.1,
        progress=False)))
    thread.start()
    checkpoint = tmp_path / "runs" / "work" / key / "joint.ckpt"
    deadline = time.time() + 200
    while not checkpoint.is_file() and time.time() < deadline:
        time.sleep(0.02)
    assert checkpoint.is_file(), "the long run never wrote a checkpoint"
    pid = _lock_holder(tmp_path / "runs" / "work" / f"{key}.lock")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # as a scheduler kills a job at its time limit
    thread.join(200)
    state = result["state"].set_index("key")
    assert state.loc[key, "status"] == "interrupted" and "joint.ckpt" in state.loc[key, "checkpoint"]
    assert (state.drop(index=key)["status"] == "done").all()
    assert int(state["submitted"].sum()) == 5  # one backbone, four runs
    # the rerun submits only the interrupted run, which resumes from its checkpoint
    again = sweep(configs, "local", workers=2, threads=1, folder=tmp_path / "jobs", store=store, poll_s=0.1,
                  progress=False)
    assert (again["status"] == "done").all() and again["submitted"].sum() == 1
    resumed = store.find(victim)
    assert len(resumed.history[0]["history"]) == 6
    # what the jobs stored equals a sequential run in one process with the same thread count: the
    # resumed run, and the mixed run, whose job started from a backbone another job trained (the
    # other two are trained as these are; leaving them out keeps the test's time to what it checks)
    compared = [victim, configs[2]]
    threads = torch.get_num_threads()
    try:
        reference = sweep(compared, "inline", threads=1, store=_store(tmp_path / "sequential"), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (reference["status"] == "done").all()
    sequential = _store(tmp_path / "sequential")
    for config in compared:
        for split in ("val", "test"):
            torch.testing.assert_close(store.find(config).logits(split), sequential.find(config).logits(split),
                                       rtol=0, atol=0)


def test_slurm_submission_writes_arrays_with_the_options_and_the_dependency(tmp_path, monkeypatch):
    """Everything up to the cluster: a stand-in ``sbatch`` records what it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls"
    fake = bin_dir / "sbatch"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nn=$(wc -l < {calls})\necho \"Submitted batch job 10$n\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    srun = bin_dir / "srun"  # submitit looks for it to know it is on a cluster
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    configs = [make_config("smoke", regime=r, seed=0) for r in ("disjoint", "mixed")]
    state = sweep(configs, "slurm", store=_store(tmp_path / "runs"), folder=tmp_path / "jobs", wait=False,
                  slurm={"partition": "gpu", "gpus_per_job": 1, "time_limit_min": 90, "array_parallelism": 4},
                  progress=False)
    assert set(state["status"]) == {"queued"} and state["submitted"].all()
    assert all("job 10" in log for log in state["log"])
    again = sweep(configs, "slurm", store=_store(tmp_path / "runs"), folder=tmp_path / "jobs", wait=False,
                  slurm={"partition": "gpu", "gpus_per_job": 1}, progress=False)
    assert not again["submitted"].any()  # queued tasks are not submitted twice
    scripts = [Path(line.split()[-1]).read_text() for line in calls.read_text().splitlines()]
    assert len(scripts) == 2  # the backbone array, then the runs' array; nothing resubmitted
    for script in scripts:
        assert "#SBATCH --partition=gpu" in script and "#SBATCH --gpus-per-node=1" in script
        assert "#SBATCH --time=90" in script and "#SBATCH --signal=USR2@120" in script
    # two runs in one array (at most 4 at a time, capped by submitit at the array's size), after
    # the backbone's job
    assert "#SBATCH --array=0-1%2" in scripts[1] and "#SBATCH --dependency=afterany:101" in scripts[1]
    assert "--dependency" not in scripts[0]
    with pytest.raises(ValueError, match="valid: partition, gpus_per_job"):
        _executor("slurm", tmp_path / "jobs", 1, {"gpu": 1})


def test_command_line_status_and_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEXLIB_RUNS", str(tmp_path))
    args = ["status", "--profile", "smoke", "--grid", "regime=joint,mixed", "--seeds", "0", "--set", "epochs=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 done, 0 running, 0 queued, 0 lost, 0 failed, 0 interrupted, 3 missing, 0 damaged" in out
    config = make_config("smoke", regime="joint", seed=0, epochs=1)
    RunStore(tmp_path, progress=False).work.record_failure(run_key(config), {"error": "ValueError: x", "log": None})
    assert main(args) == 1 and "1 failed" in capsys.readouterr().out


def test_a_failing_task_is_recorded_and_stops_the_study(tmp_path, monkeypatch):
    store = _store(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("the data set is gone")

    monkeypatch.setattr("mexlib.store.RunStore.get_or_run", broken)
    state = sweep([make_config("smoke", regime="joint")], "inline", store=store, progress=False)
    assert state["status"].tolist() == ["failed"] and "the data set is gone" in state["error"][0]
    with pytest.raises(RuntimeError, match="did not finish"):
        study.run_study("smoke", {"regime": ["joint"]}, seeds=[0], store=store, executor="debug",
                        progress=False)


def test_a_study_through_the_debug_executor_reads_what_the_jobs_stored(tmp_path):
    store = _store(tmp_path)
    result = study.run_study("smoke", {"regime": ["disjoint", "joint"]}, seeds=[0], store=store,
                             executor="debug", executor_options={"folder": tmp_path / "jobs"}, progress=False)
    assert sorted(result.trained) == sorted(f"{t.kind}-{t.key}" for t in plan(
        [r.config for r in result.runs], store))
    assert all(r.run.path.is_dir() for r in result.runs)


def test_a_task_requeues_itself_as_the_same_task():
    """submitit calls ``checkpoint`` when SLURM signals a job before its time limit (or on
    preemption) and requeues what it returns: the same task, which resumes the run from its
    epoch checkpoint (the resume itself is tested above with a killed job)."""
    from mexlib.sweep import TrainTask

    task = TrainTask("run", make_config("smoke").to_dict(), "/shared/runs", threads=4, device="cuda")
    requeued = task.checkpoint()
    assert requeued.function is not task and vars(requeued.function) == vars(task)
    assert requeued.args == () and requeued.kwargs == {}


class _Clock:
    """Stand-ins for submitit's local jobs: each job takes ``ticks[kind]`` polls; ``log`` keeps
    what ran at each poll."""

    def __init__(self, ticks):
        self.ticks, self.now, self.jobs, self.log, self.parameters = ticks, 0, [], [], {}

    def update_parameters(self, **parameters):  # as submitit's executors take them
        self.parameters.update(parameters)

    def submit(self, task):
        clock = self

        class Job:
            job_id = len(self.jobs)
            started, length = self.now, self.ticks[task.config.regime if task.kind == "run" else "backbone"]
            visible_gpus = self.parameters.get("visible_gpus")

            def done(self):
                return clock.now >= self.started + self.length

        job = Job()
        self.jobs.append((task, job))
        return job

    def sleep(self, _):
        self.log.append([t for t, j in self.jobs if not j.done()])
        self.now += 1


def test_local_jobs_start_when_their_backbone_is_trained_and_joint_runs_fill_the_gaps(tmp_path, monkeypatch):
    """Three seeds of the three regimes, two jobs at a time: a joint run (no backbone) starts
    while the third backbone trains; no disjoint or mixed run starts before its own backbone
    has ended; never more than two jobs at once; every task runs once."""
    configs = grid_configs("smoke", {"regime": ["disjoint", "joint", "mixed"]}, [0, 1, 2])
    tasks = plan(configs, _store(tmp_path / "runs"))
    clock = _Clock({"backbone": 4, "disjoint": 2, "joint": 5, "mixed": 4})
    monkeypatch.setattr("mexlib.sweep.time.sleep", clock.sleep)
    submitted = run_local(clock, [(t, t) for t in tasks], workers=2, poll_s=1, log=lambda *a: None)
    assert sorted(t.key for t, _ in submitted) == sorted(t.key for t in tasks)
    ended = {t.key: j.started + j.length for t, j in clock.jobs}
    for task, job in clock.jobs:
        if task.needs is not None:
            assert job.started >= ended[task.needs], task.label
    assert max(len(running) for running in clock.log) == 2
    third_backbone = [j for t, j in clock.jobs if t.kind == "backbone"][2]
    during = {t.config.regime for t, j in clock.jobs if t.kind == "run"
              and third_backbone.started <= j.started < third_backbone.started + third_backbone.length}
    assert "joint" in during
    # two slots stay busy until the queue runs dry: the whole sweep takes no longer than its
    # work shared by two, plus the longest job
    work = sum(j.length for _, j in clock.jobs)
    assert max(ended.values()) <= work / 2 + max(j.length for _, j in clock.jobs)


def test_local_jobs_on_several_gpus_each_see_the_least_busy_one(tmp_path, monkeypatch):
    """Six jobs at a time on two GPUs: every job is given one GPU (submitit's ``visible_gpus``),
    the one running fewer of the jobs when it starts."""
    configs = grid_configs("smoke", {"regime": ["disjoint", "joint", "mixed"]}, [0, 1, 2, 3])
    tasks = plan(configs, _store(tmp_path / "runs"))
    clock = _Clock({"backbone": 3, "disjoint": 2, "joint": 5, "mixed": 4})
    monkeypatch.setattr("mexlib.sweep.time.sleep", clock.sleep)
    submitted = run_local(clock, [(t, t) for t in tasks], workers=6, poll_s=1, log=lambda *a: None, gpus=2)
    assert len(submitted) == len(tasks)
    assert all(len(job.visible_gpus) == 1 and job.visible_gpus[0] in (0, 1) for _, job in clock.jobs)
    assert clock.parameters["gpus_per_node"] == 1
    for index, (_, job) in enumerate(clock.jobs):  # when it started, its GPU ran the fewest jobs
        running = [j.visible_gpus[0] for _, j in clock.jobs[:index] if j.started + j.length > job.started]
        assert running.count(job.visible_gpus[0]) == min(running.count(g) for g in (0, 1)), (index, running)
    assert {job.visible_gpus[0] for _, job in clock.jobs} == {0, 1}


def test_a_backbone_that_ends_between_two_looks_still_releases_its_runs(tmp_path, monkeypatch):
    """Each job's done() is asked once per poll: a backbone that ends between two questions
    must not leave its runs waiting forever."""
    configs = grid_configs("smoke", {"regime": ["mixed"]}, [0])
    tasks = plan(configs, _store(tmp_path / "runs"))

    class Job:
        job_id, answers = 0, iter([False, True])

        def done(self):  # not done when first asked, done ever after
            return next(self.answers, True)

    class Runner:
        def submit(self, task):
            return Job()

    monkeypatch.setattr("mexlib.sweep.time.sleep", lambda _: None)
    submitted = run_local(Runner(), [(t, t) for t in tasks], workers=2, poll_s=0, log=lambda *a: None)
    assert [t.kind for t, _ in submitted] == ["backbone", "run"]


@pytest.mark.parametrize("bad,named", [
    (["status", "--profile", "laptop"], "argument --profile: invalid choice: 'laptop' (choose from 'smoke', 'cpu', 'paper')"),
    (["status", "--seeds", "a"], "argument --seeds: 'a' is not a whole number"),
    (["status", "--seeds", ","], "give at least one whole number"),
    (["run", "--workers", "0"], "argument --workers: 0 is too small: 1 or more"),
    (["status", "--profile", "smoke", "--grid", "regime=both"], "valid regimes: disjoint, joint, mixed"),
    (["status", "--profile", "smoke", "--set", "foo=1"], "unknown configuration names ['foo']"),
    (["status", "--grid", "regime"], "--grid takes name=value, got 'regime'"),
    (["run", "--profile", "smoke", "--slurm", "bogus=1"], "unknown SLURM options ['bogus']; valid: partition"),
])
def test_the_sweep_command_refuses_bad_input_with_its_usage(bad, named, capsys):
    from mexlib.sweep import main

    with pytest.raises(SystemExit) as stop:
        main(bad)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: python -m mexlib.sweep") and named in error


def test_damaged_state_files_are_shown_as_damaged_and_the_task_trains_again(tmp_path, monkeypatch, capsys):
    """A failed.json cut short (a full disk, a killed process) and a queued.json that is JSON but
    not a record: the status names each file, the command does not crash, and a sweep trains
    the tasks again."""
    monkeypatch.setenv("MEXLIB_RUNS", str(tmp_path / "runs"))
    store = _store(tmp_path / "runs")
    joint, disjoint = (make_config("smoke", regime=r, seed=0) for r in ("joint", "disjoint"))
    work = tmp_path / "runs" / "work"
    work.mkdir(parents=True)
    (work / f"{run_key(joint)}.failed.json").write_text('{"error": "Runtime')  # cut short
    backbone = [t for t in plan([disjoint], store) if t.kind == "backbone"][0]
    (work / f"{backbone.key}.queued.json").write_text("[1, 2]")
    state = sweep_state([joint, disjoint], store).set_index("key")
    assert "damaged" in STATUSES
    assert state.loc[run_key(joint), "status"] == "damaged"
    assert f"{run_key(joint)}.failed.json cannot be read" in state.loc[run_key(joint), "error"]
    assert state.loc[backbone.key, "status"] == "damaged"
    assert "holds a list, not a record" in state.loc[backbone.key, "error"]
    assert main(["status", "--profile", "smoke", "--grid", "regime=joint,disjoint", "--seeds", "0"]) == 1
    assert "2 damaged" in capsys.readouterr().out
    again = sweep([joint, disjoint], "inline", store=store, progress=False)
    assert (again["status"] == "done").all() and int(again["submitted"].sum()) == 3


def test_a_diverging_run_in_a_local_job_ends_as_failed_with_its_message(tmp_path):
    config = make_config("smoke", regime="joint", seed=0, lr=1e12, train_size=500)
    store = _store(tmp_path / "runs")
    state = sweep([config], "local", workers=1, threads=1, folder=tmp_path / "jobs", store=store, poll_s=0.1,
                  progress=False)
    (row,) = state.to_dict("records")
    assert row["status"] == "failed"
    assert "training diverged in phase 'joint', epoch 0" in row["error"]
    record = store.work.failure(run_key(config))  # failed.json, as the job wrote it
    assert record["error"].startswith(f"TrainingDiverged: resnet-smoke on fashion-mnist, joint, sdn, seed 0 "
                                      f"(run-{run_key(config)}): training diverged in phase 'joint', epoch 0")
    assert Path(row["log"]).is_file()


KILLED_WRITER = """
import sys, time
from pathlib import Path
from mexlib.store import write_entry

def slow(path):
    path.write_text("half")
    print("writing", flush=True)
    time.sleep(600)

write_entry(Path(sys.argv[1]) / "result-slow-1", {"a.json": slow})
"""


def test_a_write_killed_midway_is_listed_by_status_and_removed_by_clean(tmp_path, capsys, monkeypatch):
    import signal
    import subprocess
    import sys

    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("MEXLIB_RUNS", str(root))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(root)], stdout=subprocess.PIPE, text=True,
                              env=env)
    assert writer.stdout.readline().strip() == "writing"
    (live,) = [p for p in root.iterdir() if p.name.startswith(".tmp-result-slow-1-")]
    from mexlib.store import clean, leftovers

    (row,) = leftovers(root)
    assert not row["gone"] and f"process {writer.pid} on this host) still runs" in row["why"]
    writer.send_signal(signal.SIGKILL)  # as kill -9 would
    writer.wait()
    (row,) = leftovers(root)
    assert row["path"] == live and row["gone"] and "has ended" in row["why"]
    # a checkpoint's temporary file whose run is not training, and one whose run is
    (root / "work" / "abc").mkdir(parents=True)
    (root / "work" / "abc" / ".joint.ckpt.0badc0de.part").write_bytes(b"x" * 10)
    (root / "work" / "def").mkdir()
    busy = root / "work" / "def" / ".joint.ckpt.0badc0de.part"
    busy.write_bytes(b"x")
    store = RunStore(root, device="cpu", progress=False)

    assert main(["status", "--profile", "smoke", "--grid", "regime=joint", "--seeds", "0"]) == 0
    assert "3 leftovers of interrupted writes" in capsys.readouterr().out
    with store.work.lock("def"):
        assert main(["clean"]) == 0  # a dry run
        out = capsys.readouterr().out
        assert "a dry run: 2 of 3 leftovers" in out and live.exists()
        assert main(["clean", "--yes"]) == 0
        assert "removed 2 leftovers; kept 1" in capsys.readouterr().out
        assert not live.exists() and busy.exists()
        assert [r["path"] for r in clean(root)] == [busy]


def test_a_queued_task_whose_job_is_gone_is_reported_and_submitted_again(tmp_path, monkeypatch, capsys):
    """A cluster's queue (a stand-in ``squeue``: job 7 still pends, job 8 is gone): the task
    queued as job 8 is ``lost`` and trained by the next sweep; the one queued as job 7 waits,
    unless ``--resubmit``."""
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "squeue"
    fake.write_text('#!/bin/sh\n'
                    'case "$*" in *"--jobs 7 "*) echo PENDING;; *"--jobs 8 "*) '
                    'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1;; '
                    '*"--jobs 9 "*) echo COMPLETED;; esac\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    store = _store(tmp_path / "runs")
    waiting, gone = (make_config("smoke", regime="joint", seed=s, train_size=300, epochs=1) for s in (0, 1))
    store.work.mark_queued(run_key(waiting), {"job": "7", "time": "2026-12-01 10:00:00"})
    store.work.mark_queued(run_key(gone), {"job": "8", "time": "2026-12-01 10:00:00"})
    ended = make_config("smoke", regime="joint", seed=2, train_size=300, epochs=1)  # ended without starting it
    store.work.mark_queued(run_key(ended), {"job": "9", "time": "2026-12-01 10:00:00"})
    state = sweep_state([waiting, gone, ended], store).set_index("key")
    assert state.loc[run_key(waiting), "status"] == "queued"
    assert state.loc[run_key(gone), "status"] == "lost" and "job 8" in state.loc[run_key(gone), "error"]
    assert state.loc[run_key(ended), "status"] == "lost"
    after = sweep([waiting, gone], "inline", store=store, progress=False).set_index("key")
    assert after.loc[run_key(gone), "status"] == "done" and after.loc[run_key(waiting), "status"] == "queued"
    again = sweep([waiting, gone], "inline", store=store, progress=False, resubmit=True).set_index("key")
    assert (again["status"] == "done").all()


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_stopping_a_sweep_stops_its_local_jobs(tmp_path, stop):
    """``kill`` (SIGTERM) or Ctrl-C (SIGINT) on ``python -m mexlib.sweep run``: its local jobs end
    with it, none keeps training as an orphan, and no traceback is printed."""
    import signal
    import subprocess
    import sys

    from mexlib.processes import descendants

    env = {**os.environ, "MEXLIB_RUNS": str(tmp_path / "runs"), "MEXLIB_BUILD": str(tmp_path / "build"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    sweep_process = subprocess.Popen(
        [sys.executable, "-m", "mexlib.sweep", "run", "--profile", "smoke", "--grid", "regime=joint",
         "--seeds", "0,1", "--set", "epochs=200", "--set", "train_size=2000", "--executor", "local",
         "--workers", "2", "--threads", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    work = tmp_path / "runs" / "work"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(work.glob("*/*.ckpt"))) < 2:  # both jobs are training
        time.sleep(0.2)
    jobs = descendants(sweep_process.pid)
    assert len(list(work.glob("*/*.ckpt"))) == 2 and jobs, sweep_process.stderr.read() if sweep_process.poll() else ""
    sweep_process.send_signal(getattr(signal, stop))
    out, err = sweep_process.communicate(timeout=60)
    assert sweep_process.returncode != 0 and "Traceback" not in err, err
    assert "stopped: 2 local jobs ended with it" in out
    left = {pid for pid in jobs if Path(f"/proc/{pid}").exists()
            and Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"}
    assert not left, f"jobs still running after the sweep stopped: {left}"
    assert len(list(work.glob("*/*.ckpt"))) == 2  # what they trained stays, to resume
