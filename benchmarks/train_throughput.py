"""Training throughput of mexlib's trainer against a bare loop and a torchvision DataLoader.

Run as ``python benchmarks/train_throughput.py``. It trains the cpu profile's joint-regime model
(resnet-cpu with 5 heads on Fashion-MNIST, the joint phase's batch size) for ``--steps``
optimisation steps three ways, interleaved a b c a b c ... over ``--repeats`` rounds, on the
CPU, and prints each way's images/second (median over the rounds) and two ratios against their
targets, (a)/(b) >= 0.90 and (a)/(c) >= 1.5:

(a) mexlib: ``mexlib.train.train_phase`` itself, the code a study run executes. The config gets
    ``train_size = steps * batch_size``, one epoch and no early stopping, so the phase is exactly
    ``steps`` optimisation steps through the real path: ``DeviceData`` and its ``BatchLoader``
    (per-epoch shuffle, batched crop and flip of the uint8 images, normalisation, channels_last),
    ``build_model``, ``make_optimizer``, ``make_scheduler`` (stepped every batch), the method's
    ``exit_losses`` / ``combine``, and the phase's bookkeeping (per-exit loss sums, the finite
    check, best-state copies, loading the best state at the end). The whole ``train_phase`` call
    is timed, so nothing the trainer does per step or per phase is left out. Its end-of-epoch
    validation is not training: the validation split is cut to a single image, so what remains
    of it in the timing is one batch-1 forward pass (milliseconds against seconds). Loading the
    dataset and building ``DeviceData`` happen once, outside the timing, as once per run. Its
    warm-up steps are a separate, untimed ``train_phase`` call on a throwaway model.
(b) bare: the limit. The same training images, normalised once to float32 in channels_last and
    taken as fixed consecutive slices: no augmentation, shuffling, scheduler or bookkeeping;
    just forward, the mean of the exits' cross-entropies, backward, optimiser step.
(c) torchvision: the reference code's pipeline. ``torchvision.datasets.FashionMNIST`` yielding
    PIL images, per-sample ``RandomCrop(28, padding=2)``, ``RandomHorizontalFlip()``,
    ``ToTensor()``, ``Normalize(mean, std)``, ``DataLoader(shuffle=True)``; the step of (b).
    ``--workers`` defaults to 0: on the 2-core machine the cpu profile is sized for, worker
    processes would compete with the training step for the same two cores.

Every way builds a fresh model from the same seed (``build_model``) and the same optimiser
(``make_optimizer`` with the joint phase's settings); (b) and (c) run their warm-up steps on
that model before the timed ones. Timings taken while something else runs on the machine are
meaningless: the load average is printed to make that visible.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms

from mexlib import paths
from mexlib.config import make_config
from mexlib.data import dataset_spec, load_dataset
from mexlib.methods import get_method
from mexlib.train import DeviceData, build_model, make_optimizer, train_phase

DEVICE = torch.device("cpu")
TARGETS = {"(a)/(b)": 0.90, "(a)/(c)": 1.5}


def run_mexlib(config, data: DeviceData, batch: int, warmup: int) -> float:
    """(a): seconds of one whole ``train_phase`` call (one epoch of exactly ``steps`` steps)."""
    method = get_method(config.method)
    if warmup:
        head = replace(data, train_images=data.train_images[:warmup * batch],
                       train_labels=data.train_labels[:warmup * batch])
        train_phase(build_model(config), "joint", config.joint_phase, head, method, DEVICE,
                    progress=False)
    model = build_model(config)
    start = time.perf_counter()
    train_phase(model, "joint", config.joint_phase, data, method, DEVICE, progress=False)
    return time.perf_counter() - start


def run_loop(config, batches, warmup: int, steps: int) -> float:
    """(b) and (c): seconds of ``steps`` plain training steps after ``warmup`` untimed ones."""
    model = build_model(config).train()
    optimizer = make_optimizer(model.trainable_parameters(), config.joint_phase)

    def step(x, y):
        outs = model(x)
        loss = torch.stack([F.cross_entropy(o, y) for o in outs]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step(*next(batches))
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    return time.perf_counter() - start


def bare_batches(data: DeviceData, batch: int):
    """(b): fixed slices of the pre-normalised, channels_last training images, cycled."""
    images = data.normalize(data.train_images).contiguous(memory_format=data.memory_format)
    count = len(data.train_labels) // batch
    slices = [(images[i * batch:(i + 1) * batch], data.train_labels[i * batch:(i + 1) * batch])
              for i in range(count)]
    return itertools.cycle(slices)


def torchvision_batches(dataset, batch: int, workers: int, seed: int):
    """(c): the DataLoader's batches, epoch after epoch. The inputs are made channels_last like
    (a)'s and (b)'s, so all three feed the model the same layout (free for one channel)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        drop_last=True, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(seed))
    while True:
        for x, y in loader:
            yield x.contiguous(memory_format=torch.channels_last), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of a b c (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for (c) (default 0)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1 or args.workers < 0:
        parser.error("need --steps >= 1, --repeats >= 1, --warmup >= 0 and --workers >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    batch = make_config("cpu", regime="joint").joint_phase.batch_size
    config = make_config("cpu", regime="joint", train_size=args.steps * batch,
                         joint_phase={"epochs": 1, "patience": None})
    data = DeviceData.from_dataset(config, load_dataset(config.dataset), DEVICE)
    data = replace(data, val_images=data.val_images[:1], val_labels=data.val_labels[:1])
    if len(data.train_loader("joint", batch)) != args.steps:
        most = len(data.train_loader("joint", batch))
        parser.error(f"one epoch holds at most {most} steps of {batch} images; use --steps <= {most}")
    spec = dataset_spec(config.dataset)
    pil_dataset = torchvision.datasets.FashionMNIST(
        paths.data_dir(), train=True, download=False, transform=transforms.Compose([
            transforms.RandomCrop(spec.image_size, padding=spec.crop_padding),
            transforms.RandomHorizontalFlip(), transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std)]))

    variants = {
        "(a) mexlib train_phase": lambda: run_mexlib(config, data, batch, args.warmup),
        "(b) bare loop": lambda: run_loop(config, bare_batches(data, batch), args.warmup, args.steps),
        "(c) torchvision DataLoader": lambda: run_torchvision(config, pil_dataset, batch, args),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; {config.arch} with {len(config.exit_after_blocks)} "
          f"heads on {config.dataset}, batch {batch}; {args.steps} timed steps after {args.warmup} "
          f"warm-up steps, median of {args.repeats} interleaved rounds; (c) with {args.workers} workers")
    seconds = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            seconds[name].append(run())
    rates = {name: [args.steps * batch / s for s in times] for name, times in seconds.items()}

    print(f"{'variant':<27}  {'steps':>5}  {'seconds':>8}  {'images/s':>9}  images/s per round")
    for name in variants:
        rounds = " ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:<27}  {args.steps:>5}  {statistics.median(seconds[name]):>8.2f}  "
              f"{statistics.median(rates[name]):>9.1f}  {rounds}")
    a, b, c = (statistics.median(r) for r in rates.values())
    for label, ratio in (("(a)/(b)", a / b), ("(a)/(c)", a / c)):
        target = TARGETS[label]
        print(f"{label} = {ratio:.3f}  target >= {target:.2f}  {'PASS' if ratio >= target else 'FAIL'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def run_torchvision(config, dataset, batch: int, args) -> float:
    batches = torchvision_batches(dataset, batch, args.workers, config.seed)
    try:
        return run_loop(config, batches, args.warmup, args.steps)
    finally:
        batches.close()  # drops the loader, so its worker processes (if any) end


if __name__ == "__main__":
    main()
