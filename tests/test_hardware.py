"""The CPU rules (mexlib.hardware): layout by device, bf16 only where native; the gradient check
against float64 (mexlib.kernel_check), in this process and under oneDNN's AVX2 kernels."""

from __future__ import annotations

import os
import platform
import sys
import warnings
from pathlib import Path

import pytest
import torch

from mexlib import hardware, kernel_check, paths
from subprocesses import run_with_timeout
from mexlib.config import make_config
from mexlib.data import load_dataset
from mexlib.models import ARCHITECTURES
from mexlib.store import RunStore, run_key
from mexlib.train import DeviceData, autocast_for, build_model, memory_format_for

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a CUDA device object needs no GPU
X86 = platform.machine().lower() in ("x86_64", "amd64")
SMALL = [a for a in ARCHITECTURES if a.endswith(("-smoke", "-cpu"))]
PAPER_DEFAULTS = ["resnet34", "vit-t"]  # the paper profile's architectures (bf16 there)


# --- the layout rule -------------------------------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_channels_last_on_cuda_only_for_every_architecture(arch):
    config = make_config("smoke", arch=arch)
    cnn = ARCHITECTURES[arch].family in ("resnet", "msdnet")
    assert memory_format_for(config, CPU) == torch.contiguous_format
    assert memory_format_for(config, CUDA) == (torch.channels_last if cnn else torch.contiguous_format)
    assert ARCHITECTURES[arch].prefers_channels_last == cnn


def test_models_and_batches_are_nchw_on_the_cpu_whatever_the_widths():
    """The trainer's own objects on the CPU, for the 4-channel smoke ResNet that oneDNN's bug
    hits and for the cpu profile's."""
    data = load_dataset("fashion-mnist")
    for arch in ("resnet-smoke", "resnet-cpu"):
        config = make_config("smoke", arch=arch)
        weights = [p for p in build_model(config).parameters() if p.dim() == 4]
        assert any(p.shape[1] == 4 and p.shape[2:] == (1, 1) for p in weights) == (arch == "resnet-smoke")
        kernels = [p for p in weights if p.shape[1] > 1 and p.shape[2] > 1]  # where layouts differ
        assert kernels and all(p.is_contiguous() and not p.is_contiguous(memory_format=torch.channels_last)
                               for p in kernels)
        loaders = DeviceData.from_dataset(config, data, CPU)
        assert loaders.memory_format == torch.contiguous_format
        x, _ = next(iter(loaders.train_loader("joint", 16)))
        assert x.is_contiguous()


# --- bf16 ------------------------------------------------------------------------------------

def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not (X86 and Path("/proc/cpuinfo").is_file()), reason="reads x86 flags on Linux")
def test_native_bf16_detection_follows_the_cpu_flags_and_the_onednn_cap(monkeypatch):
    if os.environ.get("ATEN_CPU_CAPABILITY") or hardware.onednn_isa_cap():
        pytest.skip("this process runs under an ISA cap (oneDNN read it at start-up)")
    flags = _cpu_flags()
    assert hardware.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert hardware.onednn_isa_cap() == "AVX2" and not hardware.cpu_has_native_bf16()
    assert not hardware.has_native_bf16("cpu")


@pytest.fixture
def no_native_bf16(monkeypatch):
    """A CPU without native bf16, simulated; the once-per-process warning starts afresh."""
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(hardware, "_warned", set())


