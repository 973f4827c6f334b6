"""What the training device can do, and the two rules the trainer follows because of it.

**Memory layout: channels-last on CUDA only.** CNN backbones (``Backbone.prefers_channels_last``)
train in channels-last memory format on a CUDA GPU, where it speeds up convolutions; on the CPU
every model and batch stays in the default NCHW layout. The reason is a oneDNN bug
(uxlfoundation/oneDNN issue 6035, "1x1 convolution backward_weights writes past the rtus
workspace (nhwc, IC < ic_block)"): the backward pass of a strided 1×1 convolution in
channels-last with fewer input channels than the kernel's channel block (8 on AVX2) writes past
its workspace. On a CPU whose oneDNN picks the AVX2 kernel (``jit_1x1:avx2``) the step then
hangs, dies with a bus error or segmentation fault, or returns weight gradients that are wrong
in every element, silently. Whether a model is affected depends on the width of a layer, not on
the profile (ResNet-smoke's 4-channel shortcut is; any user's narrow ResNet can be), so the rule
is by device, never by width. The price on the CPU, measured: the cpu-profile training step
takes about 15 % longer in NCHW and evaluation up to 1.8× longer (README). ``python -m mexlib.kernel_check``
verifies, on any machine, that one training step of every registered architecture gives the
gradients of an independent float64 reference.

**Precision: bf16 only where the device computes it natively.** ``precision="bf16"`` means
bfloat16 autocast while training. A CUDA GPU with bf16 support (Ampere and later) and a CPU
with native bf16 instructions (x86: AVX512-BF16 or AMX; ARM: the BF16 extension, as reported
by oneDNN) train in bf16. Elsewhere bf16 is emulated, about 7× slower than fp32 on an AVX2 CPU
with nothing gained, so a run that asks for bf16 there says so once
(:class:`PrecisionFallbackWarning`) and trains in fp32. The run store then keeps it as the fp32
run it is (its ``config.json`` says ``fp32``): it never passes for a bf16 result, and an fp32 run
already in the store is reused. Setting ``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16``
(``AVX2``, say) counts as a CPU without native bf16, as it is for oneDNN, which reads the
variable once, when it first runs: set it before the process starts.

**Compiled training steps: where they were measured to pay.** ``compile="auto"`` (a run's
configuration) trains a model's blocks and heads under ``torch.compile`` on a CUDA device when
its layout is one where compiling was measured faster there (:data:`FASTEST_STEP`: on an H200,
ViT-T's step 1.42× faster compiled, ResNet-34's 0.89×, so vision transformers compile and CNNs
do not; text encoders, not timed compiled on a GPU yet, do not either), and eagerly everywhere
else, the CPU included (a compile costs tens of seconds there and the step is bound by
arithmetic, not launches). ``"reduce-overhead"`` also captures each compiled
piece in a CUDA graph (launch overhead gone: for small models on a GPU); off CUDA it means
``"compile"`` (one warning). A compiled run is stored under its own key: its numbers differ from
the eager run's in the last bits (fused kernels), as a GPU's differ from a CPU's, and in a model
with dropout (the text encoders) by the masks, which compiled code draws from its own generator.

**Jobs per GPU.** A small model leaves most of a GPU idle, so ``make reproduce`` on a CUDA
machine trains runs as parallel local jobs sharing each GPU (:func:`jobs_per_gpu`): as many as
the GPU's memory holds at :data:`JOB_GPU_MEMORY` each, at most one per CPU core and at most
:data:`MAX_JOBS_PER_GPU` (``MEXLIB_JOBS_PER_GPU`` overrides the count); each job is given the GPU
with the fewest jobs (:func:`least_busy_gpu`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import warnings

import torch
from .registry import check

PRECISIONS = ("fp32", "bf16")
#: How a run's training step executes (``RunConfig.compile``); "auto" resolves by :func:`step_mode`.
COMPILE_MODES = ("auto", "eager", "compile", "reduce-overhead")
#: (device type, block layout) → the step mode measured fastest there; anything else is eager.
FASTEST_STEP = {("cuda", "tokens"): "compile"}
#: What one cpu-profile training job holds on a GPU (the CUDA context, the data set on the device,
#: the model, its optimiser and activations), with room to spare; the paper profile's models hold more.
JOB_GPU_MEMORY = {"smoke": 1 << 30, "cpu": 2 << 30, "paper": 16 << 30}
#: At most this many jobs per GPU until ``benchmarks/gpu_check.py``'s concurrency part has measured
#: 1–8 (12 cpu-profile jobs on one H200 trained 2.5× faster than one after another).
MAX_JOBS_PER_GPU = 8

#: ``ONEDNN_MAX_CPU_ISA`` values that keep oneDNN off its native bf16 kernels.
_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                      "AVX512_CORE_VNNI"}


class PrecisionFallbackWarning(UserWarning):
    """bf16 was asked for on a device without native bf16; the run trains in fp32."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA where there is one, else the CPU; any other name as it is."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def usable_cores() -> int:
    """The cores this process may run on: its affinity where the OS has one (Linux; Python 3.13's
    ``os.process_cpu_count``), else every core (macOS, Windows)."""
    counter = getattr(os, "process_cpu_count", None)
    if counter is not None:
        count = counter()
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count()
    return max(1, count or 1)


