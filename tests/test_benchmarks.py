"""The benchmark scripts run end to end (tiny settings: this checks that they work, not how fast)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402
import language_cost  # noqa: E402
import method_cost  # noqa: E402
import stacked_seeds  # noqa: E402
import train_throughput  # noqa: E402
from mexlib import hardware, paths  # noqa: E402
from mexlib.config import make_config  # noqa: E402
from mexlib.models import FAMILY_LAYOUTS, arch_spec  # noqa: E402
from mexlib.store import RunStore  # noqa: E402


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True,
                          text=True, timeout=100)  # within the test's own 120 s


def test_train_throughput_measures_three_ways_and_their_ratios():
    result = train_throughput.measure(steps=2, warmup=1, repeats=3)
    variants = result["variants"]
    assert list(variants) == ["(a) mexlib train_phase", "(b) bare loop", "(c) torchvision DataLoader"]
    for v in variants.values():  # an odd number of rounds: the median rate is the median time's
        assert len(v["rounds"]) == 3 and all(r > 0 for r in v["rounds"])
        assert v["images_per_second"] == pytest.approx(2 * result["batch"] / v["seconds"])
    a, b, c = (v["images_per_second"] for v in variants.values())
    assert result["ratios"] == {"(a)/(b)": pytest.approx(a / b), "(a)/(c)": pytest.approx(a / c)}
    text = train_throughput.report(result)
    assert f"(a)/(c) = {a / c:.3f}  (no target on this device type)" in text  # withdrawn on the CPU
    assert f"(a)/(b) = {a / b:.3f}  target >= 0.90  {'PASS' if a / b >= 0.9 else 'FAIL'}" in text
    on_gpu = train_throughput.report({**result, "device": "cuda (a GPU)"})
    assert f"(a)/(c) = {a / c:.3f}  target >= 1.50  {'PASS' if a / c >= 1.5 else 'FAIL'}" in on_gpu


def _exits_with_usage_error(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        train_throughput.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_train_throughput_script_rejects_bad_settings(capsys):
    _exits_with_usage_error(["--steps", "100000"], "use steps <=", capsys)
    _exits_with_usage_error(["--device", "tpu"], "choose from 'cpu', 'cuda'", capsys)
    if not torch.cuda.is_available():
        _exits_with_usage_error(["--device", "cuda"], "needs a CUDA device", capsys)


def test_gpu_check_says_it_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check itself would run")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_check.main([])


def test_gpu_check_parts_run_on_the_cpu(tmp_path):
    """The check's parts, on the CPU at smoke size: what a GPU session runs, minus CUDA itself."""
    rows = gpu_check.regime_comparison(RunStore(tmp_path, device="cpu", progress=False), "smoke")
    bf16 = gpu_check.regime_comparison(RunStore(tmp_path, device="cpu", progress=False), "smoke",
                                       precision="bf16")
    trained_in = "bf16" if hardware.has_native_bf16("cpu") else "fp32"  # the rule of mexlib.hardware
    assert [row["precision"] for row in rows + bf16] == ["fp32"] * 3 + [trained_in] * 3
    assert [row["regime"] for row in rows] == ["disjoint", "joint", "mixed"]
    failed = gpu_check.regime_comparison(RunStore(tmp_path, device="cpu", progress=False), "smoke", arch="no-such")
    assert [(row["regime"], "no-such" in row["error"]) for row in failed] == [(r, True) for r in ("disjoint", "joint",
                                                                                                  "mixed")]
    stored = RunStore(tmp_path, device="cpu", progress=False)
    for row in rows:
        run = stored.get_or_run(make_config("smoke", regime=row["regime"], seed=0))
        logits, labels = run.logits("test")
        assert row["exit_accuracy"] == [round(a, 4) for a in
                                        (logits.argmax(-1) == labels).double().mean(1).tolist()]
        assert row["device"] == "cpu"
    step = gpu_check.paper_step_throughput("resnet34", steps=1, batch=2, warmup=0, device="cpu")
    assert step["exits"] == 7 and step["images_per_second"] > 0
    cost = gpu_check.deterministic_cost("resnet34", rounds=1, device="cpu", steps=1, batch=2, warmup=0)
    assert len(cost["without"]) == len(cost["deterministic"]) == 1
    assert cost["ratio"] == round(cost["deterministic"][0] / cost["without"][0], 3)
    # On the CPU both ways are bit-identical run after run (the switch changes nothing there).
    same = gpu_check.repeatability("smoke", device="cpu")
    assert same == {way: dict(identical=True, largest_difference=0.0) for way in ("default", "deterministic")}


def test_eval_sweep_prints_every_policy_against_the_target():
    done = run_script("eval_sweep.py", "--samples", "500", "--exits", "3", "--classes", "10",
                      "--warmup", "0", "--repeats", "2", "--threads", "1")
    assert done.returncode == 0, done.stderr
    for policy in ("confidence", "entropy", "patience"):
        assert policy in done.stdout


