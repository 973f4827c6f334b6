"""What the language chapter's training costs, and how much data fits its time budget.

Run as ``python benchmarks/language_cost.py`` on an otherwise idle machine. For the text encoder
of the profile (the cpu profile's MiniLM, 6 layers of width 384, on WordNet's glosses cut at the
data set's ``max_tokens``), it times, interleaved over ``--rounds`` rounds and over the batch
sizes of ``--batches`` (32 64 32 64 ...), each from a fresh model:

- ``encoder``: ``--steps`` training steps that train the encoder (phase 1, the joint phase and
  mixed's phase 2 cost the same: the heads are linear layers on [CLS]), as
  ``mexlib.train.train_phase`` runs them: loss, backward, optimiser step;
- ``heads``: the same for the heads phase (the disjoint regime's phase 2: the encoder frozen, run
  forward only);
- ``eval``: one pass over 1,000 validation texts, as each epoch ends and as a run's test logits
  are taken.

Every step runs on ``--threads`` torch threads (default 1: one of the local executor's two jobs
on a 2-core machine). From the medians it estimates the chapter's training at the profile's
epoch caps (3 regimes × the profile's seeds; disjoint and mixed share phase 1) as ``--workers``
parallel jobs, and the largest training subset that keeps it within ``--budget`` minutes (the
language issue's 90), for each batch size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch

from mexlib.arguments import non_negative_int, positive_float, positive_int
from mexlib.config import make_config, profile_settings
from mexlib.data import dataset_spec
from mexlib.device_data import DataCache
from mexlib.methods import get_method
from mexlib.train import _validate, autocast_for, build_model, make_optimizer, step_rule

EVAL_TEXTS = 1000


def time_steps(config, data, phase: str, batch: int, steps: int, warmup: int) -> float:
    """Seconds per training step of ``phase`` ("joint": the encoder trains; "heads": frozen)."""
    model = build_model(config)
    model.set_freeze_mode({"joint": "all", "heads": "heads"}[phase])
    model.train()
    settings = replace(config.phase(phase), batch_size=batch)
    loader = data.train_loader(phase, batch)
    optimizer = make_optimizer(model.trainable_parameters(), settings)
    rule = step_rule(model, phase, get_method(config.method), len(loader), settings.epochs)
    autocast = autocast_for(torch.device("cpu"), config.precision)
    batches = iter(loader)
    started = None
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        x, y = next(batches)
        loss, _ = rule.loss(model, x, y, autocast, settings.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def time_evaluation(config, data) -> float:
    """Seconds per text of a validation pass (all exits, no gradients)."""
    model = build_model(config)
    autocast = autocast_for(torch.device("cpu"), config.precision)
    started = time.perf_counter()
    _validate(model, "joint", data.eval_loader("val"), get_method(config.method), autocast)
    return (time.perf_counter() - started) / len(data.val_labels)


def estimate_minutes(config, seeds: int, workers: int, train_size: int, batch: int, encoder: float, heads: float,
                     per_text: float) -> float:
    """The chapter's training at the epoch caps: per seed phase 1, disjoint's heads phase, the
    joint run and mixed's phase 2, each epoch with a validation pass, each run's test logits."""
    steps = train_size // batch
    val_size = config.val_size or 0
    test_size = 11_766 if config.test_size is None else config.test_size  # WordNet's test split
    val_pass = val_size * per_text
    epochs = {p: config.phase(p).epochs for p in ("backbone", "joint", "heads")}
    per_seed = (epochs["backbone"] * (steps * encoder + val_pass)
                + epochs["heads"] * (steps * heads + val_pass)
                + 2 * epochs["joint"] * (steps * encoder + val_pass)
                + 3 * test_size * per_text)
    return seeds * per_seed / workers / 60


def measure(profile: str = "cpu", batches=(32, 64), steps: int = 20, warmup: int = 3, rounds: int = 2,
            threads: int = 1, workers: int = 2, budget: float = 90.0) -> dict:
    if min(steps, rounds, threads, workers, *batches) < 1 or warmup < 0:
        raise ValueError("need steps, rounds, threads, workers and batch sizes >= 1 and warmup >= 0")
    torch.set_num_threads(threads)
    load_before = round(os.getloadavg()[0], 2)
    base = make_config(profile, dataset="wordnet-supersenses", regime="joint")
    probe = replace(base, train_size=max(batches) * (steps + warmup + 1), val_size=EVAL_TEXTS, test_size=EVAL_TEXTS)
    data = DataCache(torch.device("cpu")).get(probe)
    times = {(b, p): [] for b in batches for p in ("encoder", "heads")}
    evaluation = []
    for _ in range(rounds):
        for batch in batches:
            times[(batch, "encoder")].append(time_steps(probe, data, "joint", batch, steps, warmup))
            times[(batch, "heads")].append(time_steps(probe, data, "heads", batch, steps, warmup))
        evaluation.append(time_evaluation(probe, data))
    step = {key: statistics.median(v) for key, v in times.items()}
    per_text = statistics.median(evaluation)
    seeds = len(profile_settings(profile).seeds)
    rows = {}
    for batch in batches:
        encoder, heads = step[(batch, "encoder")], step[(batch, "heads")]
        minutes = estimate_minutes(base, seeds, workers, base.train_size, batch, encoder, heads, per_text)
        # the largest training subset within the budget (the evaluation's share does not grow with it)
        fixed = estimate_minutes(base, seeds, workers, 0, batch, encoder, heads, per_text)
        per_text_trained = (minutes - fixed) / base.train_size
        fits = int((budget - fixed) / per_text_trained) if budget > fixed else 0
        rows[batch] = dict(encoder_ms=1000 * encoder, heads_ms=1000 * heads, texts_per_s=batch / encoder,
                           minutes=minutes, fits=fits)
    return dict(profile=profile, arch=base.arch, max_tokens=dataset_spec(base.dataset).max_tokens, threads=threads, workers=workers,
                seeds=seeds, train_size=base.train_size, val_size=base.val_size, epochs=base.joint_phase.epochs,
                load_before=load_before, per_text_ms=1000 * per_text, rows=rows, budget=budget, steps=steps,
                rounds=rounds)


def report(result: dict) -> str:
    lines = [f"{result['profile']} profile, {result['arch']} on wordnet-supersenses ({result['max_tokens']} tokens), "
             f"{result['threads']} thread(s) per "
             f"job, {result['steps']} steps x {result['rounds']} rounds per batch size and phase (load before "
             f"{result['load_before']})",
             f"evaluation: {result['per_text_ms']:.2f} ms per text",
             f"{'batch':>5} {'encoder ms/step':>16} {'texts/s':>8} {'heads ms/step':>14} {'x encoder':>9} "
             f"{'chapter minutes':>16} {'train texts within budget':>26}"]
    for batch, row in result["rows"].items():
        lines.append(f"{batch:5d} {row['encoder_ms']:16.0f} {row['texts_per_s']:8.1f} {row['heads_ms']:14.0f} "
                     f"{row['heads_ms'] / row['encoder_ms']:9.2f} {row['minutes']:16.0f} {row['fits']:26d}")
    lines.append(f"chapter: 3 regimes x {result['seeds']} seeds, {result['epochs']} epochs per phase at most, "
                 f"{result['train_size']} training and {result['val_size']} validation texts, as {result['workers']} "
                 f"parallel jobs; budget {result['budget']:.0f} min")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu"])
    parser.add_argument("--batches", type=positive_int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=positive_int, default=20)
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.add_argument("--budget", type=positive_float, default=90.0, help="minutes")
    args = parser.parse_args(argv)
    try:
        result = measure(args.profile, tuple(args.batches), args.steps, args.warmup, args.rounds, args.threads,
                         args.workers, args.budget)
    except ValueError as error:
        parser.error(str(error))
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
