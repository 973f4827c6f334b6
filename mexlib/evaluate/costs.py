"""What leaving at each exit costs: FLOPs counted once per model (:func:`exit_costs`), time
measured as a deployed model runs (:func:`exit_latency`), and the expected time of an operating
point (:func:`expected_time`). :mod:`mexlib.evaluate` re-exports all of it beside the exit
policies and tables that use the costs.
"""

from __future__ import annotations


import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

FLOP_UNIT = "FLOPs (torch.utils.flop_counter: 1 multiply-add = 2 FLOPs)"
MAC_UNIT = ("MACs (= FLOPs / 2; close to the paper's fvcore count, which calls MACs FLOPs "
            "and also counts normalisation and pooling)")


# --- FLOPs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExitCosts:
    """FLOPs of exiting at each exit, absolute and relative to the plain backbone.

    ``flops_per_exit[k]`` counts the backbone up to exit ``k`` plus heads 0..k, for one sample;
    ``relative[k] = flops_per_exit[k] / backbone_flops`` is the ``costs`` tensor the rest of this
    module takes. Only what ``torch.utils.flop_counter`` counts is counted (matrix products,
    convolutions, attention): biases, activations, normalisation and pooling are not.
    """

    flops_per_exit: list[int]
    backbone_flops: int
    relative: Tensor  # [num_exits], float64
    unit: str = FLOP_UNIT

    def table(self) -> pd.DataFrame:
        """One row per exit plus one for the plain backbone, units named in the headers."""
        names = [f"exit {k}" for k in range(len(self.flops_per_exit))] + ["backbone (no heads)"]
        flops = np.array(self.flops_per_exit + [self.backbone_flops], dtype=np.float64)
        return pd.DataFrame({
            f"G{self.unit}": flops / 1e9,
            f"G{MAC_UNIT}": flops / 2e9,
            "relative cost (backbone = 1)": flops / self.backbone_flops,
        }, index=pd.Index(names, name="exit"))


