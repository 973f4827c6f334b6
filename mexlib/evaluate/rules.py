"""Exit policies simulated offline on stored logits, for a whole sweep of thresholds at once, and
the accuracy-cost curves they trace (the rules themselves: :mod:`mexlib.evaluate`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..registry import lookup
from .common import Thresholds, _check_costs, _check_logits, _correct, _thresholds

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