def test_parallel_jobs_prints_both_ways_and_the_ratio():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "parallel_jobs.py"), "--cores", "2", "--steps", "2",
                             "--warmup", "1", "--repeats", "1"], capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(a) 1 process x 2 threads" in result.stdout and "(b) 2 processes x 1 thread" in result.stdout
    ratio = float(result.stdout.strip().split("(b)/(a) = ")[-1])
    assert ratio > 0


def test_exit_latency_times_every_exit_and_relates_it_to_flops(tmp_path):
    import exit_latency
    frame = exit_latency.measure("resnet-smoke", batches=(1, 4), threads=(1,), warmup=1, repeats=2)
    num_exits = 3  # the cpu profile with a 3-block ResNet: a head after blocks 1 and 2, then the final exit
    assert len(frame) == 2 * num_exits and set(frame["exit"]) == set(range(num_exits))
    assert (frame["ms"] > 0).all()
    final = frame[frame["exit"] == num_exits - 1]
    assert (final["time_relative"] == 1).all() and (final["flops_relative"] == 1).all()
    assert frame.groupby("batch")["flops_per_image"].apply(lambda f: f.is_monotonic_increasing).all()
    out = tmp_path / "latency.csv"
    done = run_script("exit_latency.py", "--archs", "resnet-smoke", "--batches", "1", "--threads", "1",
                      "--warmup", "0", "--repeats", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "load average before" in done.stdout


def test_recording_cost_times_the_recorders_against_plain_training():
    import recording_cost
    result = recording_cost.measure("smoke", steps=3, repeats=1, every=1)
    assert set(result["seconds"]) == set(recording_cost.WAYS) and all(v > 0 for v in result["seconds"].values())
    assert result["ratio"]["plain"] == 1
    text = recording_cost.report(result)
    assert "both recorders" in text and "target of at most 2×" in text
    done = run_script("recording_cost.py", "--profile", "smoke", "--steps", "2", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    assert "× plain" in done.stdout
    bad = run_script("recording_cost.py", "--profile", "smoke", "--steps", "0")
    assert bad.returncode == 2 and "argument --steps: 0 is too small: 1 or more" in bad.stderr


def test_method_cost_estimates_follow_the_measured_steps(capsys):
    result = method_cost.measure("smoke", steps=2, warmup=1, rounds=1, ensemble_epochs=1)
    step, val, ensemble = result["step"], result["validation"], result["ensemble"]
    assert set(step) == {(m, p) for m in method_cost.METHODS for p in ("joint", "heads")}
    assert all(s > 0 for s in step.values()) and val > 0 and ensemble["fixed"] > 0 and ensemble["per_epoch"] > 0
    assert ensemble["total"] == pytest.approx(ensemble["fixed"] + 501 * ensemble["per_epoch"])
    config = make_config("smoke")
    for (method, regime), minutes in result["runs"].items():
        phase = "heads" if regime == "disjoint" else "joint"
        seconds = config.phase(phase).epochs * (result["steps_per_epoch"] * step[(method, phase)] + val)
        seconds += ensemble["total"] if method == "ztw" else 0
        assert minutes == pytest.approx(seconds / 60)
    trained = [result["runs"][(m, r)] for m in ("gpf", "ztw", "l2w") for r in method_cost.REGIMES]
    assert result["job_minutes"] == pytest.approx(3 * sum(trained))
    assert result["floor_minutes"] == pytest.approx(9 * sum(result["runs"][("sdn", r)] for r in method_cost.REGIMES))
    text = method_cost.report(result, budget=45)
    ratio = step[("l2w", "joint")] / step[("sdn", "joint")]
    assert f"{ratio:6.2f}" in text.splitlines()[5] and text.splitlines()[5].startswith("l2w")
    assert f"{result['floor_minutes'] / 2:.0f} min as 2 jobs" in text
    with pytest.raises(SystemExit):
        method_cost.main(["--profile", "smoke", "--steps", "100"])
    assert "use steps + warmup <=" in capsys.readouterr().err


def test_language_cost_estimates_follow_the_measured_steps():
    result = language_cost.measure("smoke", batches=(8, 16), steps=2, warmup=1, rounds=1, budget=90)
    config = make_config("smoke", dataset="wordnet-supersenses")
    assert set(result["rows"]) == {8, 16} and result["arch"] == config.arch and result["max_tokens"] == 32
    for batch, row in result["rows"].items():
        encoder, heads = row["encoder_ms"] / 1000, row["heads_ms"] / 1000
        assert encoder > 0 and heads > 0 and row["texts_per_s"] == pytest.approx(batch / encoder)
        minutes = language_cost.estimate_minutes(config, 2, 2, config.train_size, batch, encoder, heads,
                                                 result["per_text_ms"] / 1000)
        assert row["minutes"] == pytest.approx(minutes)
        # the largest training set within the budget costs the budget
        fits = language_cost.estimate_minutes(config, 2, 2, row["fits"], batch, encoder, heads,
                                              result["per_text_ms"] / 1000)
        assert fits == pytest.approx(90, rel=0.01)
    text = language_cost.report(result)
    assert text.splitlines()[3].split()[0] == "8" and "budget 90 min" in text


@pytest.mark.parametrize("script,bad,named", [
    ("parallel_jobs", ["--steps", "0"], "argument --steps: 0 is too small: 1 or more"),
    ("parallel_jobs", ["--cores", "two"], "argument --cores: 'two' is not a whole number"),
    ("eval_sweep", ["--repeats", "-1"], "argument --repeats: -1 is too small: 1 or more"),
    ("eval_sweep", ["--warmup", "-2"], "argument --warmup: -2 is too small: 0 or more"),
    ("exit_latency", ["--batches", "0"], "argument --batches: 0 is too small: 1 or more"),
    ("method_cost", ["--budget", "0"], "argument --budget: 0 is too small: above 0"),
    ("method_cost", ["--profile", "laptop"], "argument --profile: invalid choice: 'laptop'"),
    ("language_cost", ["--batches", "0"], "argument --batches: 0 is too small: 1 or more"),
    ("recording_cost", ["--every", "0"], "argument --every: 0 is too small: 1 or more"),
    ("stacked_seeds", ["--seeds", "0"], "argument --seeds: 0 is too small: 1 or more"),
    ("train_throughput", ["--workers", "-1"], "argument --workers: -1 is too small: 0 or more"),
])
def test_a_benchmark_refuses_a_bad_argument_with_its_usage(script, bad, named, capsys):
    import importlib

    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as stop:
        module.main(bad)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: ") and named in error


@pytest.mark.timeout(240)  # about 50 s here beside two training jobs: three Python processes start
def test_gpu_check_issue_26_parts_run_on_the_cpu():
    """The parts that size the GPU path, on the CPU at tiny sizes (a GPU session runs them at
    full size): their rows, ratios and shares follow from what they measured."""
    # eager only: compiling on the CPU takes tens of seconds (test_hardware.py compiles a run)
    modes = gpu_check.step_modes(families=(("smoke", "vit-smoke"),), modes=("eager", "reduce-overhead"),
                                 rounds=1, device="cpu", batch=2, steps=1, warmup=1)
    (row,) = modes
    assert set(row["samples_per_second"]) == {"eager"}  # no CUDA graphs without CUDA
    assert row["against_eager"] == {m: round(v / row["samples_per_second"]["eager"], 3)
                                    for m, v in row["samples_per_second"].items()}
    # a text encoder's step takes token ids, at its runs' batch size unless one is given
    (text,) = gpu_check.step_modes(families=(("smoke", "bert-smoke"),), modes=("eager",), rounds=1, device="cpu",
                                   steps=1, warmup=1)
    assert text["layout"] == "sequence" and text["samples_per_second"]["eager"] > 0
    assert text["batch"] == make_config("smoke", arch="bert-smoke", regime="joint").joint_phase.batch_size
    timed = {arch_spec(arch).layout for _, arch in gpu_check.STEP_FAMILIES}
    assert timed == set(FAMILY_LAYOUTS.values())  # every block layout the package trains is timed
    (share,) = gpu_check.peak_share(archs=("vit-t",), batch=2, steps=1, device="cpu", peak=1e12)
    assert share["flops_per_step"] > 0
    assert share["share_of_peak"] == round(share["flops_per_step"] * share["images_per_second"] / 2 / 1e12, 4)
    assert gpu_check.peak_flops("NVIDIA H200") == gpu_check.PEAK_BF16["H200"] and gpu_check.peak_flops("cpu") is None
    for card in gpu_check.PEAK_BF16:  # every card finds its own figure, not a shorter name's
        assert gpu_check.peak_flops(f"NVIDIA {card}") == gpu_check.PEAK_BF16[card], card
    together = gpu_check.concurrency(counts=(1, 2), steps=2, warmup=1, batch=4, device="cpu", profile="smoke")
    assert [r["processes"] for r in together] == [1, 2] and len(together[1]["per_process"]) == 2
    assert together[1]["images_per_second"] == pytest.approx(sum(together[1]["per_process"]), abs=0.2)
    seeds = gpu_check.stacked(counts=(1, 2), steps=1, warmup=1, batch=4, device="cpu", arch="vit-smoke",
                              profile="smoke")
    assert [r["seeds"] for r in seeds] == [1, 2] and seeds[0]["against_one"] == 1
    assert all(r["largest_weight_difference"] < 1e-5 for r in seeds)
    (scaling,) = gpu_check.batch_scaling(archs=("vit-t",), batches=(2, 4), steps=1, warmup=0, device="cpu")
    rates = scaling["images_per_second"]
    assert set(rates) == {2, 4} and scaling["against_smallest"] == {b: round(r / rates[2], 3) for b, r in rates.items()}
    (bound,) = gpu_check.bounds(archs=("vit-t",), batch=2, steps=2, warmup=1, device="cpu")
    assert bound["step_ms"] > 0 and 0 < bound["host_ms_per_step"] <= bound["step_ms"] + 1e-3
    assert bound["launches_per_step"] == 0 and bound["device_busy_share"] is None  # no device activity on the CPU


def test_gpu_check_records_the_host():
    """The results say which commit, cores and devices they were measured with."""
    here = gpu_check.host()
    assert here["cpu_cores"] == len(os.sched_getaffinity(0)) and here["python"] == sys.version.split()[0]
    assert here["commit"] == subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                            cwd=Path(gpu_check.__file__).parent).stdout.strip()
    assert len(here["gpus"]) == torch.cuda.device_count()


def test_gpu_check_kernel_summary_counts_busy_time_once():
    """What bounds a step, from the device's activities: overlapping kernels count once in the busy
    share, every kernel counts in the device time, matrix products are told from the rest."""
    kernels = [("sm90_xmma_gemm_bf16", 0.0, 40.0), ("vectorized_elementwise_kernel", 30.0, 50.0),
               ("sm90_xmma_gemm_bf16", 100.0, 140.0), ("reduce_kernel", 190.0, 200.0)]
    covered = {t for _, start, end in kernels for t in range(int(start), int(end))}  # microsecond by microsecond
    summary = gpu_check.kernel_summary(kernels, steps=2, top=2)
    assert summary["device_busy_share"] == round(len(covered) / (200 - 0), 4)
    durations = [end - start for _, start, end in kernels]
    assert summary["device_ms_per_step"] == round(sum(durations) / 1e3 / 2, 3)
    assert summary["launches_per_step"] == 2
    assert summary["matmul_share"] == round(80 / sum(durations), 4)
    assert [k["name"] for k in summary["top_kernels"]] == ["sm90_xmma_gemm_bf16", "vectorized_elementwise_kernel"]
    assert summary["top_kernels"][0] == dict(name="sm90_xmma_gemm_bf16", calls_per_step=1.0, ms_per_step=0.04)
    assert gpu_check.kernel_summary([], steps=2)["device_busy_share"] is None


def test_gpu_check_budget_passes_over_what_does_not_fit(capsys):
    """The parts run in order while their estimates fit the budget; one that does not is passed
    over and a later, cheaper one still runs; budget 0 runs everything."""
    estimate = gpu_check.ESTIMATED_SECONDS
    cheap = min(gpu_check.PARTS, key=estimate.get)
    dear = max(gpu_check.PARTS, key=estimate.get)
    assert gpu_check.plan([dear, cheap], estimate[dear] - 1) == ([cheap], [dear])
    assert gpu_check.plan([cheap, dear], estimate[cheap] + estimate[dear]) == ([cheap, dear], [])
    assert gpu_check.plan(list(gpu_check.PARTS), 0) == (list(gpu_check.PARTS), [])
    assert set(estimate) == set(gpu_check.PARTS)
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--budget", "-1"])
    assert stopped.value.code == 2 and "--budget must be 0" in capsys.readouterr().err


def test_stacked_seeds_train_each_seed_as_its_own_model_would():
    """One stacked step of several seeds gives the weights each seed's own step gives (and a
    wrong stacking, the seeds' batches swapped, does not), then the timed comparison's ratio
    follows from its rates."""
    device = torch.device("cpu")
    assert stacked_seeds.largest_difference(3, 4, device, arch="vit-smoke", profile="smoke") < 1e-5
    models, x, y = stacked_seeds.models_and_batches(2, 4, device, arch="vit-smoke", profile="smoke")
    step, read = stacked_seeds.stacked_step(models, x.flip(0), y.flip(0))
    step()
    own, _, _ = stacked_seeds.models_and_batches(2, 4, device, arch="vit-smoke", profile="smoke")
    alone, read_alone = stacked_seeds.separate_step(own, x, y)
    alone()
    assert max(float((a[n] - b[n]).detach().abs().max()) for a, b in zip(read(), read_alone()) for n in a) > 1e-4
    result = stacked_seeds.measure(seeds=2, batch=4, steps=1, warmup=0, rounds=3, arch="vit-smoke", profile="smoke")
    # what vmap loops over is named: here exactly what it loops over in the ViT's attention alone, if anything
    from torch.func import vmap
    heads = torch.randn(2, 4, 3, 5, 8)  # seeds × batch × heads × tokens × width
    attention = stacked_seeds.unbatched_operators(
        lambda: vmap(lambda t: torch.nn.functional.scaled_dot_product_attention(t, t, t))(heads))
    assert stacked_seeds.unbatched_operators(lambda: vmap(torch.sin)(heads)) == []
    assert result["unbatched"] == attention and all("." != op[-1] for op in attention)
    assert ("vmap loops over the seeds" in stacked_seeds.report(result)) == bool(attention)
    rates = result["images_per_second"]
    assert all(len(r) == 3 for r in result["all_rates"].values())
    assert result["stacked_over_separate"] == round(rates["stacked"] / rates["separate"], 3)
    assert f"(b)/(a) = {result['stacked_over_separate']:.3f}" in stacked_seeds.report(result)


def test_gpu_check_refuses_unknown_parts(capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--parts", "concurrency,warp"])
    assert stopped.value.code == 2 and f"valid parts: {', '.join(gpu_check.PARTS)}" in capsys.readouterr().err


def _modes_row(profile, arch, rates, compiles):
    return dict(profile=profile, arch=arch, layout=arch_spec(arch).layout, samples_per_second=rates,
                against_eager={m: round(r / rates["eager"], 3) for m, r in rates.items()}, compile_seconds=compiles)


def test_gpu_check_summary_derives_the_settings_and_verdicts(tmp_path, capsys):
    """The summary of a GPU session's results: a compiled mode is chosen where it is clearly
    faster and repays its compile within one run (per layout; "split" where families disagree),
    jobs per GPU where more stop paying, each target met or not, failures named."""
    vit_samples = gpu_check.run_samples("cpu", "vit-cpu")
    text_samples = gpu_check.run_samples("cpu", "minilm-l6")
    assert vit_samples and text_samples and gpu_check.run_samples("paper", "resnet34") is None  # whole data set
    saved_text = 1 / 100 - 1 / 150  # seconds per text the compiled MiniLM saves
    results = {
        "device": "NVIDIA H200", "torch": "2.11.0", "host": {"commit": "abc1234"},
        "step_modes": [
            # 2x faster, 20 s more to compile: ahead after 40,000 images, well within a run
            _modes_row("cpu", "vit-cpu", {"eager": 1000.0, "compile": 2000.0}, {"eager": 0.5, "compile": 20.5}),
            _modes_row("cpu", "resnet-cpu", {"eager": 1000.0, "compile": 1000.0 * (gpu_check.MIN_GAIN - 0.02)},
                       {"eager": 0.5, "compile": 1.0}),  # faster, but within noise
            _modes_row("paper", "resnet34", {"eager": 100.0, "compile": 120.0, "reduce-overhead": 300.0},
                       {"eager": 1.0, "compile": 40.0, "reduce-overhead": 900.0}),  # a whole data set repays it
            # 1.5x faster, but the compile is repaid only after 1.5 runs' texts
            _modes_row("cpu", "minilm-l6", {"eager": 100.0, "compile": 150.0},
                       {"eager": 0.0, "compile": 1.5 * text_samples * saved_text})],
        "concurrency": [dict(processes=n, images_per_second=rate, against_one=round(rate / 100, 3))
                        for n, rate in ((1, 100.0), (2, 190.0), (4, 350.0), (8, 360.0))],
        "stacked": [dict(arch="vit-cpu", seeds=1, images_per_second=100.0, stacked_over_in_turn=1.0, against_one=1.0,
                         unbatched=[]),
                    dict(arch="vit-cpu", seeds=4, images_per_second=250.0, stacked_over_in_turn=2.2, against_one=2.5,
                         unbatched=["aten::_efficient_attention"])],
        "notebooks": [dict(notebook="01_regimes", seconds=120.0, returncode=0),
                      dict(notebook="02_methods", seconds=150.0, returncode=0)],
        "peak_share": [dict(arch="resnet34", share_of_peak=0.079, peak_tflops=789.6),
                       dict(arch="vit-t", share_of_peak=0.06, peak_tflops=789.6)],
        "deterministic_cost": [dict(arch="resnet34", ratio=0.81)],
        "trained_modes": [dict(arch="vit-cpu", seeds_difference=0.003, final_against_eager={"compile": -0.002,
                                                                                          "reduce-overhead": 0.0045},
                               seconds_against_eager={"compile": 1.5, "reduce-overhead": 0.8})],
        "language": [dict(regime="mixed", exit_accuracy=[0.3, 0.75], seconds=41.0, device="cuda:0"),
                     {"regime": "joint", "error": "RuntimeError: out of memory"}],
        "seconds": {"peak_share": 31.2, "concurrency": 80.0},
    }
    vit = gpu_check.step_choice(results["step_modes"][0], vit_samples)
    assert vit == dict(mode="compile", gain=2.0, break_even=math.ceil(20 / (1 / 1000 - 1 / 2000)))
    assert gpu_check.step_choice(results["step_modes"][0], vit["break_even"] - 1)["mode"] == "eager"
    assert gpu_check.step_choice(results["step_modes"][2], None)["mode"] == "reduce-overhead"  # the fastest
    summary = gpu_check.summarise(results)
    assert summary["settings"] == dict(fastest_step={"tokens": "compile", "conv": "split", "sequence": "eager"},
                                       jobs_per_gpu=4,  # 8 jobs add under 5 % to 4's rate
                                       estimated_seconds={"peak_share": 40, "concurrency": 80})
    verdicts = "\n".join(summary["verdicts"])
    assert "language (regime joint): failed: RuntimeError: out of memory" in verdicts
    table = tmp_path / "per_exit.csv"
    table.write_text("regime,exit 0 mean,exit 0 std,exit 1 mean,exit 1 std\njoint,0.3,0.01,0.7,0.02\n")
    assert gpu_check.final_exit_on_cpu(table) == {"joint": (0.7, 0.02)} and gpu_check.final_exit_on_cpu(tmp_path) == {}
    mean, std = gpu_check.final_exit_on_cpu()["mixed"]  # the committed table's last exit
    assert f"language mixed on cuda:0: final exit 75.0%, trained in 41 s; on the CPU {mean:.1%} ± {std:.1%}" in verdicts
    assert "concurrency: 3.60x one job's rate with 8 jobs, target 5x: not met" in verdicts
    assert "notebooks 01_regimes, 02_methods: 270 s, target 300 s: met" in verdicts
    assert ("stacked seeds (vit-cpu): at best 2.50x one model's images/s with 4 seeds, 2.20x the same seeds in turn; "
            "8 processes: 3.60x one: keep processes (vmap looped over the seeds for aten::_efficient_attention") in verdicts
    fewer = dict(results, concurrency=[dict(r, against_one=min(r["against_one"], 2.0)) for r in results["concurrency"]])
    assert "processes: 2.00x one: keep stacking" in "\n".join(gpu_check.summarise(fewer)["verdicts"])
    assert "peak share resnet34: 7.9% of 789.6 TFLOP/s, target 15%: not met (see bounds)" in verdicts
    assert "peak share vit-t: 6.0% of 789.6 TFLOP/s, target 5%: met" in verdicts
    assert "deterministic kernels resnet34: 0.81x" in verdicts
    assert ("trained vit-cpu compile: final exit -0.20 points against eager (the two eager seeds differ by 0.30): "
            "within the seeds' spread; 1.50x eager's wall time") in verdicts
    assert "trained vit-cpu reduce-overhead: final exit +0.45 points" in verdicts and "outside the seeds' spread; 0.80x" in verdicts
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(results))
    gpu_check.main(["--summarise", str(path)])  # needs no GPU
    printed = capsys.readouterr().out
    assert "NVIDIA H200, torch 2.11.0, commit abc1234" in printed and '"jobs_per_gpu": 4' in printed
    path.write_text('{"step_modes": [')  # cut short
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--summarise", str(path)])
    assert stop.value.code == 2 and "cannot read the results file" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_gpu_check_one_failure_loses_no_other_measurement():
    """A family, batch size or process count that fails is recorded with its error and the
    others are still measured (a GPU lend is short: one out-of-memory must not lose the rest)."""
    rows = gpu_check.step_modes(families=(("smoke", "vit-smoke"), ("smoke", "no-such-arch"), ("smoke", "resnet-smoke")),
                                modes=("eager",), rounds=1, device="cpu", batch=2, steps=1, warmup=1)
    assert [row["arch"] for row in rows] == ["vit-smoke", "no-such-arch", "resnet-smoke"]
    assert "no-such-arch" in rows[1]["error"] and "error" not in rows[0] and rows[2]["samples_per_second"]["eager"] > 0
    (scaling,) = gpu_check.batch_scaling(archs=("vit-t",), batches=(2, -1), steps=1, warmup=0, device="cpu")
    assert set(scaling["images_per_second"]) == {2} and set(scaling["failed"]) == {-1}
    started = time.perf_counter()
    (failed,) = gpu_check.concurrency(counts=(2,), steps=1, warmup=0, batch=2, device="cpu", profile="no-such-profile")
    assert failed["processes"] == 2 and "ended before its warm-up" in failed["error"]
    assert time.perf_counter() - started < 60  # the other worker was not left waiting for its go
    summary = gpu_check.summarise({"step_modes": rows})
    assert summary["settings"]["fastest_step"] == {"tokens": "eager", "conv": "eager"}
    assert any(v.startswith("step_modes (profile smoke, arch no-such-arch): failed: ") for v in summary["verdicts"])


def test_gpu_check_calls_add_up_in_one_results_file(tmp_path, capsys):
    """A second call (the same lend or a later one) adds its parts to the file of the first from
    the same device and PyTorch; a file from another device, or one cut short, is moved aside,
    never overwritten."""
    path = tmp_path / "gpu_check.json"
    fresh = dict(device="NVIDIA H200", torch="2.11.0", host=dict(commit="new"), seconds={}, not_run_over_budget=[])
    assert gpu_check.with_earlier_results(path, fresh) is fresh  # nothing there yet
    earlier = dict(fresh, host=dict(commit="old"), seconds={"peak_share": 30.0}, peak_share=[dict(arch="vit-t")],
                   commits={"peak_share": "old"}, not_run_over_budget=["notebooks"])
    paths.write_whole(path, json.dumps(earlier))  # as gpu_check's keep writes it
    assert [f.name for f in tmp_path.iterdir()] == ["gpu_check.json"]  # written whole, nothing partial left
    merged = gpu_check.with_earlier_results(path, fresh)
    assert merged["peak_share"] == earlier["peak_share"] and merged["seconds"] == {"peak_share": 30.0}
    assert merged["host"] == {"commit": "new"} and merged["commits"] == {"peak_share": "old"}
    assert merged["not_run_over_budget"] == [] and path.exists()  # this call's list starts empty
    other = dict(fresh, torch="2.14.1")
    assert gpu_check.with_earlier_results(path, other) is other
    assert not path.exists() and json.loads((tmp_path / "gpu_check.earlier-1.json").read_text()) == earlier
    path.write_text('{"device": "NVIDIA H200", "peak_')  # cut short by the end of a lend
    assert gpu_check.with_earlier_results(path, fresh) is fresh
    assert (tmp_path / "gpu_check.earlier-2.json").read_text().startswith('{"device"')
    assert "moved to" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_gpu_check_trained_modes_set_runs_beside_the_seeds_spread():
    """trained_modes trains seed 0 and seed 1 eagerly through the trainer (and seed 0 in each
    compiled mode asked for: none here, compiling on the CPU takes most of a minute) and measures
    a mode against the two eager seeds' difference."""
    (row,) = gpu_check.trained_modes(archs=("resnet-smoke",), modes=(), profile="smoke", device="cpu")
    eager, other = row["runs"]
    assert (eager["seed"], other["seed"], eager["compile"], eager["regime"]) == (0, 1, "eager", "joint")
    assert row["seeds_difference"] == round(abs(other["exit_accuracy"][-1] - eager["exit_accuracy"][-1]), 4)
    assert row["final_against_eager"] == {} and len(eager["exit_accuracy"]) == len(make_config("smoke").exit_after_blocks) + 1


@pytest.mark.timeout(150)
def test_gpu_check_study_stops_at_its_deadline_and_goes_on_where_it_stopped(tmp_path):
    """The whole-study part: a notebook still running at the deadline is stopped with every process
    below it and its seconds kept; the next call goes on (the stopped notebook again, its seconds
    adding up; a notebook done is not run again), a failing notebook is named with its output's
    tail, and the summary says the target met only once every notebook is done."""
    from mexlib.processes import descendants

    folder, names, kept, running_before = tmp_path / "study", ("00_data", "99_no_such_notebook"), [], descendants()
    first = gpu_check.study_times(folder, None, time.monotonic() + 4, profile="smoke", notebooks=names,
                                  keep=lambda value: kept.append(json.loads(json.dumps(value))), every=1)
    stopped, later = first["notebooks"]
    # the count so far was handed out while the notebook ran (a lend's end would have lost no more)
    assert [v["notebooks"][0]["state"] for v in kept] == ["running"] * (len(kept) - 1) + ["stopped"]
    assert len(kept) >= 3 and 0 < kept[-2]["notebooks"][0]["seconds"] < stopped["seconds"] and kept[-1] == first
    assert stopped["state"] == "stopped" and stopped["attempts"] == 1 and 4 <= stopped["seconds"] < 20
    assert stopped["processes_stopped"] >= 1 and descendants() <= running_before  # its kernel went with it
    assert later == dict(notebook=names[1], state="to do", seconds=0.0, attempts=0) and not first["complete"]
    assert "not known yet" in "\n".join(gpu_check.summarise({"study": first})["verdicts"])

    second = gpu_check.study_times(folder, first, None, profile="smoke", notebooks=names)
    done, failed = second["notebooks"]
    assert second["id"] == first["id"] and (done["state"], done["attempts"]) == ("done", 2)
    assert done["seconds"] > stopped["seconds"] and (folder / "figures" / "smoke").is_dir()
    assert failed["state"] == "failed" and failed["returncode"] != 0 and "unknown notebooks" in failed["tail"]
    cells = done["slowest_cells"]  # from the executed copy's per-cell durations
    assert 1 <= len(cells) <= 3 and [c["seconds"] for c in cells] == sorted((c["seconds"] for c in cells), reverse=True)
    assert 0 < sum(c["seconds"] for c in cells) < done["seconds"] and all(c["source"] for c in cells)
    assert second["seconds"] == round(done["seconds"] + failed["seconds"], 1) and not second["complete"]
    verdicts = "\n".join(gpu_check.summarise({"study": second})["verdicts"])
    assert f"whole study (smoke profile): 1 of 2 notebooks done in {second['seconds']:.0f} s; failed: {names[1]}" \
        in verdicts
    printed = f" -> {cells[0]['printed']}" if cells[0]["printed"] else ""
    assert (f"  00_data: {done['seconds']:.0f} s, the slowest cell {cells[0]['cell']} {cells[0]['seconds']:.0f} s "
            f"({cells[0]['source']}{printed})") in verdicts

    third = gpu_check.study_times(folder, second, None, profile="smoke", notebooks=names[:1])
    assert third["notebooks"] == [done] and third["complete"]  # nothing run again
    summary = gpu_check.summarise({"study": third, "seconds": {"study": 1.0, "bounds": 30.0}})
    assert (f"whole study (smoke profile): 1 of 1 notebooks done in {done['seconds']:.0f} s, target "
            f"{gpu_check.STUDY_TARGET_SECONDS} s: met") in summary["verdicts"]
    assert summary["settings"]["study_seconds"] == {"00_data": done["seconds"]}
    assert summary["settings"]["estimated_seconds"] == {"bounds": 30}  # the study runs to the budget's end


def test_gpu_check_notebooks_part_times_each_notebook_and_says_where_its_time_went():
    """The notebooks part, on the CPU with the smoke profile: a notebook's wall seconds end to end
    (a fresh store), its slowest cells from the executed copy, and the summary's line for it."""
    (row,) = gpu_check.notebook_times(("00_data",), profile="smoke")
    assert row["notebook"] == "00_data" and row["returncode"] == 0, row["tail"]
    cells = row["slowest_cells"]
    assert cells and 0 < sum(c["seconds"] for c in cells) < row["seconds"]
    verdicts = gpu_check.summarise({"notebooks": [row]})["verdicts"]
    assert verdicts[0].startswith(f"notebooks 00_data: {row['seconds']:.0f} s, target ")
    assert verdicts[1].startswith(f"  00_data: {row['seconds']:.0f} s, the slowest cell {cells[0]['cell']} ")


def test_gpu_check_names_a_cell_by_the_line_that_does_its_work(tmp_path):
    """A chapter's cell opens with imports; the line that names it is the call whose result it keeps."""
    cell = "import pandas as pd\nfrom mexlib import plots\n\nplots.use_style()\nresult = chapter.run(profile, seeds=seeds)\n"
    assert gpu_check._headline(cell) == "result = chapter.run(profile, seeds=seeds)"
    assert gpu_check._headline("import torch\n# a note\nplots.use_style()\n") == "plots.use_style()"
    assert gpu_check._headline("import torch\n") == "import torch" and gpu_check._headline("") == ""
    notebook = tmp_path / "executed.ipynb"
    code = dict(cell_type="code", source=[cell], outputs=[
        dict(output_type="stream", name="stderr", text=["a warning\n"]),
        dict(output_type="stream", name="stdout", text=["\n", "27 runs ready\n", "more\n"])])
    notebook.write_text(json.dumps(dict(cells=[
        dict(code, metadata=dict(papermill=dict(duration=1.04))), dict(cell_type="markdown", source=["# t"]),
        dict(code, metadata=dict(papermill=dict(duration=30.26))), dict(code, metadata={})])))
    assert gpu_check.slowest_cells(notebook, top=5) == [
        dict(cell=2, seconds=30.3, source="result = chapter.run(profile, seeds=seeds)", printed="27 runs ready"),
        dict(cell=0, seconds=1.0, source="result = chapter.run(profile, seeds=seeds)", printed="27 runs ready")]
    notebook.write_text('{"cells": [')  # cut short
    assert gpu_check.slowest_cells(notebook) == []


def test_gpu_check_study_starts_over_on_a_store_it_did_not_measure(tmp_path):
    """Rows of another measurement (another id, another profile, none) never go on in a folder:
    its runs are cleared (they would make the notebooks look fast) and a new id begins; a folder
    that is not a study's is refused, untouched."""
    folder = tmp_path / "study"
    study_id, rows = gpu_check.study_start(folder, None, "cpu")
    (folder / "runs").mkdir()
    (folder / "runs" / "a-run").write_text("stored")
    earlier = dict(id=study_id, profile="cpu", notebooks=[dict(notebook="00_data", state="done", seconds=9.0,
                                                               attempts=1)])
    assert rows == [] and gpu_check.study_start(folder, earlier, "cpu") == (study_id, earlier["notebooks"])
    assert (folder / "runs" / "a-run").is_file()
    for other in (dict(earlier, id="elsewhere"), dict(earlier, profile="smoke"), None):
        new_id, rows = gpu_check.study_start(folder, other, "cpu")
        assert new_id != study_id and rows == [] and not (folder / "runs").exists()
        study_id = new_id
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a study folder"):
        gpu_check.study_start(mine, None, "cpu")
    assert (mine / "notes.txt").read_text() == "keep"
