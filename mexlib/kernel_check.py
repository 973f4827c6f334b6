"""Does this machine train the registered models correctly? One step's gradients against float64.

    python -m mexlib.kernel_check                      # every architecture and head that fits it
    python -m mexlib.kernel_check --arch resnet-smoke --layout channels_last

For each architecture of the registry and each head kind that reads its features, the check
builds the model as the trainer does on this machine (:func:`mexlib.train.build_model`, whose
layout follows :mod:`mexlib.hardware`), draws one training batch through the trainer's own data
path (:class:`mexlib.train.DeviceData` and its loader: crop, flip, normalisation, layout) from
synthetic images of the dataset's shape, and backpropagates the joint phase's loss
(:func:`mexlib.train.training_loss`: every exit, the method's loss) in the precision the trainer
uses here (fp32, and bf16 too where the device has it natively). The reference is float64,
NCHW, without autocast: on the CPU PyTorch runs float64 convolutions with its own kernels,
never oneDNN's, so the reference shares no kernel with what it checks (on CUDA both use cuDNN). Two comparisons:

* **local**, every kernel on its own: each module that owns parameters (convolution, linear,
  batch or layer norm, SDN's pooled head, the patch embedding) is recomputed alone in float64 on
  the very input and output gradient it saw in the step; its output and its parameters'
  gradients must match within :data:`LOCAL_TOLERANCE` (relative error ``‖g − g_ref‖₂ / ‖g_ref‖₂``:
  ``1e-3`` in fp32, ``0.15`` in bf16). This is well conditioned, so it is tight.
* **end to end**, in fp32: every parameter's gradient of the whole step against the float64
  model's, within :data:`END_TO_END_TOLERANCE` (0.1). Through a deep ResNet at initialisation
  fp32 itself drifts from float64 by up to 2e-2 (ties in max-pooling, ReLUs at zero,
  cancellation in batch norm), in PyTorch's own kernels as much as in oneDNN's, so this bound is
  loose; it covers the functional operations between modules (attention, residual additions,
  pooling). Under bf16 the end-to-end gradient drifts by order 1 for deep ResNets, so only its
  finiteness is checked.

The bug this was written for (oneDNN issue 6035, see :mod:`mexlib.hardware`) gives errors of
60 to 90 in both comparisons, or a hang, or a crash. The check prints ``checking ...`` before
each model, so when a kernel hangs, the last line names the model; ``--layout channels_last``
forces the layout the trainer avoids on the CPU, to see whether this machine is affected. Exit
status: 0 when every comparison holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from . import hardware
from .arguments import device, positive_int
from .config import make_config
from .data import DATASETS, ImageData, dataset_spec
from .methods import get_method
from .models import ARCHITECTURES, HEAD_KINDS, arch_spec
from .train import DeviceData, autocast_for, build_model, memory_format_for, training_loss

#: Largest relative error allowed for a module's output and gradients computed on the same
#: input and output gradient as the float64 reference ("local"), by the trainer's precision.
#: Measured on the development machine over every architecture and head: at most 2e-6 in fp32;
#: in bf16 up to 2e-2, and 4.5e-2 for the one scalar of SDN's pooled head (its mixing weight's
#: gradient sums many cancelling terms).
LOCAL_TOLERANCE = {"fp32": 1e-3, "bf16": 0.15}
#: Largest relative error allowed for a parameter's gradient through the whole fp32 step
#: ("end to end"): rounding in fp32 differs from float64 by up to 2e-2 in deep ResNets at
#: initialisation (ties in max-pooling, ReLUs at zero, cancellation in batch norm), in PyTorch's
#: own kernels as in oneDNN's.
END_TO_END_TOLERANCE = 0.1
LAYOUTS = {"trainer": None, "nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass
class GradientCheck:
    arch: str
    head: str
    layout: str  # the layout the check ran in, "channels_last" or "nchw"
    precision: str  # the precision it trained in
    local: dict[str, float]  # "module: output" / "module.parameter" -> relative error
    end_to_end: dict[str, float]  # parameter -> relative error (fp32 only; {} under bf16)
    finite: bool  # every gradient of the step is finite

    @staticmethod
    def _worst(errors: dict[str, float]) -> tuple[str, float]:
        if not errors:
            return "-", 0.0
        name = max(errors, key=lambda n: errors[n] if math.isfinite(errors[n]) else math.inf)
        return name, errors[name]

    @property
    def failures(self) -> list[str]:
        """What does not match, in words (empty when everything does)."""
        tolerance = LOCAL_TOLERANCE[self.precision]
        bad = [] if self.finite else ["a gradient is not finite"]
        bad += [f"{n}: {e:.1e} > {tolerance:g}" for n, e in self.local.items() if not e <= tolerance]
        bad += [f"end to end {n}: {e:.1e} > {END_TO_END_TOLERANCE:g}"
                for n, e in self.end_to_end.items() if not e <= END_TO_END_TOLERANCE]
        return bad

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        (local_name, local), (e2e_name, e2e) = self._worst(self.local), self._worst(self.end_to_end)
        verdict = "ok" if self.ok else f"MISMATCH: {'; '.join(self.failures[:3])}"
        return (f"{self.arch:<13} {self.head:<6} {self.layout:<13} {self.precision:<5} "
                f"local {local:.1e} ({local_name}), end to end {e2e:.1e} ({e2e_name})  {verdict}")


def heads_for(arch: str) -> list[str]:
    """The head kinds that read this architecture's features."""
    layout = arch_spec(arch).layout
    return [kind for kind, (needs, _) in HEAD_KINDS.items() if needs == layout]


