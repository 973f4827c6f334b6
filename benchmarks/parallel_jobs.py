"""Parallel training jobs against one process: the throughput behind ``executor="local"``.

Run as ``python benchmarks/parallel_jobs.py``. It trains the cpu profile's joint-regime model
(resnet-cpu with 5 heads, batch 128) for ``--steps`` optimisation steps in fresh Python
processes, two ways, interleaved a b a b over ``--repeats`` rounds:

(a) one process with all ``--cores`` torch threads: what a notebook does with the inline
    executor;
(b) ``--cores`` processes at once with one torch thread each: what ``mexlib.sweep``'s local
    executor does with ``workers = cores``.

Each process builds the model from the same seed, takes ``--warmup`` untimed steps, then times
its ``--steps`` steps (forward, the mean of the exits' cross-entropies, backward, SGD step) on
fixed random batches; (b)'s throughput is the sum of its processes' (they run concurrently: each
process reports its own rate over its own timed window). It prints images/second for each way
(median over the rounds) and the ratio (b)/(a): above 1, parallel jobs train a grid faster.
Start-up (importing torch, about 2 s per process) is outside the timing; it adds the same few
seconds per job to a sweep as to a notebook's first run. Timings taken while something else runs
are meaningless: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from mexlib.arguments import non_negative_int, positive_int


def worker(threads: int, steps: int, warmup: int) -> float:
    import torch
    import torch.nn.functional as F

    from mexlib.config import make_config
    from mexlib.train import build_model

    torch.set_num_threads(threads)
    model = build_model(make_config("cpu", regime="joint")).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (128,), generator=generator)

    def step():
        outputs = model(x)
        loss = sum(F.cross_entropy(o, y) for o in outputs) / len(outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(x) / (time.perf_counter() - started)


def run(processes: int, threads: int, steps: int, warmup: int) -> float:
    command = [sys.executable, __file__, "--worker", str(threads), "--steps", str(steps), "--warmup", str(warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(processes)]
    return sum(float(job.communicate()[0].strip().splitlines()[-1]) for job in jobs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cores", type=positive_int, default=os.cpu_count())
    parser.add_argument("--steps", type=positive_int, default=60)
    parser.add_argument("--warmup", type=non_negative_int, default=5)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(worker(args.worker, args.steps, args.warmup))
        return
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.cores} cores, {args.steps} timed steps "
          f"of batch 128 per process, {args.repeats} rounds")
    one, many = [], []
    for round_ in range(args.repeats):
        one.append(run(1, args.cores, args.steps, args.warmup))
        many.append(run(args.cores, 1, args.steps, args.warmup))
        print(f"round {round_}: (a) 1 process x {args.cores} threads {one[-1]:.0f} img/s, "
              f"(b) {args.cores} processes x 1 thread {many[-1]:.0f} img/s", flush=True)
    a, b = statistics.median(one), statistics.median(many)
    print(f"median: (a) {a:.0f} img/s, (b) {b:.0f} img/s; (b)/(a) = {b / a:.2f}")


if __name__ == "__main__":
    main()
