"""Offline evaluation of multi-exit models on stored per-exit logits (STUDY.md §3).

Every exit runs once on the whole test set and its logits are kept; the exit policies are then
simulated here, for a whole sweep of thresholds at once, without running the model again.

Conventions shared across the package
-------------------------------------
* ``logits``: float tensor ``[num_exits, num_samples, num_classes]``, exits in depth order; the
  last one is the backbone's own final classifier.
* ``labels``: int64 tensor ``[num_samples]``.
* ``costs``: float tensor ``[num_exits]``, the cost of exiting at exit ``k`` *relative to the
  plain backbone* (1.0 = the backbone without heads). The final exit costs more than 1 because
  every head before it has been evaluated too (see :func:`exit_costs`).
* Accuracies are fractions in [0, 1]; only :func:`format_budget_table` shows percent.

Exit rules (a sample that no internal classifier takes goes to the final exit)
------------------------------------------------------------------------------
* ``"confidence"`` (SDN): exit at the first IC whose max-softmax probability is *strictly above*
  the threshold τ. STUDY.md says "above"; the strict comparison also makes both ends of the
  default sweep exact: at τ = 0 every sample leaves at the first exit (a max probability is at
  least 1/num_classes > 0), at τ = 1 none leaves early, even when float32 saturates a softmax
  to exactly 1.0.
* ``"entropy"``: exit at the first IC whose normalised entropy (entropy / log(num_classes), in
  [0, 1]) is *strictly below* τ; at τ = 0 no sample leaves early, at τ = 1 every sample does
  except those whose prediction is exactly uniform.
* ``"patience"`` (PBEE): a counter starts at 0 at exit 0 and, at each later exit, increments
  when that exit predicts the same class as the one before it and resets to 0 otherwise. A
  sample exits at the first IC whose counter is >= the patience p, i.e. once p + 1 consecutive
  exits ending there agree. p = 0 exits at the first exit; p >= num_exits - 1 never exits early.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from .registry import lookup

__all__ = [
    "BUDGETS", "POLICIES", "ExitCosts", "ExitDecision", "Overthinking",
    "exit_costs", "exit_latency", "expected_time", "confidence_policy", "entropy_policy", "patience_policy", "run_policy",
    "tradeoff_curve", "exit_points", "per_exit_accuracy", "accuracy_at_budgets",
    "choose_on_validation",
    "budget_table", "format_budget_table", "format_mean_std", "area_under_curve", "oracle_accuracy",
    "overthinking", "exit_distribution",
]

#: The budgets of STUDY.md's table, as fractions of the plain backbone's cost.
BUDGETS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

#: Expected costs are means of floats; a point whose cost exceeds a budget by less than this
#: (rounding, not substance) still counts as within it.
COST_TOLERANCE = 1e-9

#: Thresholds of a sweep: any 1-d sequence of numbers; None takes the policy's default.
Thresholds = Tensor | Sequence[float] | None

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
    x = torch.zeros(1, *sample_shape, device=device, dtype=dtype or torch.float32)
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
                x = torch.randn(batch, *sample_shape, device=parameter.device)
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


# --- exit decisions --------------------------------------------------------------------------

@dataclass(frozen=True)
class ExitDecision:
    """Where every sample exits, for every threshold of a sweep.

    ``thresholds[t]`` is the t-th threshold (the patience value for ``"patience"``) and
    ``exit_index[t, n]`` the exit (0 .. num_exits - 1) sample ``n`` takes under it.
    """

    policy: str
    thresholds: Tensor  # [T], float64
    exit_index: Tensor  # [T, N], int64
    num_exits: int

    def predictions(self, logits: Tensor) -> Tensor:
        """Predicted class of every sample under every threshold, ``[T, N]``."""
        _check_logits(logits)
        return _take_at_exit(logits.argmax(dim=-1), self.exit_index)

    def accuracy(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Accuracy under every threshold, ``[T]`` float64 fractions."""
        return _take_at_exit(_correct(logits, labels), self.exit_index).double().mean(dim=1)

    def expected_cost(self, costs: Tensor) -> Tensor:
        """Mean relative cost over samples under every threshold, ``[T]`` float64."""
        costs = _check_costs(costs, self.num_exits).to(self.exit_index.device, torch.float64)
        return costs[self.exit_index].mean(dim=1)

    def exit_fractions(self) -> Tensor:
        """Fraction of samples taking each exit under every threshold, ``[T, num_exits]``."""
        return exit_distribution(self.exit_index, self.num_exits)


