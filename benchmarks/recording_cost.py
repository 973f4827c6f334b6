"""What recording for the training-dynamics analyses costs: training time with the recorders on
against off (target: at most 2×, issue 11).

Run as ``python benchmarks/recording_cost.py [--profile cpu] [--steps 100] [--repeats 3]``. It
trains the profile's joint-phase model (the joint regime, where the gradient recorder works
hardest: every exit sends gradients to the backbone) for one epoch of ``--steps`` optimisation
steps through ``mexlib.train.train_phase``, the code a recorded run executes, in four ways,
interleaved a b c d a b c d ... over ``--repeats`` rounds:

(a) plain: no recorder.
(b) gradients: ``GradientRecorder(every=--every)``, the notebooks' setting (10): the norm of each
    exit's own gradient per block, every ``every`` steps.
(c) snapshots: ``SnapshotRecorder()``, a copy of the weights after the epoch.
(d) both, as ``mexlib.analysis.recorded`` trains them: one run, both recorders.

It prints the median seconds of each way and its ratio to (a); the ratio of (d) is the one the
target is about. Each way builds the same model from the same seed; the data are built once,
outside the timings, as once per run. A warm-up phase runs first on a throwaway model. The load
average is printed: timings taken while something else runs are meaningless.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from mexlib.arguments import positive_int
from mexlib.analysis.recording import GradientRecorder, SnapshotRecorder, _Fanout
from mexlib.config import make_config
from mexlib.data import load_dataset
from mexlib.methods import get_method
from mexlib.train import DeviceData, build_model, train_phase

TARGET = 2.0
WAYS = ("plain", "gradients", "snapshots", "both")


def _recorder(way: str, every: int):
    return {"plain": lambda: None, "gradients": lambda: GradientRecorder(every=every),
            "snapshots": lambda: SnapshotRecorder(),
            "both": lambda: _Fanout([GradientRecorder(every=every), SnapshotRecorder()])}[way]()


def measure(profile: str = "cpu", steps: int = 100, repeats: int = 3, every: int = 10) -> dict:
    if steps < 1 or repeats < 1 or every < 1:
        raise ValueError(f"steps, repeats and every must be positive, got {steps}, {repeats}, {every}")
    config = make_config(profile, regime="joint")
    batch = config.joint_phase.batch_size
    config = make_config(profile, regime="joint", train_size=steps * batch, val_size=1, epochs=1, patience=None)
    data = DeviceData.from_dataset(config, load_dataset(config.dataset), torch.device("cpu"))
    method = get_method(config.method)

    def run(way: str) -> float:
        model = build_model(config)
        started = time.perf_counter()
        train_phase(model, "joint", config.joint_phase, data, method, torch.device("cpu"), progress=False,
                    recorder=_recorder(way, every))
        return time.perf_counter() - started

    run("plain")  # warm-up
    seconds = {way: [] for way in WAYS}
    for _ in range(repeats):
        for way in WAYS:
            seconds[way].append(run(way))
    median = {way: statistics.median(values) for way, values in seconds.items()}
    return dict(profile=profile, steps=steps, every=every, repeats=repeats, seconds=median,
                ratio={way: median[way] / median["plain"] for way in WAYS},
                threads=torch.get_num_threads(), load=os.getloadavg()[0])


def report(result: dict) -> str:
    lines = [f"recording cost: {result['profile']} profile, joint phase, {result['steps']} steps, gradients every "
             f"{result['every']}, median of {result['repeats']} interleaved rounds, {result['threads']} threads, "
             f"load average {result['load']:.2f}"]
    for way in WAYS:
        lines.append(f"  {way:<10} {result['seconds'][way]:8.2f} s  {result['ratio'][way]:5.2f}× plain")
    verdict = "meets" if result["ratio"]["both"] <= TARGET else "misses"
    lines.append(f"both recorders: {result['ratio']['both']:.2f}× the plain training time; {verdict} the target "
                 f"of at most {TARGET:.0f}×")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu"])
    parser.add_argument("--steps", type=positive_int, default=100)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--every", type=positive_int, default=10)
    args = parser.parse_args(argv)
    try:
        result = measure(args.profile, args.steps, args.repeats, args.every)
    except ValueError as error:
        parser.error(str(error))
    print(report(result))


if __name__ == "__main__":
    main()
