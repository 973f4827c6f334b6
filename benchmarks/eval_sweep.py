"""Time a whole threshold sweep of mexlib.evaluate.tradeoff_curve on random stored logits.

Run as ``python benchmarks/eval_sweep.py``. For 10,000 samples and 7 exits, with 10 and with
100 classes, it times each exit policy's full sweep (confidence and entropy: 100 thresholds;
patience: its default 7 patience values), curve table included: a few warm-up runs, then the
median of the timed runs, against the target of < 50 ms per sweep. Each configuration runs
with 1 CPU thread and with torch's default thread count, side by side: on a shared machine
(another process training on the same cores) torch's multi-threaded kernels can be much
slower than one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mexlib.arguments import non_negative_int, positive_int
from mexlib.evaluate import tradeoff_curve

TARGET_MS = 50.0


def random_run(num_exits: int, num_samples: int, num_classes: int, seed: int = 0):
    """Random logits, labels and increasing relative costs shaped like a stored test run."""
    generator = torch.Generator().manual_seed(seed)
    # scaled so that max-softmax confidences spread over (1/C, 1) and the sweep has work to do
    logits = 3.0 * torch.randn(num_exits, num_samples, num_classes, generator=generator)
    labels = torch.randint(num_classes, (num_samples,), generator=generator)
    costs = torch.linspace(0.15, 1.1, num_exits)
    return logits, labels, costs


def median_ms(run, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=positive_int, default=10_000)
    parser.add_argument("--exits", type=positive_int, default=7)
    parser.add_argument("--classes", type=positive_int, nargs="+", default=[10, 100])
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument("--threads", type=positive_int, nargs="+",
                        default=sorted({1, torch.get_num_threads()}))
    args = parser.parse_args(argv)

    print(f"torch {torch.__version__}; {args.samples} samples, {args.exits} exits; median of "
          f"{args.repeats} runs after {args.warmup} warm-up runs; target < {TARGET_MS:.0f} ms "
          f"per sweep")
    print(f"{'classes':>7}  {'policy':<10}  {'points':>6}  "
          + "  ".join(f"{f'ms ({n} thr)':>11}" for n in args.threads) + "  target")
    for num_classes in args.classes:
        logits, labels, costs = random_run(args.exits, args.samples, num_classes)
        for policy in ("confidence", "entropy", "patience"):
            def sweep(policy=policy):
                return tradeoff_curve(logits, labels, costs, policy)
            points = len(sweep())
            times = [timed_with_threads(sweep, threads, args) for threads in args.threads]
            verdict = ", ".join(f"{n} thr {'met' if ms < TARGET_MS else 'MISSED'}"
                                for n, ms in zip(args.threads, times))
            columns = "  ".join(f"{ms:>11.2f}" for ms in times)
            print(f"{num_classes:>7}  {policy:<10}  {points:>6}  {columns}  {verdict}")


def timed_with_threads(run, threads: int, args) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return median_ms(run, args.warmup, args.repeats)
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    main()
