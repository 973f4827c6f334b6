"""Run by tests/test_emulated_cpu.py inside ``qemu-x86_64 -cpu <model>``: on a CPU whose CPUID
reports no AVX-512 (and so no AVX512-BF16), what the trainer does, printed as one JSON line each.

    python tests/emulated_cpu_child.py facts train=STORE_ROOT check=ARCH[,ARCH...]:LAYOUT

Each argument is one step, done in the order given (in one process: starting Python and torch
under emulation takes about ten seconds).

``facts``: :func:`mexlib.hardware.describe` and torch's own view of the CPU. ``check``: the
gradient check of :mod:`mexlib.kernel_check` for each architecture's default head in ``LAYOUT``
(``trainer`` or ``channels_last``): a ``checking ...`` line before each model, so that a crash
or hang names it, then the results. ``train``: a smoke mixed run (pretrained backbone, then
heads and backbone) asked for in bf16, trained into the store at ``STORE_ROOT``; it prints the
precision warnings it gave and the stored run's folder.
"""

from __future__ import annotations

import json
import sys
import warnings


def emit(kind: str, **fields) -> None:
    print(json.dumps({"kind": kind, **fields}), flush=True)


def facts() -> None:
    import torch

    from mexlib import hardware

    emit("facts", describe=hardware.describe("cpu"),
         avx512=torch.cpu._is_avx512_supported(), avx512_bf16=torch.cpu._is_avx512_bf16_supported(),
         avx2=torch.cpu._is_avx2_supported())


def check(archs: str, layout: str) -> None:
    """kernel_check's own loop, which prints ``checking ...`` before each model (so a crash
    names it), then each result as a JSON line."""
    from mexlib import kernel_check

    for result in kernel_check.check_all(archs.split(","), heads=DEFAULT_HEADS, precisions=["fp32"],
                                         layout=layout, batch=4):
        emit("checked", arch=result.arch, head=result.head, layout=result.layout, ok=result.ok,
             text=str(result))


#: Each family's default head (the registry's "auto"), so each architecture is checked once.
DEFAULT_HEADS = ["pool", "msd", "token"]


def train(root: str) -> None:
    from mexlib import hardware
    from mexlib.config import make_config
    from mexlib.store import RunStore

    config = make_config("smoke", **train_overrides(), precision="bf16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = RunStore(root, device="cpu", progress=False).get_or_run(config)
    emit("trained", folder=run.path.name, precision=run.config["precision"],
         fallback_warnings=[str(w.message) for w in caught
                            if issubclass(w.category, hardware.PrecisionFallbackWarning)])


def train_overrides() -> dict:
    """The run ``train`` trains (without its precision): small enough for an emulated CPU."""
    return dict(regime="mixed", train_size=256, val_size=64, test_size=64, epochs=1)


if __name__ == "__main__":
    for step in sys.argv[1:]:
        name, _, value = step.partition("=")
        {"facts": facts, "check": check, "train": train}[name](*([] if not value else value.split(":")))
