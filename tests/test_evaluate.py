"""Tests of mexlib.evaluate against small hand-made cases whose answers are worked out here.

The main fixture: 3 exits, 4 samples, 3 classes, logits = log(probabilities) so that the
softmax gives back the probabilities written below.

    sample  label  exit 0 (probs, pred)      exit 1                    exit 2 (final)
    s0      0      .9 .05 .05  → 0 right     .2 .6 .2   → 1 wrong      .2 .7 .1 → 1 wrong
    s1      1      .4 .3  .3   → 0 wrong     .2 .6 .2   → 1 right      .1 .8 .1 → 1 right
    s2      2      .2 .7  .1   → 1 wrong     .1 .1 .8   → 2 right      .1 .2 .7 → 2 right
    s3      2      .5 .25 .25  → 0 wrong     .3 .4 .3   → 1 wrong      .4 .3 .3 → 0 wrong

Relative costs of the exits: 0.2, 0.6, 1.2.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mexlib import evaluate as ev

PROBABILITIES = [
    [[.9, .05, .05], [.4, .3, .3], [.2, .7, .1], [.5, .25, .25]],  # exit 0
    [[.2, .6, .2], [.2, .6, .2], [.1, .1, .8], [.3, .4, .3]],  # exit 1
    [[.2, .7, .1], [.1, .8, .1], [.1, .2, .7], [.4, .3, .3]],  # exit 2 (final)
]
LABELS = torch.tensor([0, 1, 2, 2])
COSTS = torch.tensor([0.2, 0.6, 1.2])


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.tensor(PROBABILITIES).log()


def one_hot_logits(predictions: list[list[int]], num_classes: int = 3) -> torch.Tensor:
    """Logits ``[K, N, C]`` whose argmax at exit k, sample n is ``predictions[k][n]``."""
    return nn.functional.one_hot(torch.tensor(predictions), num_classes).float() * 5.0


# --- confidence ------------------------------------------------------------------------------

def test_confidence_exit_indices(logits):
    decision = ev.confidence_policy(logits, [0.0, 0.55, 0.75, 1.0])
    expected = torch.tensor([
        [0, 0, 0, 0],  # τ = 0: every top probability is above 0, all take the first exit
        [0, 1, 0, 2],  # τ = .55: s0 .9 at exit 0; s1 .4 then .6; s2 .7; s3 .5, .4 → final
        [0, 2, 1, 2],  # τ = .75: s1 .4, .6 → final; s2 .7 then .8 → exit 1
        [2, 2, 2, 2],  # τ = 1: no probability is above 1
    ])
    assert torch.equal(decision.exit_index, expected)
    assert decision.exit_index.dtype == torch.long


def test_confidence_is_strictly_above_threshold():
    # two classes with equal logits: the top probability is exactly 0.5
    logits = torch.zeros(2, 1, 2)
    decision = ev.confidence_policy(logits, [0.49, 0.5])
    assert decision.exit_index.tolist() == [[0], [1]]


def test_confidence_at_one_keeps_saturated_samples():
    # float32 saturates this softmax to exactly 1.0, still not above τ = 1
    logits = torch.tensor([[[200.0, 0.0]], [[0.0, 1.0]]])
    assert ev.confidence_policy(logits, [1.0]).exit_index.tolist() == [[1]]


def test_default_thresholds_are_100_evenly_spaced(logits):
    decision = ev.confidence_policy(logits)
    assert len(decision.thresholds) == 100
    assert decision.thresholds[0] == 0.0 and decision.thresholds[-1] == 1.0
    spacing = torch.full((99,), 1 / 99, dtype=torch.float64)
    assert torch.allclose(decision.thresholds.diff(), spacing)


def test_predictions_follow_exit_taken(logits):
    decision = ev.confidence_policy(logits, [0.55])
    # exits [0, 1, 0, 2] → s0 exit 0 pred 0, s1 exit 1 pred 1, s2 exit 0 pred 1, s3 final pred 0
    assert decision.predictions(logits).tolist() == [[0, 1, 1, 0]]


# --- entropy ---------------------------------------------------------------------------------

def normalised_entropy(probabilities: list[float]) -> float:
    return -sum(p * math.log(p) for p in probabilities) / math.log(len(probabilities))


def test_entropy_exit_indices(logits):
    # normalised entropies worked out by hand (nats / ln 3):
    #   exit 0: s0 .359, s1 .991, s2 .730, s3 .946      exit 1: s0 .865, s1 .865, s2 .582, s3 .991
    by_hand = [[.359, .991, .730, .946], [.865, .865, .582, .991]]
    for exit_probs, hand in zip(PROBABILITIES, by_hand):
        assert [normalised_entropy(p) for p in exit_probs] == pytest.approx(hand, abs=1e-3)
    decision = ev.entropy_policy(logits, [0.0, 0.5, 0.65, 0.8, 0.9, 0.95, 1.0])
    assert decision.exit_index.tolist() == [
        [2, 2, 2, 2],  # τ = 0: no entropy is below 0
        [0, 2, 2, 2],  # τ = .5: only s0 at exit 0
        [0, 2, 1, 2],  # τ = .65: s2 leaves at exit 1 (.582)
        [0, 2, 0, 2],  # τ = .8: s2 leaves at exit 0 (.730)
        [0, 1, 0, 2],  # τ = .9: s1 leaves at exit 1 (.865)
        [0, 1, 0, 0],  # τ = .95: s3 leaves at exit 0 (.946)
        [0, 0, 0, 0],  # τ = 1: no distribution here is uniform
    ]


def test_entropy_uniform_prediction_never_exits_early():
    logits = torch.zeros(2, 1, 4)  # uniform: normalised entropy exactly 1
    assert ev.entropy_policy(logits, [1.0]).exit_index.tolist() == [[1]]


# --- patience --------------------------------------------------------------------------------

def test_patience_exit_indices():
    # predictions per exit (rows) and sample (columns); PBEE counters worked out per sample:
    #   s0 2 2 2 2 → counter 0 1 2 3      s1 0 1 1 0 → 0 0 1 0
    #   s2 0 1 0 1 → 0 0 0 0              s3 1 1 0 0 → 0 1 0 1
    logits = one_hot_logits([[2, 0, 0, 1], [2, 1, 1, 1], [2, 1, 0, 0], [2, 0, 1, 0]])
    decision = ev.patience_policy(logits)
    assert decision.thresholds.tolist() == [0, 1, 2, 3]  # default 0 .. K-1
    assert decision.exit_index.tolist() == [
        [0, 0, 0, 0],  # p = 0: everyone at the first exit
        [1, 2, 3, 1],  # p = 1: first exit agreeing with the previous one
        [2, 3, 3, 3],  # p = 2: only s0 has three agreeing exits in a row among the ICs
        [3, 3, 3, 3],  # p = 3 = K-1: never before the final exit
    ]


# --- curves ----------------------------------------------------------------------------------

def test_tradeoff_curve_costs_and_accuracies(logits):
    curve = ev.tradeoff_curve(logits, LABELS, COSTS, "confidence", [0.0, 0.55, 0.75, 1.0])
    # τ = 0:   exits [0,0,0,0]; right: s0 only                        cost .2
    # τ = .55: exits [0,1,0,2]; right: s0 (0), s1 (1); cost (.2+.6+.2+1.2)/4 = .55
    # τ = .75: exits [0,2,1,2]; right: s0, s1 (final), s2 (1); cost (.2+1.2+.6+1.2)/4 = .8
    # τ = 1:   exits [2,2,2,2]; right: s1, s2                        cost 1.2
    assert curve["threshold"].tolist() == [0.0, 0.55, 0.75, 1.0]
    assert np.allclose(curve["cost"], [0.2, 0.55, 0.8, 1.2])
    assert np.allclose(curve["accuracy"], [0.25, 0.5, 0.75, 0.5])
    assert np.allclose(curve[["frac_exit_0", "frac_exit_1", "frac_exit_2"]].to_numpy(),
                       [[1, 0, 0], [.5, .25, .25], [.25, .25, .5], [0, 0, 1]])
    assert curve.attrs["policy"] == "confidence"


def test_curve_keeps_threshold_order(logits):
    curve = ev.tradeoff_curve(logits, LABELS, COSTS, thresholds=[1.0, 0.0])
    assert np.allclose(curve["cost"], [1.2, 0.2])


def test_per_exit_accuracy_and_points(logits):
    # right: exit 0 s0; exit 1 s1, s2; exit 2 s1, s2
    assert ev.per_exit_accuracy(logits, LABELS).tolist() == [0.25, 0.5, 0.5]
    points = ev.exit_points(logits, LABELS, COSTS)
    assert points["exit"].tolist() == [0, 1, 2]
    assert np.allclose(points["cost"], [0.2, 0.6, 1.2])


# --- budgets ---------------------------------------------------------------------------------

def hand_curve(points: list[tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(points, columns=["cost", "accuracy"])


FIXTURE_CURVE = [(0.2, 0.25), (0.55, 0.5), (0.8, 0.75), (1.2, 0.5)]  # the curve tested above


def test_accuracy_at_budgets_takes_best_point_within():
    at = ev.accuracy_at_budgets(hand_curve(FIXTURE_CURVE), [0.1, 0.25, 0.5, 0.75, 0.8, 1.0])
    # .1: nothing costs that little; .25, .5: only (.2, .25); .75: (.55, .5); .8 and 1: (.8, .75)
    assert np.isnan(at[0.1])
    assert at[[0.25, 0.5, 0.75, 0.8, 1.0]].tolist() == [0.25, 0.25, 0.5, 0.75, 0.75]


def test_budget_table_mean_std_and_formatting():
    seed_a = hand_curve([(0.2, 0.25), (0.8, 0.75)])
    seed_b = hand_curve([(0.2, 0.35), (0.8, 0.65)])
    only_expensive = hand_curve([(0.9, 0.6)])
    table = ev.budget_table({"joint": [seed_a, seed_b], "mixed": only_expensive}, [0.25, 1.0])
    # joint at .25: .25 and .35 → mean .30, sample std sqrt(2 · .05² / 1) = .0707
    assert table.loc["joint", (0.25, "mean")] == pytest.approx(0.30)
    assert table.loc["joint", (0.25, "std")] == pytest.approx(0.05 * math.sqrt(2))
    assert table.loc["joint", (1.0, "mean")] == pytest.approx(0.70)
    assert np.isnan(table.loc["mixed", (0.25, "mean")])
    text = ev.format_budget_table(table)
    assert text.columns.tolist() == ["25 %", "100 %"]
    assert text.loc["joint"].tolist() == ["30.0 ± 7.1", "70.0 ± 7.1"]
    assert text.loc["mixed"].tolist() == ["—", "60.0"]  # one seed: no std


def test_budget_table_blanks_budget_when_one_seed_misses_it():
    fits = hand_curve([(0.2, 0.5)])
    misses = hand_curve([(0.3, 0.7)])
    table = ev.budget_table({"g": [fits, misses]}, [0.25, 0.5])
    assert np.isnan(table.loc["g", (0.25, "mean")])
    assert table.loc["g", (0.5, "mean")] == pytest.approx(0.6)


# --- area under the curve --------------------------------------------------------------------

def test_area_under_step_curve():
    # over [.25, 1]: .25 on [.25, .55), .5 on [.55, .8), .75 on [.8, 1]; (1.2, .5) lies outside
    # (.25·.30 + .5·.25 + .75·.20) / .75 = .35 / .75
    auc = ev.area_under_curve(hand_curve(FIXTURE_CURVE), (0.25, 1.0))
    assert auc == pytest.approx(0.35 / 0.75)


def test_area_counts_zero_before_first_point():
    # over [0, 1]: 0 on [0, .2), then as above from .2: .25·.35 + .5·.25 + .75·.2 = .3625
    assert ev.area_under_curve(hand_curve(FIXTURE_CURVE), (0.0, 1.0)) == pytest.approx(0.3625)


def test_area_uses_upper_envelope():
    # the dominated point (.5, .4) does not lower the curve: .6 on [.3, .7), .8 on [.7, .9]
    curve = hand_curve([(0.7, 0.8), (0.3, 0.6), (0.5, 0.4)])
    assert ev.area_under_curve(curve, (0.3, 0.9)) == pytest.approx((0.6 * 0.4 + 0.8 * 0.2) / 0.6)


def test_area_rejects_empty_range():
    with pytest.raises(ValueError, match="low < high"):
        ev.area_under_curve(hand_curve(FIXTURE_CURVE), (1.0, 0.5))


# --- oracle, overthinking, exit distribution -------------------------------------------------

def test_oracle_accuracy(logits):
    # s0 right at exit 0, s1 and s2 at exits 1 and 2, s3 nowhere
    assert ev.oracle_accuracy(logits, LABELS) == pytest.approx(0.75)


def test_overthinking(logits):
    # final wrong on s0 and s3; an IC is right on s0 only
    result = ev.overthinking(logits, LABELS)
    assert result.fraction == pytest.approx(0.25)
    assert result.share_of_final_errors == pytest.approx(0.5)


def test_overthinking_without_final_errors(logits):
    labels = logits[-1].argmax(dim=-1)  # the final exit is always right
    result = ev.overthinking(logits, labels)
    assert result.fraction == 0.0 and math.isnan(result.share_of_final_errors)


def test_exit_distribution():
    assert ev.exit_distribution(torch.tensor([0, 2, 2, 1]), 4).tolist() == [.25, .25, .5, 0]
    per_threshold = ev.exit_distribution(torch.tensor([[0, 0], [1, 2]]), 3)
    assert per_threshold.tolist() == [[1, 0, 0], [0, .5, .5]]


# --- vectorisation against a per-sample reference --------------------------------------------

def reference_exit(scores: list[float], passes) -> int:
    """The first IC whose score passes, else the final exit: written one sample at a time."""
    for k, score in enumerate(scores[:-1]):
        if passes(score):
            return k
    return len(scores) - 1


def test_vectorised_policies_match_per_sample_reference():
    generator = torch.Generator().manual_seed(0)
    num_exits, num_samples, num_classes = 5, 40, 4
    logits = torch.randn(num_exits, num_samples, num_classes, generator=generator) * 2
    logits[:, :8] = torch.randint(0, 2, (num_exits, 8, 1), generator=generator) * 3.0  # ties
    thresholds = torch.rand(12, generator=generator).tolist() + [0.0, 1.0]
    confidence = ev.confidence_policy(logits, thresholds).exit_index
    entropy = ev.entropy_policy(logits, thresholds).exit_index
    patience = ev.patience_policy(logits).exit_index
    for n in range(num_samples):
        probs = [torch.softmax(logits[k, n], dim=0).tolist() for k in range(num_exits)]
        top = [max(p) for p in probs]
        h = [-sum(q * math.log(q) for q in p if q > 0) / math.log(num_classes) for p in probs]
        predictions = [p.index(max(p)) for p in probs]
        for t, tau in enumerate(thresholds):
            assert confidence[t, n] == reference_exit(top, lambda s: s > tau)
            assert entropy[t, n] == reference_exit(h, lambda s: s < tau)
        for p in range(num_exits):
            counter, exit_at = 0, num_exits - 1
            for k in range(num_exits - 1):
                counter = counter + 1 if k and predictions[k] == predictions[k - 1] else 0
                if counter >= p:
                    exit_at = k
                    break
            assert patience[p, n] == exit_at


@pytest.mark.parametrize("policy", ["confidence", "entropy", "patience"])
def test_curve_matches_exit_decision(policy):
    # the curve counts threshold crossings instead of building the [T, N] exit table;
    # unsorted, repeated thresholds must give the same numbers in the caller's order
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 30, 3, generator=generator) * 2
    labels = torch.randint(3, (30,), generator=generator)
    costs = torch.tensor([0.3, 0.5, 0.9, 1.1])
    thresholds = [0.9, 0.1, 0.5, 0.5, 0.0, 1.0, 0.7] if policy != "patience" else [3, 0, 1, 1, 2]
    decision = ev.run_policy(policy, logits, thresholds)
    curve = ev.tradeoff_curve(logits, labels, costs, policy, thresholds)
    assert curve["threshold"].tolist() == pytest.approx(thresholds)
    assert np.allclose(curve["cost"], decision.expected_cost(costs).numpy())
    assert np.allclose(curve["accuracy"], decision.accuracy(logits, labels).numpy())
    fractions = curve[[f"frac_exit_{k}" for k in range(4)]].to_numpy()
    assert np.allclose(fractions, decision.exit_fractions().numpy())


def test_single_exit_model_always_takes_it():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # 1 exit, 2 samples
    curve = ev.tradeoff_curve(logits, torch.tensor([0, 0]), torch.tensor([1.0]),
                              thresholds=[0.0, 1.0])
    assert curve["cost"].tolist() == [1.0, 1.0] and curve["accuracy"].tolist() == [0.5, 0.5]
    assert ev.confidence_policy(logits, [0.0]).exit_index.tolist() == [[0, 0]]


# --- FLOPs -----------------------------------------------------------------------------------

class TinyMultiExit(nn.Module):
    """Conv block → Linear → Linear → final classifier; heads after blocks 0 and 1."""

    num_exits = 3

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten()),  # → 144
            nn.Sequential(nn.Linear(144, 32), nn.ReLU()),
            nn.Sequential(nn.Linear(32, 16), nn.ReLU()),
        ])
        self.heads = nn.ModuleList([nn.Linear(144, 10), nn.Linear(32, 10)])
        self.final = nn.Linear(16, 10)
        self.dropout = nn.Dropout(0.5)

    def forward_until(self, x, k):
        outputs = []
        for i in range(k + 1):
            x = self.blocks[i](x)
            outputs.append(self.heads[i](x) if i < len(self.heads) else self.final(x))
        return outputs

    def backbone_only(self, x):
        for block in self.blocks:
            x = block(x)
        return self.final(self.dropout(x))


def test_exit_costs_match_hand_count():
    model = TinyMultiExit().train()
    model.blocks.eval()  # as in phase 3: frozen backbone in eval mode, heads training
    costs = ev.exit_costs(model, (1, 6, 6))
    # 2 FLOPs per multiply-add, biases and ReLUs not counted:
    conv = 2 * 1 * 4 * 3 * 3 * 6 * 6  # Cin·Cout·k·k·Hout·Wout = 2592
    block1, block2 = 2 * 144 * 32, 2 * 32 * 16  # 9216, 1024
    head0, head1, final = 2 * 144 * 10, 2 * 32 * 10, 2 * 16 * 10  # 2880, 640, 320
    expected = [conv + head0, conv + head0 + block1 + head1,
                conv + head0 + block1 + head1 + block2 + final]
    assert costs.flops_per_exit == expected
    assert costs.backbone_flops == conv + block1 + block2 + final
    assert torch.allclose(costs.relative,
                          torch.tensor(expected, dtype=torch.float64) / costs.backbone_flops)
    assert costs.relative[-1] > 1  # the heads make the final exit dearer than the backbone
    assert model.training and model.heads[0].training  # modes restored, each its own
    assert not model.blocks.training and not model.blocks[0][0].training


class TinyAttention(nn.Module):
    """One exit: 4 heads of self-attention over the 16 patches of a 4x4 image, then a linear
    classifier on the mean token."""

    num_exits = 1

    def __init__(self, dim=8, heads=4):
        super().__init__()
        self.heads, self.qkv, self.classifier = heads, nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, 10, bias=False)

    def backbone_only(self, x):
        tokens = x.flatten(2).transpose(1, 2)  # [1, dim, 4, 4] -> [1, 16, dim]
        q, k, v = self.qkv(tokens).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.classifier(attended.mean(2).flatten(1))

    def forward_until(self, x, k):
        return [self.backbone_only(x)]


def test_exit_costs_count_the_attention_on_the_cpu():
    """torch's counter has no formula for the CPU's fused attention kernel; counted through
    the math backend, Q K^T and the weighted sum of V are 2 x 2 N^2 d FLOPs."""
    dim, tokens = 8, 16
    costs = ev.exit_costs(TinyAttention(dim), (dim, 4, 4))
    projections, attention, classifier = 2 * tokens * dim * 3 * dim, 2 * 2 * tokens ** 2 * dim, 2 * dim * 10
    assert costs.backbone_flops == projections + attention + classifier


def test_exit_costs_table_names_units():
    table = ev.exit_costs(TinyMultiExit(), (1, 6, 6)).table()
    assert len(table) == 4  # three exits and the plain backbone
    flop_column = next(c for c in table.columns if "FLOPs" in c and "multiply-add = 2" in c)
    mac_column = next(c for c in table.columns if c.startswith("GMACs"))
    assert np.allclose(table[mac_column] * 2, table[flop_column])
    assert table["relative cost (backbone = 1)"].iloc[-1] == 1.0


# --- bad inputs ------------------------------------------------------------------------------

def test_unknown_policy_names_the_valid_ones(logits):
    with pytest.raises(ValueError, match="confidence, entropy, patience"):
        ev.tradeoff_curve(logits, LABELS, COSTS, policy="max-prob")


@pytest.mark.parametrize("bad", [torch.zeros(4, 3), torch.zeros(3, 4, 3, dtype=torch.long)])
def test_bad_logits_rejected(bad):
    with pytest.raises(ValueError, match="num_exits, num_samples, num_classes"):
        ev.confidence_policy(bad)


def test_bad_labels_and_costs_rejected(logits):
    with pytest.raises(ValueError, match="labels has 3 samples"):
        ev.tradeoff_curve(logits, LABELS[:3], COSTS)
    with pytest.raises(ValueError, match="integer tensor"):
        ev.per_exit_accuracy(logits, LABELS.float())
    with pytest.raises(ValueError, match=r"costs must have shape \[num_exits\] = \[3\]"):
        ev.tradeoff_curve(logits, LABELS, COSTS[:2])


def test_bad_thresholds_and_curves_rejected(logits):
    with pytest.raises(ValueError, match="1-d"):
        ev.confidence_policy(logits, [[0.5]])
    with pytest.raises(ValueError, match="lacks the column"):
        ev.accuracy_at_budgets(pd.DataFrame({"cost": [0.5]}))
    with pytest.raises(ValueError, match="0 .. 2"):
        ev.exit_distribution(torch.tensor([0, 3]), 3)


# --- thresholds fixed on validation ----------------------------------------------------------

def test_choose_on_validation_picks_on_validation_and_reports_test():
    thresholds = [0.2, 0.5, 0.8]
    # Validation: the cheapest point is the most accurate within a 0.5 budget; test disagrees.
    val = pd.DataFrame({"threshold": thresholds, "cost": [0.3, 0.45, 0.9], "accuracy": [0.8, 0.7, 0.95]})
    test = pd.DataFrame({"threshold": thresholds, "cost": [0.31, 0.52, 0.88], "accuracy": [0.6, 0.9, 0.93]})
    picks = ev.choose_on_validation(val, test, budgets=(0.25, 0.5, 1.0))
    assert np.isnan(picks.loc[0.25, "accuracy"])  # no validation point costs <= 0.25
    assert picks.loc[0.5, "threshold"] == 0.2  # validation 0.8 beats 0.7, although test prefers 0.5
    assert picks.loc[0.5, "accuracy"] == 0.6 and picks.loc[0.5, "cost"] == 0.31
    assert picks.loc[1.0, "threshold"] == 0.8 and picks.loc[1.0, "accuracy"] == 0.93
    with pytest.raises(ValueError, match="share their thresholds"):
        ev.choose_on_validation(val, test.assign(threshold=[0.1, 0.5, 0.8]))


def test_expected_time_weights_each_exits_time_by_its_share_of_the_samples():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 200, 10, generator=generator)
    labels = torch.randint(0, 10, (200,), generator=generator)
    curve = ev.tradeoff_curve(logits, labels, torch.tensor([0.3, 0.6, 1.0]), "confidence", [0.0, 0.5, 1.01])
    times = [1.0, 2.5, 4.0]
    decision = ev.confidence_policy(logits, torch.tensor([0.0, 0.5, 1.01]))
    exits = decision.exit_index  # [thresholds, samples]
    by_hand = [float(torch.tensor(times)[exits[t]].mean()) for t in range(3)]
    np.testing.assert_allclose(ev.expected_time(curve, times).to_numpy(), by_hand)
    assert ev.expected_time(curve, times).iloc[-1] == pytest.approx(4.0)  # nobody leaves early: the final exit's time
    with pytest.raises(ValueError, match="2 exit times given for a curve of 3 exits"):
        ev.expected_time(curve, times[:2])


def test_exit_latency_times_every_exit_as_deployed():
    from mexlib.config import make_config
    from mexlib.train import build_model
    model = build_model(make_config("smoke")).train()
    frame = ev.exit_latency(model, (1, 28, 28), batches=(1, 3), threads=(1,), warmup=0, repeats=2)
    assert len(frame) == 2 * model.num_exits and (frame["ms"] > 0).all()
    np.testing.assert_allclose(frame["ms_per_image"], frame["ms"] / frame["batch"])
    costs = ev.exit_costs(model, (1, 28, 28)).flops_per_exit
    assert frame[frame["batch"] == 1]["flops_per_image"].tolist() == costs
    final = frame[frame["exit"] == model.num_exits - 1]
    assert (final["time_relative"] == 1).all() and (final["flops_relative"] == 1).all()
    assert model.training, "the model's mode is restored"
    with pytest.raises(ValueError, match="positive"):
        ev.exit_latency(model, (1, 28, 28), batches=(0,))