def precisions_here(device: str | torch.device = "cpu") -> list[str]:
    """fp32, and bf16 where ``device`` runs it natively (elsewhere bf16 trains as fp32)."""
    return ["fp32", "bf16"] if hardware.has_native_bf16(device) else ["fp32"]


def synthetic_data(dataset: str, per_class: int = 10, seed: int = 0) -> ImageData:
    """Random ``uint8`` images with the dataset's shape, ``per_class`` of every class."""
    spec = dataset_spec(dataset)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(spec.num_classes).repeat(per_class)
    shape = (len(labels), spec.channels, spec.image_size, spec.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return ImageData(spec, images, labels, images[:spec.num_classes], labels[:spec.num_classes],
                     [str(c) for c in range(spec.num_classes)])


def _relative(value: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.norm().item()
    diff = (value.double() - expected).norm().item()
    return diff / scale if scale > 0 else diff


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    """The modules that own parameters themselves (convolutions, linear and norm layers, SDN's
    pooled head with its mixing weight, the ViT's patch embedding)."""
    return {name: m for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}


def _step_with_records(model, x, y, method, autocast) -> dict[str, dict]:
    """Backpropagate one training step, recording every parameter owner's input, output and
    output gradient."""
    records: dict[str, dict] = {}
    handles = []
    for name, module in _owners(model).items():
        def hook(module, args, output, name=name):
            record = records[name] = dict(input=args[0].detach().clone(), output=output.detach().clone())
            output.register_hook(lambda grad: record.__setitem__("grad_output", grad.detach().clone()))
        handles.append(module.register_forward_hook(hook))
    model.zero_grad(set_to_none=True)
    try:
        loss, _ = training_loss(model, "joint", x, y, method, autocast)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
    return records


def _local_errors(model: nn.Module, records: dict[str, dict]) -> dict[str, float]:
    """Each owner recomputed alone in float64, NCHW, on the input and output gradient it saw."""
    errors = {}
    for name, module in _owners(model).items():
        record = records[name]
        alone = copy.deepcopy(module).to(torch.float64, memory_format=torch.contiguous_format)
        alone.zero_grad(set_to_none=True)
        output = alone(record["input"].double().contiguous())
        errors[f"{name}: output"] = _relative(record["output"], output)
        output.backward(record["grad_output"].double().contiguous())
        for pname, p in alone.named_parameters():
            expected = p.grad if p.grad is not None else torch.zeros_like(p)
            got = module.get_parameter(pname).grad
            errors[f"{name}.{pname}" if name else pname] = (
                _relative(got, expected) if got is not None else math.inf)
    return errors


def check_gradients(arch: str, head: str = "auto", precision: str = "fp32", layout: str = "trainer",
                    dataset: str = "fashion-mnist", batch: int = 8, device: str = "cpu",
                    seed: int = 0) -> GradientCheck:
    """One training step of ``arch`` with ``head`` heads against float64 (see the module text)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    device = torch.device(device)
    config = make_config("smoke", arch=arch, head=head, dataset=dataset, precision=precision,
                         seed=seed)
    data = DeviceData.from_dataset(config, synthetic_data(dataset, seed=seed), device)
    x, y = next(iter(data.train_loader("joint", batch)))
    model = build_model(config, device).set_freeze_mode("all").train()
    reference = copy.deepcopy(model).to(torch.float64, memory_format=torch.contiguous_format)
    fmt = LAYOUTS[layout] or memory_format_for(config, device)
    model, x = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
    method = get_method(config.method)
    used = hardware.training_precision(precision, device)
    records = _step_with_records(model, x, y, method, autocast_for(device, precision))
    grads = {n: p.grad for n, p in model.named_parameters()}
    finite = all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values())
    local = _local_errors(model, records)
    end_to_end = {}
    if used == "fp32":
        reference.zero_grad(set_to_none=True)
        loss, _ = training_loss(reference, "joint", x.double().contiguous(), y, method, nullcontext())
        loss.backward()
        end_to_end = {n: _relative(grads[n], p.grad) for n, p in reference.named_parameters()}
    return GradientCheck(arch, config.head, "channels_last" if fmt == torch.channels_last else "nchw",
                         used, local, end_to_end, finite)


def check_all(archs=None, heads=None, precisions=None, layout: str = "trainer",
              dataset: str = "fashion-mnist", batch: int = 8, device: str = "cpu",
              out=sys.stdout) -> list[GradientCheck]:
    """Check every (architecture, head, precision) combination asked for, printing each."""
    results = []
    for arch in archs or list(ARCHITECTURES):
        for head in [h for h in heads_for(arch) if heads is None or h in heads]:
            for precision in precisions or precisions_here(device):
                print(f"checking {arch} {head} {precision} ...", file=out, flush=True)
                result = check_gradients(arch, head, precision, layout, dataset, batch, device)
                print(result, file=out, flush=True)
                results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", action="append", choices=list(ARCHITECTURES),
                        help="only this architecture (repeatable; default: all)")
    parser.add_argument("--head", action="append", choices=list(HEAD_KINDS),
                        help="only this head kind (repeatable; default: every one that fits)")
    parser.add_argument("--precision", action="append", choices=list(LOCAL_TOLERANCE),
                        help="default: fp32, and bf16 where this device has it natively")
    parser.add_argument("--layout", default="trainer", choices=list(LAYOUTS),
                        help="'trainer' (default): the layout the trainer uses on this device")
    parser.add_argument("--dataset", default="fashion-mnist", choices=list(DATASETS),
                        help="the input shape (synthetic images; no data are read)")
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:<index> or mps")
    parser.add_argument("--threads", type=positive_int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    args.device = str(hardware.resolve_device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    info = hardware.describe(args.device)
    print(f"torch {torch.__version__}, {args.device}: {info}", flush=True)
    results = check_all(args.arch, args.head, args.precision, args.layout, args.dataset,
                        args.batch, args.device)
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)} of {len(results)} gradient checks match the float64 reference",
          flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