def threads_per_job(jobs: int) -> int:
    """Torch threads for each of ``jobs`` processes sharing the cores this process may use: more
    OpenMP threads than cores make every process wait at each barrier."""
    return max(1, usable_cores() // jobs)


def memory_format(prefers_channels_last: bool, device: str | torch.device) -> torch.memory_format:
    """The layout of a model's weights and input batches on ``device`` (see the module text)."""
    if prefers_channels_last and torch.device(device).type == "cuda":
        return torch.channels_last
    return torch.contiguous_format


def onednn_isa_cap() -> str | None:
    """The ISA oneDNN is limited to by ``ONEDNN_MAX_CPU_ISA`` (or its old name
    ``DNNL_MAX_CPU_ISA``), upper-case, or None."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value else None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware, as far as oneDNN may use it."""
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False  # oneDNN cannot run bf16 at all here (or is capped below it)
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        if onednn_isa_cap() in _ISAS_WITHOUT_BF16:
            return False
        # oneDNN also "supports" bf16 on plain AVX-512 by emulation; native needs these:
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True  # ARM: oneDNN reports bf16 support only with the BF16 extension


def has_native_bf16(device: str | torch.device) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


_warned: set[str] = set()


def training_precision(precision: str, device: str | torch.device) -> str:
    """The precision a run that asks for ``precision`` trains in on ``device``: bf16 falls back
    to fp32 where the device lacks native bf16, with one warning per device type and process."""
    check(precision, PRECISIONS, "precision")
    device = torch.device(device)
    if precision == "bf16" and not has_native_bf16(device):
        if device.type not in _warned:
            _warned.add(device.type)
            what = ("this CPU has no native bf16 (AVX512-BF16, AMX or ARM BF16)" if device.type == "cpu"
                    else f"this {device.type} device has no native bf16")
            warnings.warn(f"precision 'bf16' asked for, but {what}, so emulating it would only be "
                          f"slower: training in fp32 instead, stored as an fp32 run. Pass "
                          f"precision='fp32' to silence this.", PrecisionFallbackWarning, stacklevel=3)
        return "fp32"
    return precision


def describe(device: str | torch.device = "cpu") -> dict:
    """What the layout and precision rules see on ``device``: for reports and provenance."""
    device = torch.device(device)
    info = {"device_type": device.type, "machine": platform.machine(),
            "native_bf16": has_native_bf16(device),
            "channels_last_for_cnns": memory_format(True, device) == torch.channels_last}
    if device.type == "cpu":
        info["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["onednn_isa_cap"] = onednn_isa_cap()
    return info


class CompileFallbackWarning(UserWarning):
    """``compile="reduce-overhead"`` (CUDA graphs) was asked for off CUDA; the step compiles without graphs."""


def step_mode(mode: str, device: str | torch.device, layout: str) -> str:
    """The step mode a run that asks for ``mode`` trains in on ``device`` for a backbone whose
    blocks have ``layout`` (the module text): ``"auto"`` by :data:`FASTEST_STEP`, and
    ``"reduce-overhead"`` off CUDA as ``"compile"`` with one warning."""
    check(mode, COMPILE_MODES, "compile mode", "modes")
    device = torch.device(device)
    if mode == "auto":
        return FASTEST_STEP.get((device.type, layout), "eager")
    if mode == "reduce-overhead" and device.type != "cuda":
        if "reduce-overhead" not in _warned:
            _warned.add("reduce-overhead")
            warnings.warn(f"compile='reduce-overhead' captures CUDA graphs, which a {device.type} device has "
                          f"not: compiling without them instead (stored as compile='compile')",
                          CompileFallbackWarning, stacklevel=3)
        return "compile"
    return mode


def jobs_per_gpu(gpu_memory: int, cores: int, gpus: int = 1, job_memory: int = JOB_GPU_MEMORY["cpu"],
                 cap: int = MAX_JOBS_PER_GPU) -> int:
    """Concurrent training jobs to give each of ``gpus`` GPUs of ``gpu_memory`` bytes on a machine
    with ``cores`` CPU cores: what the memory holds at ``job_memory`` each, at most a core per job
    and at most ``cap``; never fewer than one."""
    if gpus < 1 or cores < 1 or gpu_memory < 1 or job_memory < 1 or cap < 1:
        raise ValueError(f"gpus, cores, memory and cap must be positive, got gpus={gpus}, cores={cores}, "
                         f"gpu_memory={gpu_memory}, job_memory={job_memory}, cap={cap}")
    return max(1, min(cap, gpu_memory // job_memory, cores // gpus))


def local_jobs(device: str | torch.device, profile: str = "cpu") -> int:
    """How many training jobs run at once on this machine by default: on a CUDA device, every
    GPU's :func:`jobs_per_gpu` (``MEXLIB_JOBS_PER_GPU`` overrides the per-GPU count); on the CPU
    two (each with half the cores' threads: ``benchmarks/parallel_jobs.py``)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return 2
    gpus = torch.cuda.device_count()
    override = os.environ.get("MEXLIB_JOBS_PER_GPU")
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(f"MEXLIB_JOBS_PER_GPU must be a positive whole number, got {override!r}")
        return gpus * int(override)
    memory = min(torch.cuda.get_device_properties(g).total_memory for g in range(gpus))
    return gpus * jobs_per_gpu(memory, usable_cores(), gpus,
                               JOB_GPU_MEMORY.get(profile, JOB_GPU_MEMORY["paper"]))


def least_busy_gpu(busy: list[int], gpus: int) -> int:
    """The GPU (0 .. ``gpus`` − 1) running the fewest of the jobs in ``busy`` (each job's GPU);
    the lowest-numbered one of a tie."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    return min(range(gpus), key=lambda g: (busy.count(g), g))


@contextlib.contextmanager
def deterministic_kernels(device: torch.device | str, on: bool = True):
    """While inside, on a CUDA device and with ``on``: PyTorch's deterministic algorithms (an op
    without one raises, naming itself), cuDNN's deterministic convolutions without autotuning, and
    cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which must be set before the
    process's first matrix product on the GPU: a job sets it at its start). Two runs of one
    configuration on the same GPU, driver and PyTorch are then bit-identical; it costs speed
    (cuDNN's fastest algorithms and atomics-based kernels are off). Everything is restored on
    leaving. On the CPU nothing changes: its kernels already give identical results run after
    run at a fixed thread count."""
    if not on or torch.device(device).type != "cuda":
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[1], previous[2]
        if previous[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


__all__ = ["COMPILE_MODES", "CompileFallbackWarning", "FASTEST_STEP", "JOB_GPU_MEMORY", "MAX_JOBS_PER_GPU",
           "PRECISIONS", "PrecisionFallbackWarning", "jobs_per_gpu", "least_busy_gpu", "local_jobs", "step_mode", "cpu_has_native_bf16", "describe", "deterministic_kernels",
           "has_native_bf16", "memory_format", "onednn_isa_cap", "training_precision"]