def _take_at_exit(per_exit: Tensor, exit_index: Tensor) -> Tensor:
    """``per_exit[exit_index[t, n], n]`` for every t, n: ``[K, N]`` values → ``[T, N]``."""
    return per_exit.gather(0, exit_index)


@dataclass(frozen=True)
class _ExitRule:
    """A policy reduced to one rule: exit at the first IC whose running score passes τ.

    ``running[k, n]`` is a running maximum over ICs 0..k of the policy's score, so at every
    threshold the ICs a sample passes by form a prefix and its exit index is their count; a
    sample passing by all ``K - 1`` ICs takes the final exit. A score passes τ when
    ``score > τ`` (``strict``) or ``score >= τ``. ``levels`` are the thresholds on the scores'
    scale (negated for entropy), ``thresholds`` those the caller gave.
    """

    policy: str
    thresholds: Tensor  # [T] float64
    levels: Tensor  # [T] float64
    running: Tensor  # [K - 1, N] float64
    strict: bool
    num_exits: int

    def decide(self) -> ExitDecision:
        """Every sample's exit under every threshold, built one IC at a time as ``[T, N]``."""
        column = self.levels.unsqueeze(1)
        exit_index = torch.zeros(len(self.levels), self.running.shape[1], dtype=torch.long,
                                 device=self.running.device)
        for score in self.running:  # a loop over the few exits, vectorised over τ and samples
            exit_index += (score <= column) if self.strict else (score < column)
        return ExitDecision(self.policy, self.thresholds, exit_index, self.num_exits)

    def crossings(self, sorted_levels: Tensor) -> Tensor:
        """``[K - 1, N]``: the first position in ``sorted_levels`` at which each sample passes
        by each IC (``len(sorted_levels)`` when it never does)."""
        side = "left" if self.strict else "right"  # passes by at τ >= score, resp. τ > score
        return torch.searchsorted(sorted_levels.contiguous(), self.running.contiguous(),
                                  side=side)


def _rule(policy: str, ic_scores: Tensor, thresholds: Tensor, levels: Tensor, *,
          strict: bool) -> _ExitRule:
    scores = ic_scores.double()
    running = scores.cummax(dim=0).values if len(scores) else scores
    return _ExitRule(policy, thresholds, levels, running, strict, len(ic_scores) + 1)


def _confidence_rule(logits: Tensor, thresholds: Thresholds) -> _ExitRule:
    _check_logits(logits)
    thresholds = _thresholds(thresholds, logits.device)
    logits = logits.float()
    top_probability = torch.exp(logits.amax(dim=-1) - torch.logsumexp(logits, dim=-1))
    return _rule("confidence", top_probability[:-1], thresholds, thresholds, strict=True)


def _entropy_rule(logits: Tensor, thresholds: Thresholds) -> _ExitRule:
    _check_logits(logits)
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise ValueError("the entropy policy needs at least 2 classes to normalise the entropy")
    thresholds = _thresholds(thresholds, logits.device)
    log_probabilities = torch.log_softmax(logits.float(), dim=-1)
    # a -inf logit has probability 0: clamping its log keeps 0·log 0 at 0 instead of NaN
    log_probabilities.clamp_min_(torch.finfo(log_probabilities.dtype).min)
    # vecdot multiplies and sums in one pass, without a [K, N, C] product in memory
    entropy = -torch.linalg.vecdot(log_probabilities.exp(), log_probabilities)
    normalised = (entropy / math.log(num_classes)).clamp(0.0, 1.0)
    # "entropy < τ" is "-entropy > -τ": the same first-passing rule as confidence.
    return _rule("entropy", -normalised[:-1], thresholds, -thresholds, strict=True)


def _patience_rule(logits: Tensor, patiences: Thresholds) -> _ExitRule:
    _check_logits(logits)
    if patiences is None:
        patiences = torch.arange(logits.shape[0])
    patiences = _thresholds(patiences, logits.device)
    agreements = _consecutive_agreements(logits.argmax(dim=-1))
    return _rule("patience", agreements[:-1], patiences, patiences, strict=False)