def test_bf16_without_native_support_warns_once_and_trains_as_fp32(tmp_path, no_native_bf16):
    fp32 = make_config("smoke", regime="joint", epochs=1, train_size=256)
    bf16 = make_config("smoke", regime="joint", epochs=1, train_size=256, precision="bf16")
    store = RunStore(tmp_path, device="cpu", progress=False)
    with pytest.warns(hardware.PrecisionFallbackWarning, match="no native bf16.*fp32") as caught:
        run = store.get_or_run(bf16)
        again = store.get_or_run(bf16)
        autocast = autocast_for(CPU, "bf16")
    assert sum(w.category is hardware.PrecisionFallbackWarning for w in caught) == 1  # once
    assert run.path == again.path and run.path.name == f"run-{run_key(fp32)}"
    assert run.config["precision"] == "fp32" and not autocast._enabled
    assert store.trained == [run.path.name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", hardware.PrecisionFallbackWarning)
        assert store.get_or_run(fp32).path == run.path  # the fp32 run it is, not retrained
    assert store.trained == [run.path.name]


def test_bf16_with_native_support_trains_in_bf16(tmp_path):
    if not hardware.has_native_bf16("cpu"):
        pytest.skip("this CPU has no native bf16: the fallback test covers it")
    store = RunStore(tmp_path, device="cpu", progress=False)
    common = dict(regime="joint", epochs=1, train_size=256)
    with warnings.catch_warnings():
        warnings.simplefilter("error", hardware.PrecisionFallbackWarning)
        bf16 = store.get_or_run(make_config("smoke", precision="bf16", **common))
    fp32 = store.get_or_run(make_config("smoke", **common))
    assert bf16.config["precision"] == "bf16" and bf16.path != fp32.path
    assert autocast_for(CPU, "bf16")._enabled
    bf16_logits, fp32_logits = bf16.logits("test")[0], fp32.logits("test")[0]
    assert bf16_logits.dtype == torch.float32 and torch.isfinite(bf16_logits).all()
    assert not torch.equal(bf16_logits, fp32_logits)  # autocast really ran in bf16


def test_unknown_precision_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid precisions: fp32, bf16"):
        hardware.training_precision("fp16", CPU)


# --- the gradient check ----------------------------------------------------------------------

CHECKED = ([(a, "auto") for a in ARCHITECTURES]
           + [(a, h) for a in SMALL for h in kernel_check.heads_for(a)[1:]])


@pytest.mark.parametrize("arch,head", CHECKED, ids=[f"{a}-{h}" for a, h in CHECKED])
def test_one_training_step_matches_float64_in_the_trainers_layout(arch, head):
    """Every registered architecture (every head on the small ones), in the layout and
    precision the trainer uses on this CPU: fp32, and bf16 where the CPU has it natively."""
    precisions = kernel_check.precisions_here(CPU)
    if arch not in SMALL + PAPER_DEFAULTS:
        precisions = precisions[:1]  # bf16 on the models the paper profile trains in it
    for precision in precisions:
        result = kernel_check.check_gradients(arch, head, precision, batch=4)
        assert result.layout == "nchw" and result.precision == precision
        assert result.ok, str(result)
        assert result.local and (result.end_to_end or precision == "bf16")


def test_the_check_reports_a_wrong_gradient(monkeypatch):
    """A kernel that returns wrong weight gradients is caught by name (simulated by scaling one
    convolution's weight gradient, as issue 6035 corrupts the 1x1 shortcut's)."""
    original = kernel_check._step_with_records

    def corrupted(model, *args):
        records = original(model, *args)
        model.get_parameter("backbone.blocks.1.shortcut.0.weight").grad.mul_(3)
        return records

    monkeypatch.setattr(kernel_check, "_step_with_records", corrupted)
    result = kernel_check.check_gradients("resnet-smoke", batch=4)
    assert not result.ok
    assert result.failures[0].startswith("backbone.blocks.1.shortcut.0.weight: 2.0e+00")
    assert "MISMATCH" in str(result)


def _run_check(args: list[str], timeout: float, threads: int = 2) -> tuple[str, int | None]:
    """``python -m mexlib.kernel_check`` under oneDNN's and ATen's AVX2 kernels: its output and
    exit status (None when it ran past ``timeout``)."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
           "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(paths.ROOT)}
    out, _, status = run_with_timeout([sys.executable, "-m", "mexlib.kernel_check", "--threads",
                                       str(threads), *args], env, timeout, merge_stderr=True)
    return out, status


def _last_started(output: str) -> str:
    started = [line for line in output.splitlines() if line.startswith("checking ")]
    return started[-1].removeprefix("checking ").removesuffix(" ...") if started else "(none)"


@pytest.mark.skipif(not X86, reason="ONEDNN_MAX_CPU_ISA=AVX2 is an x86 setting")
@pytest.mark.skipif(X86 and not torch.cpu._is_avx512_supported(),
                    reason="an AVX2-only CPU: the in-process test already runs the AVX2 kernels")
@pytest.mark.timeout(300)
def test_every_architecture_under_onednn_avx2_kernels():
    """On an AVX-512 machine this exercises the AVX2 kernels (jit_1x1:avx2 among them) that an
    AVX2-only CPU runs, for every architecture with its default head. A hang ends as a failure
    naming the model being checked. Where this process already runs under the AVX2 cap (the suite
    under tools/slower_cpu.sh), the in-process test above checks the same models with the same
    kernels: running them again in a subprocess would only repeat it."""
    if hardware.onednn_isa_cap() == "AVX2":
        pytest.skip("this process runs oneDNN's AVX2 kernels already: the in-process test covers every architecture")
    args = [f"--arch={a}" for a in ARCHITECTURES] + ["--head=pool", "--head=token", "--head=msd", "--batch=4"]
    # the test process's threads: two, or one on each of two workers sharing two cores
    output, status = _run_check(args, timeout=240, threads=torch.get_num_threads())
    assert status is not None, f"hung while checking {_last_started(output)}:\n{output[-3000:]}"
    assert status == 0, f"failed while checking {_last_started(output)}:\n{output[-3000:]}"
    assert "'onednn_isa_cap': 'AVX2'" in output and "'native_bf16': False" in output
    checked = [line.split()[1] for line in output.splitlines() if line.startswith("checking ")]
    assert sorted(set(checked)) == sorted(ARCHITECTURES)
    assert f"{len(checked)} of {len(checked)} gradient checks match" in output


@pytest.mark.skipif(not X86, reason="ONEDNN_MAX_CPU_ISA=AVX2 is an x86 setting")
def test_channels_last_on_the_cpu_is_what_the_check_catches():
    """The layout the trainer avoids, forced: under oneDNN's AVX2 kernels the smoke ResNet's
    4-channel 1x1 shortcut gets wrong weight gradients, or the step hangs or crashes (one thread:
    a crash rather than a hang, as reported). Any of these is the check doing its job."""
    output, status = _run_check(["--arch", "resnet-smoke", "--head", "pool", "--layout",
                                 "channels_last"], timeout=60, threads=1)
    if status == 0:
        pytest.skip("this oneDNN computes the channels-last 1x1 gradient correctly (issue 6035 "
                    "fixed or not reached here)")
    if status == 1:
        assert "MISMATCH" in output and "shortcut.0.weight" in output, output[-3000:]
    else:  # a hang, or death by a signal (bus error, segmentation fault)
        assert status is None or status < 0, f"exit status {status}:\n{output[-3000:]}"


# --- the GPU path's decisions, checked where CI runs: without a GPU ------------------------------

def test_auto_compiles_only_where_it_was_measured_faster():
    """``compile="auto"``: eager on the CPU for every layout; on CUDA the layouts of
    FASTEST_STEP compile and the rest stay eager; an explicit mode is kept."""
    for layout in ("conv", "tokens", "multiscale", "sequence"):
        assert hardware.step_mode("auto", "cpu", layout) == "eager"
        assert hardware.step_mode("auto", "cuda", layout) == hardware.FASTEST_STEP.get(("cuda", layout), "eager")
        assert hardware.step_mode("compile", "cpu", layout) == "compile"
        assert hardware.step_mode("eager", "cuda", layout) == "eager"
    assert hardware.step_mode("auto", "cuda", "tokens") == "compile"  # ViT-T: 1.42x on an H200
    assert hardware.step_mode("auto", "cuda", "conv") == "eager"  # ResNet-34: 0.89x
    assert hardware.step_mode("reduce-overhead", "cuda", "conv") == "reduce-overhead"
    with pytest.raises(ValueError, match="valid modes: auto, eager, compile, reduce-overhead"):
        hardware.step_mode("fast", "cpu", "conv")
    with pytest.raises(ValueError, match="valid modes: auto, eager, compile, reduce-overhead"):
        make_config("smoke", compile="graphs")


def test_cuda_graphs_asked_for_off_cuda_compile_without_them_and_say_so_once(monkeypatch):
    monkeypatch.setattr(hardware, "_warned", set())
    with pytest.warns(hardware.CompileFallbackWarning, match="CUDA graphs") as caught:
        modes = [hardware.step_mode("reduce-overhead", "cpu", layout) for layout in ("conv", "tokens")]
    assert modes == ["compile", "compile"] and len(caught) == 1


def test_compile_auto_keeps_every_stored_cpu_key_and_keys_a_compiled_gpu_run_apart(tmp_path):
    """The store resolves ``compile="auto"`` before keying: on the CPU it is eager, which is left
    out of the key (the runs stored before the field keep theirs); a ViT planned for a GPU
    compiles and gets a key of its own, a ResNet planned for a GPU does not."""
    store = RunStore(tmp_path, device="cpu", progress=False)
    for arch in ("resnet-smoke", "vit-smoke"):
        auto, eager = make_config("smoke", arch=arch), make_config("smoke", arch=arch, compile="eager")
        assert store.resolve(auto).compile == "eager" and "compile" not in store.resolve(auto).to_dict()
        assert run_key(store.resolve(auto)) == run_key(eager) == run_key(auto)
    vit, resnet = make_config("smoke", arch="vit-smoke"), make_config("smoke", arch="resnet-smoke")
    assert store.resolve(vit, device="cuda").compile == "compile"
    assert run_key(store.resolve(vit, device="cuda")) != run_key(store.resolve(vit))
    assert store.resolve(resnet, device="cuda").compile == "eager"
    assert run_key(store.resolve(resnet, device="cuda")) == run_key(store.resolve(resnet))


@pytest.mark.slow
@pytest.mark.timeout(200)  # compiling takes about 20 s here (35 s beside two training jobs)
@pytest.mark.parametrize("method", ["sdn", "l2w"])
def test_a_compiled_run_trains_to_the_eager_runs_numbers_and_is_stored_as_compiled(tmp_path, monkeypatch, method):
    """``compile="compile"`` on the CPU: every piece of the model compiled (torch.compile's
    inductor), the state dict's names unchanged, and a ViT's test logits within float rounding
    of the eager run's (its kernels fuse; the arithmetic is the same), stored under its own key.
    L2W too, whose meta step differentiates twice through the model, which compiled pieces
    (aot_autograd) cannot: it runs them eagerly there. Inductor's cache goes to a folder of the
    test's own: its key does not include ATEN_CPU_CAPABILITY, so kernels cached natively (AVX-512)
    and reused with ``avx2`` (the slower-CPU stand-in) gave NaN losses."""
    from mexlib.train import compile_for_training

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))

    common = dict(arch="vit-smoke", regime="joint", method=method, epochs=1, train_size=256, test_size=256)
    model = build_model(make_config("smoke", **common))
    names = list(model.state_dict())
    assert compile_for_training(model, make_config("smoke", compile="compile", **common), CPU) == "compile"
    assert list(model.state_dict()) == names
    assert all(block._compiled_call_impl is not None for block in model.backbone.blocks)
    assert all(head._compiled_call_impl is not None for head in model.heads)
    store = RunStore(tmp_path, device="cpu", progress=False)
    eager = store.get_or_run(make_config("smoke", **common))
    compiled = store.get_or_run(make_config("smoke", compile="compile", **common))
    assert compiled.config["compile"] == "compile" and "compile" not in eager.config
    assert compiled.path != eager.path
    a, b = eager.logits("test")[0], compiled.logits("test")[0]
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), float((a - b).abs().max())


def test_jobs_per_gpu_is_bounded_by_memory_cores_and_the_cap():
    job = hardware.JOB_GPU_MEMORY["cpu"]
    cap = hardware.MAX_JOBS_PER_GPU
    assert hardware.jobs_per_gpu(3 * job + job // 2, cores=64) == 3  # memory decides
    assert hardware.jobs_per_gpu(100 * job, cores=5) == 5  # a core per job
    assert hardware.jobs_per_gpu(100 * job, cores=16, gpus=4) == 4  # the cores shared by the GPUs
    assert hardware.jobs_per_gpu(100 * job, cores=512) == cap
    assert hardware.jobs_per_gpu(job // 2, cores=1) == 1  # never none
    with pytest.raises(ValueError, match="must be positive"):
        hardware.jobs_per_gpu(100 * job, cores=8, gpus=0)


def test_without_cuda_local_jobs_and_the_executor_stay_as_on_the_cpu(monkeypatch):
    """No CUDA: two jobs, and ``make reproduce``'s ``--executor auto`` trains inline; given
    values are kept; bad ones are refused with the choices."""
    from mexlib import reproduce

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("MEXLIB_JOBS_PER_GPU", "3")  # read only where there are GPUs
    assert hardware.local_jobs("cpu") == 2 and hardware.local_jobs("cuda") == 2
    assert reproduce.resolve_executor("auto", None) == ("inline", 2)
    assert reproduce.resolve_executor("local", 1) == ("local", 1)
    with pytest.raises(ValueError, match="valid executors: auto, inline, local, slurm"):
        reproduce.resolve_executor("gpu")
    with pytest.raises(ValueError, match="at least 1"):
        reproduce.resolve_executor("local", 0)


def test_least_busy_gpu_spreads_jobs_evenly():
    busy: list[int] = []
    for _ in range(7):
        busy.append(hardware.least_busy_gpu(busy, 3))
    assert busy == [0, 1, 2, 0, 1, 2, 0]
    busy.remove(1)
    assert hardware.least_busy_gpu(busy, 3) == 1