def exit_costs(model: torch.nn.Module, sample_shape: Sequence[int]) -> ExitCosts:
    """Count the FLOPs of every exit of ``model`` on one sample of shape ``sample_shape``.

    ``model`` must provide ``num_exits``, ``forward_until(x, k)`` (backbone blocks up to exit k
    plus heads 0..k) and ``backbone_only(x)`` (the plain backbone, the 100 % reference). The
    count runs on a batch of one zero sample, without gradients, in eval mode; every
    submodule's training mode is restored afterwards.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    x = _example_input(model, sample_shape, 1, device)
    if x.is_floating_point() and dtype is not None:
        x = x.to(dtype)
    # restore each submodule's own mode: phase 3 keeps the backbone in eval mode while the
    # heads train, which a single model.train(was_training) would undo
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        per_exit = [_count_flops(lambda k=k: model.forward_until(x, k))
                    for k in range(model.num_exits)]
        backbone = _count_flops(lambda: model.backbone_only(x))
    finally:
        for module, training in modes:
            module.training = training
    if backbone <= 0:
        raise ValueError("the plain backbone counts 0 FLOPs; cannot express relative costs")
    relative = torch.tensor(per_exit, dtype=torch.float64) / backbone
    return ExitCosts(per_exit, backbone, relative)


def _example_input(model: torch.nn.Module, sample_shape: Sequence[int], batch: int, device,
                   random: bool = False) -> Tensor:
    """The model's backbone's example input (token ids for a text encoder), else zeros or noise."""
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "example_input"):
        return backbone.example_input(tuple(sample_shape), batch, device, random)
    return torch.randn(batch, *sample_shape, device=device) if random else \
        torch.zeros(batch, *sample_shape, device=device)


def _count_flops(run: Callable[[], object]) -> int:
    # torch's counter has formulas for the CUDA attention kernels only: the CPU's fused
    # attention op counts 0 FLOPs. The math backend runs attention as matmuls, which it counts
    # (2 * 2 N^2 d per head-sequence), on every device alike.
    with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        run()
    return int(counter.get_total_flops())


# --- time ------------------------------------------------------------------------------------

def exit_latency(model: torch.nn.Module, sample_shape: Sequence[int], batches: Sequence[int] = (1, 128),
                 threads: Sequence[int] = (1,), warmup: int = 5, repeats: int = 30) -> pd.DataFrame:
    """Wall-clock time of every exit as a deployed model runs it: ``forward_until(x, k)``, the
    blocks up to exit ``k`` and every head on the way, nothing after it (eval mode, inference
    mode, random inputs on the model's device: latency does not depend on the weights).

    For each batch size and thread count: ``warmup`` untimed calls per exit, then the median
    of ``repeats`` calls, interleaved over the exits so that a slow spell of the machine spreads
    over all of them. One row per (exit, batch, threads): ``ms`` per call and ``ms_per_image``,
    ``flops_per_image`` (:func:`exit_costs`), and time and FLOPs relative to the final exit.
    On a GPU each call waits for the device. Timings taken while other work runs mean little."""
    if min(batches, default=0) < 1 or min(threads, default=0) < 1 or warmup < 0 or repeats < 1:
        raise ValueError(f"batches and threads need positive entries and repeats >= 1, got {batches}, "
                         f"{threads}, repeats {repeats}")
    parameter = next(model.parameters())
    flops = exit_costs(model, sample_shape).flops_per_exit
    sync = torch.cuda.synchronize if parameter.device.type == "cuda" else (lambda: None)
    was_training = model.training
    previous = torch.get_num_threads()
    samples: dict[tuple, list[float]] = {}
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                x = _example_input(model, sample_shape, batch, parameter.device, random=True)
                for count in threads:
                    torch.set_num_threads(count)
                    for k in range(model.num_exits):
                        for _ in range(warmup):
                            model.forward_until(x, k)
                    for _ in range(repeats):
                        for k in range(model.num_exits):
                            sync()
                            started = time.perf_counter()
                            model.forward_until(x, k)
                            sync()
                            samples.setdefault((batch, count, k), []).append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)
    rows = [dict(exit=k, batch=batch, threads=count, ms=1000 * float(np.median(times)),
                 flops_per_image=int(flops[k])) for (batch, count, k), times in samples.items()]
    frame = pd.DataFrame(rows)
    frame["ms_per_image"] = frame["ms"] / frame["batch"]
    final = frame[frame["exit"] == model.num_exits - 1].set_index(["batch", "threads"])["ms"]
    frame["time_relative"] = [row.ms / final[(row.batch, row.threads)] for row in frame.itertuples()]
    frame["flops_relative"] = frame["flops_per_image"] / int(flops[-1])
    columns = ["exit", "batch", "threads", "ms", "ms_per_image", "flops_per_image", "time_relative", "flops_relative"]
    return frame[columns].sort_values(["batch", "threads", "exit"]).reset_index(drop=True)


def expected_time(curve: pd.DataFrame, ms_per_exit: Sequence[float]) -> pd.Series:
    """The mean time per sample of each operating point of a trade-off curve
    (:func:`tradeoff_curve`), given the time of leaving at each exit: the exits' shares of the
    samples (``frac_exit_k``) weighted by their times."""
    num_exits = sum(c.startswith("frac_exit_") for c in curve.columns)
    if len(ms_per_exit) != num_exits:
        raise ValueError(f"{len(ms_per_exit)} exit times given for a curve of {num_exits} exits")
    shares = curve[[f"frac_exit_{k}" for k in range(num_exits)]].to_numpy()
    return pd.Series(shares @ np.asarray(ms_per_exit, dtype=np.float64), index=curve.index, name="ms")


__all__ = ["FLOP_UNIT", "MAC_UNIT", "ExitCosts", "exit_costs", "exit_latency", "expected_time"]