def _consecutive_agreements(predictions: Tensor) -> Tensor:
    """PBEE's counter ``[K, N]``: how many exits in a row before k predicted what k predicts.

    The counter at k is k minus the exit where the current run of equal predictions started,
    so a cumulative max over run starts computes it without a loop.
    """
    num_exits = predictions.shape[0]
    depth = torch.arange(num_exits, device=predictions.device).unsqueeze(1).expand_as(predictions)
    starts_run = torch.ones_like(predictions, dtype=torch.bool)
    starts_run[1:] = predictions[1:] != predictions[:-1]
    run_start = torch.where(starts_run, depth, torch.zeros_like(depth)).cummax(dim=0).values
    return depth - run_start


_RULES: dict[str, Callable[[Tensor, Thresholds], _ExitRule]] = {
    "confidence": _confidence_rule,
    "entropy": _entropy_rule,
    "patience": _patience_rule,
}

#: The exit policies by name, as :func:`run_policy` and :func:`tradeoff_curve` accept them.
POLICIES: tuple[str, ...] = tuple(_RULES)


def _exit_rule(policy: str, logits: Tensor, thresholds: Thresholds) -> _ExitRule:
    return lookup(_RULES, policy, "exit policy", "policies")(logits, thresholds)


def confidence_policy(logits: Tensor, thresholds: Thresholds = None) -> ExitDecision:
    """Max-softmax exits: leave at the first IC whose top probability is > τ.

    Default thresholds: 100 evenly spaced values in [0, 1].
    """
    return _confidence_rule(logits, thresholds).decide()


def entropy_policy(logits: Tensor, thresholds: Thresholds = None) -> ExitDecision:
    """Entropy exits: leave at the first IC whose normalised entropy is < τ.

    Default thresholds: 100 evenly spaced values in [0, 1]. Needs at least two classes.
    """
    return _entropy_rule(logits, thresholds).decide()


def patience_policy(logits: Tensor, patiences: Thresholds = None) -> ExitDecision:
    """PBEE exits: leave at the first IC where p + 1 consecutive exits agree (see module doc).

    Default patiences: 0 .. num_exits - 1 (the last one never exits early).
    """
    return _patience_rule(logits, patiences).decide()


def run_policy(name: str, logits: Tensor, thresholds: Thresholds = None) -> ExitDecision:
    """Run the exit policy called ``name``; an unknown name raises with the valid ones."""
    return _exit_rule(name, logits, thresholds).decide()


# --- curves ----------------------------------------------------------------------------------

def tradeoff_curve(logits: Tensor, labels: Tensor, costs: Tensor, policy: str = "confidence",
                   thresholds: Thresholds = None) -> pd.DataFrame:
    """Accuracy against expected relative cost for a sweep of thresholds.

    Columns: ``threshold`` (patience for ``"patience"``), ``cost`` (mean relative cost over
    samples), ``accuracy`` (fraction) and ``frac_exit_k`` (fraction of samples taking exit k).
    Rows keep the order of ``thresholds``; ``df.attrs["policy"]`` names the policy. Gives the
    same numbers as the policy's :class:`ExitDecision` without building its ``[T, N]`` table.
    """
    correct = _correct(logits, labels)
    costs = _check_costs(costs, logits.shape[0]).to(logits.device, torch.float64)
    rule = _exit_rule(policy, logits, thresholds)
    taking, right = _sweep_counts(rule, correct)
    num_samples = correct.shape[1]
    curve = pd.DataFrame({
        "threshold": rule.thresholds.cpu().numpy(),
        "cost": (taking.double() @ costs / num_samples).cpu().numpy(),
        "accuracy": (right / num_samples).cpu().numpy(),
    })
    fractions = (taking.double() / num_samples).cpu().numpy()
    for k in range(rule.num_exits):
        curve[f"frac_exit_{k}"] = fractions[:, k]
    curve.attrs["policy"] = policy
    return curve


