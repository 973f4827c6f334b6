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

``--data`` points at a folder holding Fashion-MNIST's four ``.gz`` idx files when the machine has
neither ``data/FashionMNIST`` nor Debian's package (it is used as the system folder).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mexlib import data as mdata
from mexlib.config import make_config
from mexlib.hardware import deterministic_kernels
from mexlib.store import RunStore
from mexlib.train import autocast_for, build_model, make_optimizer, memory_format_for

import train_throughput  # the sibling script (benchmarks/ is on the path when run as a script)


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


def regime_comparison(store: RunStore, profile: str = "cpu", precision: str = "fp32") -> list[dict]:
    """Seed 0 of ``profile``'s three regimes trained into ``store`` (on the store's device)."""
    return [train_and_score(store, make_config(profile, regime=regime, seed=0, precision=precision))
            for regime in ("disjoint", "joint", "mixed")]


def paper_step_throughput(arch: str, steps: int = 30, batch: int = 128, warmup: int = 5,
                          device: str = "cuda", deterministic: bool = False) -> dict:
    """Training steps per second of a paper-profile model (its bf16 autocast where native,
CIFAR-100-sized input)."""
    config = make_config("paper", arch=arch)
    device = torch.device(device)
    model = build_model(config, device)
    optimizer = make_optimizer(model.parameters(), config.joint_phase)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(
        memory_format=memory_format_for(config, device))
    y = torch.randint(0, 100, (batch,), device=device)

    autocast = autocast_for(device, config.precision)  # bf16 where the device has it natively

    def step():
        with autocast:
            outs = model(x)
        loss = torch.stack([torch.nn.functional.cross_entropy(o.float(), y) for o in outs]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    with deterministic_kernels(device, deterministic):
        for _ in range(warmup):
            step()
        started = train_throughput.clock(device)
        for _ in range(steps):
            loss = step()
        seconds = train_throughput.clock(device) - started
    result = dict(arch=arch, exits=model.num_exits, batch=batch, steps=steps, deterministic=deterministic,
                  images_per_second=round(steps * batch / seconds, 2), final_loss=round(loss.item(), 3))
    print(json.dumps(result), flush=True)
    return result


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="folder with Fashion-MNIST's .gz idx files")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    if args.data is not None:
        mdata.SYSTEM_FOLDERS["fashion-mnist"] = [args.data.resolve()]
    results = {}

    def keep(part: str, value) -> None:  # written after every part, so a late failure loses nothing
        results[part] = value
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=1))

    with tempfile.TemporaryDirectory() as runs:
        store = RunStore(runs, device="cuda", progress=False)
        keep("regimes", regime_comparison(store))
        keep("regimes_bf16", regime_comparison(store, precision="bf16"))
    keep("paper_steps", [paper_step_throughput(arch) for arch in ("resnet34", "vit-t")])
    keep("throughput", [])
    for workers in (0, 8):
        result = train_throughput.measure(steps=200, warmup=10, repeats=3, workers=workers,
                                          device="cuda")
        print(train_throughput.report(result), flush=True)
        keep("throughput", results["throughput"] + [result])
    keep("deterministic_cost", [deterministic_cost(arch) for arch in ("resnet34", "vit-t")])
    keep("repeatability", repeatability())


if __name__ == "__main__":
    main()
