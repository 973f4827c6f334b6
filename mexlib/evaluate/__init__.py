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

from .common import BUDGETS
from .costs import FLOP_UNIT, MAC_UNIT, ExitCosts, exit_costs, exit_latency, expected_time
from .rules import (POLICIES, ExitDecision, confidence_policy, entropy_policy, exit_distribution, exit_points,
                    patience_policy, per_exit_accuracy, run_policy, tradeoff_curve)
from .tables import (Overthinking, accuracy_at_budgets, area_under_curve, best_points, budget_table, choose_on_validation,
                     format_budget_table, format_mean_std, oracle_accuracy, overthinking)

__all__ = [
    "BUDGETS", "FLOP_UNIT", "MAC_UNIT", "POLICIES", "ExitCosts", "ExitDecision", "Overthinking",
    "exit_costs", "exit_latency", "expected_time", "confidence_policy", "entropy_policy", "patience_policy", "run_policy",
    "tradeoff_curve", "exit_points", "per_exit_accuracy", "accuracy_at_budgets", "best_points",
    "choose_on_validation",
    "budget_table", "format_budget_table", "format_mean_std", "area_under_curve", "oracle_accuracy",
    "overthinking", "exit_distribution",
]