def _sweep_counts(rule: _ExitRule, correct: Tensor) -> tuple[Tensor, Tensor]:
    """Per threshold: samples taking each exit ``[T, K]`` and samples classified right ``[T]``.

    Sweeping the sorted thresholds, a sample moves from IC k to the next exit at one position
    (its crossing); histograms of the crossings, summed up to each position, give how many
    samples have moved past each IC and how many right answers moving gained or lost. The work
    is O(K·N + K·T), whatever the number of thresholds.
    """
    num_ics, num_samples = rule.running.shape
    sorted_levels, order = torch.sort(rule.levels)
    num_levels = len(sorted_levels)
    crossing = rule.crossings(sorted_levels)  # [K - 1, N] in 0 .. T
    bins = (crossing + (num_levels + 1) * torch.arange(num_ics, device=crossing.device)
            .unsqueeze(1)).flatten()

    def moved_by_level(weights: Tensor | None) -> Tensor:  # [K - 1, T] running totals
        counts = torch.bincount(bins, weights=weights, minlength=num_ics * (num_levels + 1))
        return counts.view(num_ics, num_levels + 1).cumsum(dim=1)[:, :num_levels]

    passed = moved_by_level(None)  # samples past IC k, hence at an exit > k
    at_or_after = torch.cat([torch.full((1, num_levels), num_samples, device=passed.device),
                             passed, torch.zeros(1, num_levels, device=passed.device,
                                                 dtype=passed.dtype)])
    taking_sorted = (at_or_after[:-1] - at_or_after[1:]).T  # [T, K]
    gain = (correct[1:].double() - correct[:-1].double()).flatten()  # moving past IC k
    right_sorted = correct[0].double().sum() + moved_by_level(gain).sum(dim=0)
    # back to the caller's order of thresholds
    taking, right = torch.empty_like(taking_sorted), torch.empty_like(right_sorted)
    taking[order], right[order] = taking_sorted, right_sorted
    return taking, right


def exit_points(logits: Tensor, labels: Tensor, costs: Tensor) -> pd.DataFrame:
    """Each exit's own (cost, accuracy), every sample taking that exit: the curves' dots."""
    costs = _check_costs(costs, logits.shape[0])
    return pd.DataFrame({
        "exit": np.arange(logits.shape[0]),
        "cost": costs.double().cpu().numpy(),
        "accuracy": per_exit_accuracy(logits, labels).cpu().numpy(),
    })


