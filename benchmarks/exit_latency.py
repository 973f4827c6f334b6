"""Wall-clock latency of every exit, as a deployed early-exit model runs: stopping at the exit.

Run as ``python benchmarks/exit_latency.py [--archs resnet-cpu vit-cpu] [--out figures/exit_latency.csv]``.
For each architecture (the cpu profile's configuration with that architecture, freshly built:
latency does not depend on the weights), each exit ``k``, each batch size (``--batches``, 1 and
128 by default) and each thread count (1 and all of ``--threads``), it times
``model.forward_until(x, k)`` (the blocks up to exit ``k`` and every head on the way, nothing
after it) in eval mode under ``torch.inference_mode()``: ``--warmup`` untimed calls, then the
median of ``--repeats`` timed calls. The settings are interleaved (every exit of one setting,
then the next, round after round), so a slow spell of the machine spreads over all of them. It
also counts each exit's FLOPs (``mexlib.evaluate.exit_costs``) and writes one row per
(arch, exit, batch, threads): milliseconds per call and per image, FLOPs per image, and both
relative to the final exit, so a reader sees where time and FLOPs disagree (per-head overhead
at batch 1, attention, memory-bound early blocks). The load average is printed: timings taken
while something else runs are meaningless.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
from mexlib.arguments import non_negative_int, positive_int
from mexlib import evaluate
from mexlib.config import make_config
from mexlib.data import dataset_spec
from mexlib.models import arch_spec
from mexlib.train import build_model


def measure(arch: str, batches=(1, 128), threads=(1, 2), warmup: int = 5, repeats: int = 30) -> pd.DataFrame:
    """``mexlib.evaluate.exit_latency`` of the cpu profile's model with architecture ``arch``."""
    config = make_config("cpu", arch=arch)
    spec = dataset_spec(config.dataset)
    frame = evaluate.exit_latency(build_model(config), (spec.channels, spec.image_size, spec.image_size),
                                  batches, threads, warmup, repeats)
    return frame.assign(arch=arch)[["arch", *frame.columns]]


def _architecture(name: str) -> str:
    """An image architecture's name, or argparse's usage error naming the valid ones."""
    try:
        if arch_spec(name).modality != "image":
            raise ValueError(f"{name!r} reads texts; this benchmark times image models")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", type=_architecture, default=["resnet-cpu", "vit-cpu"])
    parser.add_argument("--batches", nargs="+", type=positive_int, default=[1, 128])
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count(), help="all threads (1 is always measured)")
    parser.add_argument("--warmup", type=non_negative_int, default=5)
    parser.add_argument("--repeats", type=positive_int, default=30)
    parser.add_argument("--out", default=None, help="CSV to write (e.g. figures/exit_latency.csv)")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f}; threads 1 and {args.threads}; "
          f"median of {args.repeats} calls after {args.warmup} warm-ups")
    threads = sorted({1, args.threads})
    frame = pd.concat([measure(a, args.batches, threads, args.warmup, args.repeats) for a in args.archs])
    shown = frame.assign(time_relative=frame["time_relative"].round(3), flops_relative=frame["flops_relative"].round(3),
                         ms=frame["ms"].round(3), ms_per_image=frame["ms_per_image"].round(4))
    print(shown.to_markdown(index=False))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
