"""What the evaluation modules share: the budgets, the cost tolerance, the type of a sweep's
thresholds, and the checks of their inputs (logits, labels, costs, curves)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import Tensor

#: The budgets of STUDY.md's table, as fractions of the plain backbone's cost.
BUDGETS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

#: Expected costs are means of floats; a point whose cost exceeds a budget by less than this
#: (rounding, not substance) still counts as within it.
COST_TOLERANCE = 1e-9

#: Thresholds of a sweep: any 1-d sequence of numbers; None takes the policy's default.
Thresholds = Tensor | Sequence[float] | None


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
