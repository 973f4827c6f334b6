"""Several seeds in one process as one stacked model, against the same seeds' models stepped in turn.

Run as ``python benchmarks/stacked_seeds.py [--seeds 4] [--device cpu]``. Issue 26 asks whether
several runs in one process beat separate ones: ``k`` seeds of a BatchNorm-free model (the cpu
profile's ViT: ``vmap`` cannot update BatchNorm's running statistics, so the ResNets are out)
trained two ways, interleaved a b a b over ``--rounds`` rounds, in one process with all of its
torch threads:

(a) the ``k`` models one after another, each a forward, the mean of its exits' cross-entropies,
    a backward and an SGD step on its own batch: what ``k`` runs cost one after another;
(b) the same ``k`` models stacked (``torch.func.stack_module_state``), one ``functional_call``
    under ``vmap`` over the seeds and one SGD step over the stacked parameters.

Before timing, one step of each way from the same weights and batches must give the same
weights (the largest difference is printed), so (b) computes what (a) does. It prints
images/second of each way (median over the rounds) and the ratio (b)/(a): above 1, stacking
trains several seeds faster on this device than stepping them in turn. (Several processes at
once, the local executor's way, are ``parallel_jobs.py``'s comparison.) Timings taken while
something else runs are meaningless: the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import warnings

import torch

from mexlib.arguments import non_negative_int, positive_int
from mexlib.config import make_config
from mexlib.data import dataset_spec
from mexlib.methods import cross_entropy_per_exit
from mexlib.train import build_model

from train_throughput import clock  # the sibling script (benchmarks/ is on the path when run as a script)


def models_and_batches(seeds: int, batch: int, device: torch.device, arch: str = "vit-cpu", profile: str = "cpu"):
    """``seeds`` joint-regime models of ``arch`` (seeds 0, 1, ...) on ``device``, in training mode,
    and one fixed random batch ``(x [seeds, batch, ...], y [seeds, batch])`` for each."""
    configs = [make_config(profile, arch=arch, regime="joint", seed=seed) for seed in range(seeds)]
    models = [build_model(config, device).train() for config in configs]
    spec = dataset_spec(configs[0].dataset)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(seeds, batch, *spec.input_shape, generator=generator).to(device)
    y = torch.randint(0, spec.num_classes, (seeds, batch), generator=generator).to(device)
    return models, x, y


def separate_step(models, x, y, lr: float = 0.05):
    """(a): a step function that trains each model on its own batch in turn."""
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m in models]

    def step():
        for model, optimizer, xs, ys in zip(models, optimizers, x, y):
            loss = cross_entropy_per_exit(model(xs), ys).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return step, lambda: [dict(m.named_parameters()) for m in models]


def stacked_step(models, x, y, lr: float = 0.05):
    """(b): a step function that trains the models as one stacked model, the seeds under ``vmap``
    (each its own batch, its own dropout draws), one SGD optimiser over the stacked parameters."""
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(models)
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    template = models[0]
    optimizer = torch.optim.SGD(params.values(), lr=lr, momentum=0.9)

    def losses(p, b, xs, ys):
        return cross_entropy_per_exit(functional_call(template, (p, b), (xs,)), ys).mean()

    batched = vmap(losses, randomness="different")

    def step():
        loss = batched(params, buffers, x, y).sum()  # the seeds' losses are independent: their sum's gradients are each one's
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, lambda: [{name: p[k] for name, p in params.items()} for k in range(len(models))]


#: How PyTorch says that ``vmap`` runs an operator once per stacked model (no batching rule for it).
UNBATCHED = re.compile(r"not yet implemented the batching rule for ([\w:.]+)")


def unbatched_operators(step) -> list[str]:
    """The operators that ``vmap`` loops over instead of batching during one call of ``step``
    (PyTorch warns for each: a loop over the seeds undoes what stacking them is for)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step()
    return sorted({m.group(1).rstrip(".") for w in caught if (m := UNBATCHED.search(str(w.message)))})


def largest_difference(seeds: int, batch: int, device: torch.device, **model) -> float:
    """The largest absolute difference between the weights after one step of (a) and of (b) from
    the same models and batches."""
    weights = []
    for make in (separate_step, stacked_step):
        models, x, y = models_and_batches(seeds, batch, device, **model)
        step, read = make(models, x, y)
        step()
        weights.append(read())
    return max(float((a[name] - b[name]).detach().abs().max()) for a, b in zip(*weights) for name in a)


def measure(seeds: int = 4, batch: int = 128, steps: int = 10, warmup: int = 2, rounds: int = 3,
            device: str = "cpu", **model) -> dict:
    """Images/second of (a) and (b) over interleaved rounds (medians) and their ratio."""
    device = torch.device(device)
    difference = largest_difference(seeds, min(batch, 16), device, **model)
    ways, unbatched = {}, {}
    for name, make in (("separate", separate_step), ("stacked", stacked_step)):
        models, x, y = models_and_batches(seeds, batch, device, **model)
        step, _ = make(models, x, y)
        unbatched[name] = unbatched_operators(step)  # a first step, as a warm-up's
        for _ in range(warmup):
            step()
        ways[name] = step
    rates = {name: [] for name in ways}
    for _ in range(rounds):
        for name, step in ways.items():  # a b a b
            started = clock(device)
            for _ in range(steps):
                step()
            rates[name].append(seeds * batch * steps / (clock(device) - started))
    result = dict(seeds=seeds, batch=batch, steps=steps, rounds=rounds, device=str(device),
                  threads=torch.get_num_threads(), largest_weight_difference=difference, unbatched=unbatched["stacked"],
                  images_per_second={name: round(statistics.median(r), 1) for name, r in rates.items()},
                  all_rates={name: [round(v, 1) for v in r] for name, r in rates.items()})
    result["stacked_over_separate"] = round(result["images_per_second"]["stacked"]
                                            / result["images_per_second"]["separate"], 3)
    return result


def report(result: dict) -> str:
    rates = result["images_per_second"]
    return (f"{result['seeds']} seeds, batch {result['batch']}, {result['device']} ({result['threads']} threads): "
            f"(a) in turn {rates['separate']:.0f} images/s, (b) stacked {rates['stacked']:.0f} images/s, "
            f"(b)/(a) = {result['stacked_over_separate']:.3f}; one step of each agrees to "
            f"{result['largest_weight_difference']:.1e}"
            + (f"; vmap loops over the seeds for {', '.join(result['unbatched'])}" if result["unbatched"] else ""))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=positive_int, default=4)
    parser.add_argument("--batch", type=positive_int, default=128)
    parser.add_argument("--steps", type=positive_int, default=10)
    parser.add_argument("--warmup", type=non_negative_int, default=2)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    print(f"load average {os.getloadavg()[0]:.2f} (timings beside other work are meaningless)", flush=True)
    result = measure(args.seeds, args.batch, args.steps, args.warmup, args.rounds, args.device)
    print(report(result))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