def per_exit_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Accuracy of every exit on all samples, ``[K]`` float64 fractions."""
    return _correct(logits, labels).double().mean(dim=1)


# --- budgets ---------------------------------------------------------------------------------

def accuracy_at_budgets(curve: pd.DataFrame, budgets: Sequence[float] = BUDGETS) -> pd.Series:
    """Best accuracy among the curve's points whose cost does not exceed each budget.

    Returns a Series indexed by budget; NaN where no point fits (tables show "—").
    """
    _check_curve(curve)
    cost = curve["cost"].to_numpy(dtype=np.float64)
    accuracy = curve["accuracy"].to_numpy(dtype=np.float64)
    best = []
    for budget in budgets:
        fits = (cost <= budget + COST_TOLERANCE) & ~np.isnan(accuracy)
        best.append(accuracy[fits].max() if fits.any() else np.nan)
    return pd.Series(best, index=pd.Index(list(budgets), name="budget"), name="accuracy")


def choose_on_validation(val_curve: pd.DataFrame, test_curve: pd.DataFrame,
                         budgets: Sequence[float] = BUDGETS) -> pd.DataFrame:
    """Operating points fixed on validation data, reported on the test set.

    ``accuracy_at_budgets`` picks the best point of the *test* curve, which is the protocol of
    STUDY.md §3 but optimistic: the threshold is tuned on the data it is scored on. Here, for
    each budget, the threshold is the one whose *validation* point is the most accurate among
    those with validation cost within the budget; its test cost (which may then exceed the
    budget slightly) and test accuracy are reported. Both curves must come from the same
    thresholds, in the same order. Rows: budgets; NaN where no validation point fits.
    """
    _check_curve(val_curve)
    _check_curve(test_curve)
    if len(val_curve) != len(test_curve) or not np.array_equal(
            val_curve["threshold"].to_numpy(), test_curve["threshold"].to_numpy()):
        raise ValueError("the validation and test curves must share their thresholds")
    val_cost = val_curve["cost"].to_numpy(dtype=np.float64)
    val_acc = val_curve["accuracy"].to_numpy(dtype=np.float64)
    rows = []
    for budget in budgets:
        fits = np.flatnonzero(val_cost <= budget + COST_TOLERANCE)
        if len(fits) == 0:
            rows.append(dict(budget=budget, threshold=np.nan, val_cost=np.nan, val_accuracy=np.nan,
                             cost=np.nan, accuracy=np.nan))
            continue
        pick = fits[np.argmax(val_acc[fits])]  # the first of equally accurate points
        rows.append(dict(budget=budget, threshold=float(val_curve["threshold"].iloc[pick]),
                         val_cost=val_cost[pick], val_accuracy=val_acc[pick],
                         cost=float(test_curve["cost"].iloc[pick]),
                         accuracy=float(test_curve["accuracy"].iloc[pick])))
    return pd.DataFrame(rows).set_index("budget")


def budget_table(curves_by_group: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]],
                 budgets: Sequence[float] = BUDGETS) -> pd.DataFrame:
    """Accuracy at each budget, mean and std over seeds, one row per group (e.g. regime).

    ``curves_by_group`` maps a group name to its per-seed curves (one curve alone is one seed).
    Columns are a MultiIndex ``(budget, "mean" | "std")``; the std is the sample std (ddof 1),
    NaN with a single seed. If any seed has no point within a budget, that budget's mean is NaN
    rather than a mean over the seeds that happen to fit.
    """
    rows = {}
    for group, curves in curves_by_group.items():
        if isinstance(curves, pd.DataFrame):
            curves = [curves]
        if not curves:
            raise ValueError(f"group {group!r} has no curves")
        per_seed = np.stack([accuracy_at_budgets(c, budgets).to_numpy() for c in curves])
        # a plain mean/std propagates NaN, so one seed without a fitting point blanks the cell
        mean = per_seed.mean(axis=0)
        std = per_seed.std(axis=0, ddof=1) if len(per_seed) > 1 else np.full(len(budgets), np.nan)
        rows[group] = [value for pair in zip(mean, std) for value in pair]
    columns = pd.MultiIndex.from_product([list(budgets), ["mean", "std"]],
                                         names=["budget", "stat"])
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def format_budget_table(table: pd.DataFrame) -> pd.DataFrame:
    """Render :func:`budget_table` as strings "mean ± std" in percent, one decimal.

    "—" where the mean is NaN (no point within the budget); the mean alone when the std is NaN
    (a single seed). Columns are labelled "25 %", "50 %", ...
    """
    budgets = list(dict.fromkeys(table.columns.get_level_values("budget")))
    text = {}
    for budget in budgets:
        cells = zip(table[(budget, "mean")], table[(budget, "std")])
        text[f"{100 * budget:g} %"] = [format_mean_std(mean, std) for mean, std in cells]
    formatted = pd.DataFrame(text, index=table.index)
    formatted.columns.name = "accuracy (%) at budget (share of the backbone's cost)"
    return formatted


def format_mean_std(mean: float, std: float | None = None, percent: bool = True) -> str:
    """The text "mean ± std" for a reader: fractions in percent with one decimal (``percent``), other
    numbers to three significant digits; "—" when the mean is NaN, the mean alone when the
    std is None or NaN (a single seed)."""
    def show(value) -> str:
        if percent:
            return f"{100 * value:.1f}"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    if np.isnan(mean):
        return "—"
    if std is None or np.isnan(std):
        return show(mean)
    return f"{show(mean)} ± {show(std)}"


# --- summary metrics -------------------------------------------------------------------------

def area_under_curve(curve: pd.DataFrame, cost_range: tuple[float, float] = (0.25, 1.0)
                     ) -> float:
    """Normalised area under the accuracy–cost curve over a fixed cost range.

    The curve is read as the best accuracy achievable at cost <= c: a non-decreasing step
    function of c built from the points (their upper envelope, steps at the points' costs, no
    interpolation between points because a policy cannot be mixed for free). Where no point
    costs <= c the accuracy counts as 0. The step function is integrated exactly over
    ``cost_range`` and divided by its width, so the result is a mean accuracy in [0, 1] and
    curves are comparable whatever their thresholds. The default range spans the budgets of
    STUDY.md's table (25 % .. 100 % of the backbone's cost).
    """
    _check_curve(curve)
    low, high = (float(c) for c in cost_range)
    if not low < high:
        raise ValueError(f"cost_range must be (low, high) with low < high, got {cost_range}")
    points = curve[["cost", "accuracy"]].dropna().sort_values("cost", kind="stable")
    cost = points["cost"].to_numpy(dtype=np.float64)
    envelope = np.maximum.accumulate(points["accuracy"].to_numpy(dtype=np.float64))
    edges = np.concatenate([[low], cost[(cost > low) & (cost < high)], [high]])
    # value on [edges[i], edges[i + 1]): the envelope at the last point costing <= edges[i]
    last_within = np.searchsorted(cost, edges[:-1] + COST_TOLERANCE, side="right") - 1
    height = np.where(last_within >= 0, envelope[np.maximum(last_within, 0)], 0.0)
    return float(np.sum(height * np.diff(edges)) / (high - low))


def oracle_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of samples that at least one exit classifies correctly."""
    return float(_correct(logits, labels).any(dim=0).double().mean())


