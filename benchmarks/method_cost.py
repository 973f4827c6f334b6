"""What each early-exit method's training costs, and the least time the methods notebook needs.

Run as ``python benchmarks/method_cost.py`` on an otherwise idle machine. For SDN, GPF, ZTW and
L2W it times, interleaved over ``--rounds`` rounds (sdn gpf ztw l2w sdn gpf ...), each round
from a fresh model of the profile (the cpu profile's resnet-cpu with 5 heads by default):

- ``joint``: ``--steps`` training steps of the joint phase (the joint and mixed regimes' phase
  2) through the method's own step rule, as ``mexlib.train.train_phase`` runs them: the loss
  (L2W's meta steps included, at their interval), backward, optimiser step;
- ``heads``: the same for the heads phase (the disjoint regime's phase 2: backbone frozen);
- ``val``: one validation pass over the validation split, as each epoch ends;
- ZTW's ensemble stage for ``--ensemble-epochs`` epochs: its fixed cost (caching the heads'
  log-probabilities) and its cost per epoch, from the stage's own record.

Every step is timed with ``--threads`` torch threads (default 1: the share of one of the
local executor's two jobs on a 2-core machine). From the medians it estimates each run's job
time at the phase's epoch cap (early stopping ended none of the stored cpu-profile runs
before it) and the methods notebook's training (GPF, ZTW and L2W × 3 regimes × 3 seeds; SDN's
runs and the phase-1 backbones are the regimes notebook's) as ``--workers`` parallel jobs,
next to the floor it cannot go below: the same 27 runs at SDN's cost, with no method
overhead. It prints the median milliseconds per step, each method's ratio to SDN, and the
estimates against ``--budget`` minutes (the methods issue's 45).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch

from mexlib.arguments import non_negative_int, positive_float, positive_int
from mexlib.config import make_config
from mexlib.data import load_dataset
from mexlib.methods import get_method
from mexlib.methods.ztw import EnsembleStage
from mexlib.train import DeviceData, _validate, autocast_for, build_model, make_optimizer, step_rule

METHODS = ("sdn", "gpf", "ztw", "l2w")
#: The methods notebook's training: these methods in every regime, 3 seeds.
TRAINED = ("gpf", "ztw", "l2w")
REGIMES = ("disjoint", "joint", "mixed")
SEEDS = 3


def time_steps(config, data: DeviceData, phase: str, steps: int, warmup: int) -> float:
    """Seconds per step of ``phase`` after ``warmup`` untimed steps, from a fresh model (its
    backbone as initialised: the cost of a step does not depend on the weights)."""
    method = get_method(config.method)
    model = build_model(config)
    model.set_freeze_mode({"joint": "all", "heads": "heads"}[phase])
    model.train()
    settings = config.phase(phase)
    loader = data.train_loader(phase, settings.batch_size)
    optimizer = make_optimizer(model.trainable_parameters(), settings)
    rule = step_rule(model, phase, method, len(loader), settings.epochs)  # L2W: its real interval
    autocast = autocast_for(torch.device("cpu"), config.precision)
    loader.set_epoch(0)
    batches = iter(loader)
    started = None
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        x, y = next(batches)
        loss, _ = rule.loss(model, x, y, autocast, settings.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def time_validation(config, data: DeviceData) -> float:
    model = build_model(config)
    autocast = autocast_for(torch.device("cpu"), config.precision)
    started = time.perf_counter()
    _validate(model, "joint", data.eval_loader("val"), get_method(config.method), autocast)
    return time.perf_counter() - started


def time_ensembles(config, data: DeviceData, epochs: int) -> tuple[float, float]:
    """ZTW's ensemble stage: (seconds caching the heads' log-probabilities, seconds per epoch),
    from one stage of ``epochs`` epochs."""
    model = build_model(replace(config, method="ztw"))
    record = EnsembleStage(epochs=epochs).run(model, data, torch.device("cpu"), progress=False)
    return record["cache_time"], (record["wall_time"] - record["cache_time"]) / epochs


def measure(profile: str = "cpu", steps: int = 30, warmup: int = 3, rounds: int = 2,
            ensemble_epochs: int = 50, threads: int = 1, workers: int = 2) -> dict:
    if min(steps, rounds, ensemble_epochs, threads, workers) < 1 or warmup < 0:
        raise ValueError("need steps, rounds, ensemble epochs, threads and workers >= 1 and warmup >= 0")
    torch.set_num_threads(threads)
    load_before = round(os.getloadavg()[0], 2)
    base = make_config(profile, regime="joint")
    data = DeviceData.from_dataset(base, load_dataset(base.dataset), torch.device("cpu"))
    steps_per_epoch = len(data.train_loader("joint", base.joint_phase.batch_size))
    if steps + warmup > steps_per_epoch:
        raise ValueError(f"an epoch of this profile has {steps_per_epoch} steps; "
                         f"use steps + warmup <= {steps_per_epoch}")
    times = {(m, p): [] for m in METHODS for p in ("joint", "heads")}
    validation = []
    for _ in range(rounds):
        for method in METHODS:
            config = replace(base, method=method)
            for phase in ("joint", "heads"):
                times[(method, phase)].append(time_steps(config, data, phase, steps, warmup))
        validation.append(time_validation(base, data))
    step = {key: statistics.median(values) for key, values in times.items()}
    val = statistics.median(validation)
    fixed, per_epoch = time_ensembles(base, data, ensemble_epochs)
    ensemble = fixed + per_epoch * EnsembleStage().epochs

    def run_minutes(method: str, regime: str, like: str | None = None) -> float:
        """A run's phase 2 at the epoch cap; ``like``: with another method's cost per step."""
        phase = "heads" if regime == "disjoint" else "joint"
        epochs = base.phase(phase).epochs
        seconds = epochs * (steps_per_epoch * step[(like or method, phase)] + val)
        return (seconds + (ensemble if method == "ztw" and like is None else 0.0)) / 60

    runs = {(m, r): run_minutes(m, r) for m in METHODS for r in REGIMES}
    job = SEEDS * sum(runs[(m, r)] for m in TRAINED for r in REGIMES)
    floor = SEEDS * len(TRAINED) * sum(run_minutes("sdn", r) for r in REGIMES)
    return dict(profile=profile, arch=base.arch, threads=threads, workers=workers, steps=steps, rounds=rounds,
                steps_per_epoch=steps_per_epoch, epochs=base.joint_phase.epochs,
                load_before=load_before, step=step, validation=val,
                ensemble=dict(fixed=fixed, per_epoch=per_epoch, total=ensemble), runs=runs,
                job_minutes=job, floor_minutes=floor)


def report(result: dict, budget: float = 45.0) -> str:
    step, workers = result["step"], result["workers"]
    lines = [f"{result['profile']} profile, {result['arch']}, {result['threads']} thread(s) per job, "
             f"{result['steps']} steps x {result['rounds']} rounds per method and phase "
             f"(load before {result['load_before']})",
             f"{'method':8} {'joint ms/step':>14} {'x sdn':>6} {'heads ms/step':>14} {'x sdn':>6}   "
             f"{'run minutes: disjoint / joint / mixed':>38}"]
    for method in METHODS:
        j, h = step[(method, "joint")], step[(method, "heads")]
        minutes = " / ".join(f"{result['runs'][(method, r)]:.1f}" for r in REGIMES)
        lines.append(f"{method:8} {1000 * j:14.1f} {j / step[('sdn', 'joint')]:6.2f} {1000 * h:14.1f} "
                     f"{h / step[('sdn', 'heads')]:6.2f}   {minutes:>38}")
    e = result["ensemble"]
    lines.append(f"validation pass: {result['validation']:.2f} s per epoch; ZTW's ensemble stage: "
                 f"{e['fixed']:.1f} s + {e['per_epoch'] * 1000:.0f} ms per epoch = {e['total']:.0f} s at "
                 f"{EnsembleStage().epochs} epochs")
    job, floor = result["job_minutes"], result["floor_minutes"]
    lines.append(f"methods notebook ({', '.join(TRAINED)} x {len(REGIMES)} regimes x {SEEDS} seeds, "
                 f"{result['epochs']} epochs of {result['steps_per_epoch']} steps per phase): "
                 f"{job:.0f} job-minutes, at least {job / workers:.0f} min as {workers} parallel jobs")
    lines.append(f"floor (the same runs at SDN's cost per step, no method overhead): {floor:.0f} job-minutes, "
                 f"at least {floor / workers:.0f} min as {workers} jobs; budget {budget:.0f} min: "
                 f"{'within' if floor / workers <= budget else 'above'} (floor), "
                 f"{'within' if job / workers <= budget else 'above'} (estimate)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu"])
    parser.add_argument("--steps", type=positive_int, default=30)
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--ensemble-epochs", type=positive_int, default=50)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--budget", type=positive_float, default=45.0, help="minutes")
    args = parser.parse_args(argv)
    try:
        result = measure(args.profile, args.steps, args.warmup, args.rounds, args.ensemble_epochs,
                         args.threads, args.workers)
    except ValueError as error:
        parser.error(str(error))
    print(report(result, args.budget))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
