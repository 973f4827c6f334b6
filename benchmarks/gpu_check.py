"""The CUDA path on a GPU machine: data on the device, bf16 autocast, channels-last.

    python benchmarks/gpu_check.py [--data FOLDER] [--out FOLDER]

1. trains the cpu-profile comparison (seed 0: disjoint, joint, mixed) on the GPU into a
   temporary run store and prints every exit's test accuracy and the wall time per run;
2. times training steps of the paper-scale models (ResNet-34 with 6 exits and ViT-T with 4 exits,
   CIFAR-sized input, batch 128, bf16) and prints images per second.

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
from mexlib.store import RunStore
from mexlib.train import build_model, make_optimizer


def regime_comparison(store: RunStore) -> list[dict]:
    rows = []
    for regime in ("disjoint", "joint", "mixed"):
        started = time.perf_counter()
        run = store.get_or_run(make_config("cpu", regime=regime, seed=0))
        logits, labels = run.logits("test")
        accuracy = (logits.argmax(-1) == labels).double().mean(1)
        rows.append(dict(regime=regime, seconds=round(time.perf_counter() - started, 1),
                         exit_accuracy=[round(a, 4) for a in accuracy.tolist()],
                         device=run.provenance["device"]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def paper_step_throughput(arch: str, steps: int = 30, batch: int = 128) -> dict:
    config = make_config("paper", arch=arch)
    device = torch.device("cuda")
    model = build_model(config).to(device)
    optimizer = make_optimizer(model.parameters(), config.joint_phase)
    x = torch.randn(batch, 3, 32, 32, device=device)
    if model.backbone.prefers_channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (batch,), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outs = model(x)
        loss = torch.stack([torch.nn.functional.cross_entropy(o.float(), y) for o in outs]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    result = dict(arch=arch, exits=model.num_exits, batch=batch, steps=steps,
                  images_per_second=round(steps * batch / seconds), final_loss=round(float(loss), 3))
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, help="folder with Fashion-MNIST's .gz idx files")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}", flush=True)
    if args.data is not None:
        mdata.SYSTEM_FOLDERS["fashion-mnist"] = [args.data.resolve()]
    with tempfile.TemporaryDirectory() as runs:
        results = {"regimes": regime_comparison(RunStore(runs, device="cuda", progress=False)),
                   "paper_steps": [paper_step_throughput(a) for a in ("resnet34", "vit-t")]}
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