@dataclass(frozen=True)
class Overthinking:
    """SDN's destructive overthinking: an earlier exit is right, the final exit is wrong.

    ``fraction`` is over all samples; ``share_of_final_errors`` over the samples the final exit
    gets wrong (NaN when it gets none wrong).
    """

    fraction: float
    share_of_final_errors: float


def overthinking(logits: Tensor, labels: Tensor) -> Overthinking:
    """Samples some internal classifier gets right and the final exit gets wrong."""
    correct = _correct(logits, labels)
    final_wrong = ~correct[-1]
    overthought = correct[:-1].any(dim=0) & final_wrong
    errors = int(final_wrong.sum())
    share = float(overthought.sum()) / errors if errors else math.nan
    return Overthinking(float(overthought.double().mean()), share)


def exit_distribution(exit_index: Tensor, num_exits: int) -> Tensor:
    """Fraction of samples taking each exit, float64.

    ``exit_index`` ``[N]`` (one threshold) gives ``[num_exits]``; ``[T, N]`` gives
    ``[T, num_exits]``.
    """
    if exit_index.dim() not in (1, 2) or exit_index.is_floating_point():
        raise ValueError(f"exit_index must be an integer tensor [N] or [T, N], got "
                         f"{exit_index.dtype} {tuple(exit_index.shape)}")
    if exit_index.numel() and (exit_index.min() < 0 or exit_index.max() >= num_exits):
        raise ValueError(f"exit_index values must lie in 0 .. {num_exits - 1}")
    rows = exit_index.reshape(-1, exit_index.shape[-1]).long()
    # one bincount for all thresholds: offset each row's exits into its own block of bins
    offsets = torch.arange(len(rows), device=rows.device).unsqueeze(1) * num_exits
    counts = torch.bincount((rows + offsets).flatten(), minlength=len(rows) * num_exits)
    fractions = counts.view(len(rows), num_exits).double() / max(rows.shape[1], 1)
    return fractions.view(*exit_index.shape[:-1], num_exits)


# --- input checks ----------------------------------------------------------------------------

def _correct(logits: Tensor, labels: Tensor) -> Tensor:
    """Whether each exit classifies each sample correctly, ``[K, N]`` bool."""
    _check_labels(labels, logits)
    return logits.argmax(dim=-1) == labels.to(logits.device).unsqueeze(0)


def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 3 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a float tensor [num_exits, num_samples, num_classes], "
                         f"got {shape}")
    if logits.shape[0] < 1 or logits.shape[2] < 1:
        raise ValueError(f"logits need at least one exit and one class, got "
                         f"{tuple(logits.shape)}")


def _check_labels(labels: Tensor, logits: Tensor) -> None:
    _check_logits(logits)
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("labels must be an integer tensor [num_samples]")
    if len(labels) != logits.shape[1]:
        raise ValueError(f"labels has {len(labels)} samples but logits has {logits.shape[1]}")


def _check_costs(costs: Tensor | Sequence[float], num_exits: int) -> Tensor:
    costs = torch.as_tensor(costs)
    if costs.shape != (num_exits,):
        raise ValueError(f"costs must have shape [num_exits] = [{num_exits}], got "
                         f"{tuple(costs.shape)}")
    return costs


def _thresholds(values: Thresholds, device: torch.device) -> Tensor:
    if values is None:
        values = torch.linspace(0.0, 1.0, 100, dtype=torch.float64)
    values = torch.as_tensor(values, dtype=torch.float64, device=device)
    if values.dim() != 1 or not torch.isfinite(values).all():
        raise ValueError(f"thresholds must be a 1-d sequence of finite numbers, got shape "
                         f"{tuple(values.shape)}")
    return values


def _check_curve(curve: pd.DataFrame) -> None:
    missing = {"cost", "accuracy"} - set(curve.columns)
    if missing:
        raise ValueError(f"curve lacks the column(s) {sorted(missing)}; expected the columns of "
                         f"tradeoff_curve (threshold, cost, accuracy, ...)")
