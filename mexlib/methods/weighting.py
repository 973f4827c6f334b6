"""Loss-weighting variants of SDN for the ablations (STUDY.md §6; ``notebooks/06_ablations``).

Both keep SDN's heads and exit rule and change only how the exits' losses reach the weights.

- **``sdn-depth``: depth-proportional weights with SDN's ramp** (Kaya et al. 2019, the original's
  "SDN training", METHODS.md §2 (2)). Exit ``k`` of ``K`` (from 1; the final exit is ``K``) has
  the end weight ``C_k = k / K``: SDN places its heads at 15 … 90 % of the network's cost and
  gives each its relative position, which for exits spread evenly over the depth is ``k / K``
  (PBEE's original and GPF use the same ``k``-proportional form). The heads' weights ramp over
  the phase's epochs as in SDN, ``τ_k(t) = min(C_k, 0.01 + t · C_k / T)`` for epoch
  ``t = 1 … T`` (``T``: the phase's epoch cap), so the last epoch trains with ``C_k``; the final
  exit's weight is 1 throughout. Where SDN sums
  ``Σ τ_k CE_k``, we divide by ``Σ_k C_k`` (a constant), so that at the end of the ramp the
  weights sum to 1 as the mean over exits (the default) does: the comparison then changes the
  exits' relative weights, not the learning rate. As in the original, the weighting applies
  when the whole network trains (phase 2); with the backbone frozen (phase 3), where the
  original trains the heads with an unweighted sum, ``sdn-depth`` trains them as SDN does.
- **``sdn-ge``: gradient equilibrium** (Li et al., "Improved Techniques for Training Adaptive
  Deep Networks", ICCV 2019). At each exit's branch point the backward pass is rescaled: the gradient
  from head ``k``'s branch by ``1 / (K − k + 1)``, the gradient from the later blocks by
  ``(K − k) / (K − k + 1)`` (exits numbered from 1; ``K − k + 1`` is the number of exits that
  read this block's output, the exit itself included). The forward pass is unchanged. With a
  head after every block, the gradient reaching block ``b``'s output is the *mean* of the
  gradients of the exits that depend on it instead of their sum, so deep blocks are not
  swamped by the early heads. A head's own parameters get its loss's full gradient. With exits
  after only some blocks the same factors apply at the exits' branch points
  (:attr:`mexlib.models.MultiExitModel.gradient_scales`). Li et al. train on the *sum* of the
  exits' losses (MSDNet's loss); at the cpu profile's learning rate (0.1) that sum diverged in
  the first epoch of joint training (measured: NaN loss at exit 0), so ``sdn-ge`` keeps SDN's
  mean over exits, which scales every gradient by the same 1/K and leaves the equilibrium
  between blocks, the point of the method, as Li et al. define it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Method, StepRule, register


def depth_weights(num_exits: int, epoch: int | None = None, epochs: int | None = None) -> Tensor:
    """The exits' loss weights of ``sdn-depth``: ``C_k = k / K``, the heads' weights ramped as
    ``min(C_k, 0.01 + epoch · C_k / epochs)`` for ``epoch`` counted from 1 (no ramp when
    ``epoch`` is None), the final exit at 1, all divided by ``Σ_k C_k``."""
    end = torch.arange(1, num_exits + 1, dtype=torch.float32) / num_exits
    weights = end.clone()
    if epoch is not None:
        if not epochs or epochs < 1:
            raise ValueError(f"the ramp needs the phase's epoch count, got {epochs!r}")
        weights[:-1] = torch.minimum(end[:-1], 0.01 + epoch * end[:-1] / epochs)
    return weights / end.sum()


class DepthRampStep(StepRule):
    """SDN's weight ramp: the epoch is counted from the steps taken (saved in checkpoints)."""

    def __init__(self, method: "DepthWeighted", steps_per_epoch: int, epochs: int):
        super().__init__(method)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.epochs = max(1, epochs)
        self.steps = 0

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 1 as in SDN's ramp."""
        return self.steps // self.steps_per_epoch + 1

    def combine(self, exit_losses: Tensor, context) -> Tensor:
        """The ramped weights of this step's epoch; one call per training step."""
        weights = depth_weights(len(exit_losses), self.epoch, self.epochs).to(exit_losses.device)
        self.steps += 1
        return (weights * exit_losses).sum()

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state.get("steps", 0))


class DepthWeighted(Method):
    name = "sdn-depth"
    description = ("SDN with depth-proportional loss weights ramped over training (SDN's original "
                   "loss, normalised to sum 1)")

    def step_rule(self, model, phase, steps_per_epoch, epochs):
        """The ramped depth weights when the whole network trains; SDN's mean in phase 3."""
        if phase == "joint":
            return DepthRampStep(self, steps_per_epoch, epochs)
        return StepRule(self)


def equilibrium_scales(num_exits: int) -> list[tuple[float, float]]:
    """Gradient equilibrium's backward factors at the branch point of each exit before the
    last: ``(to the head, to the later blocks)`` = ``(1 / (K − k + 1), (K − k) / (K − k + 1))``."""
    return [(1 / (num_exits - k + 1), (num_exits - k) / (num_exits - k + 1))
            for k in range(1, num_exits)]


class GradientEquilibrium(Method):
    name = "sdn-ge"
    description = ("SDN with gradient equilibrium (Li et al. 2019): each branch point's gradients "
                   "rescaled to the mean of the exits behind it (SDN's mean loss)")

    def gradient_scales(self, num_exits: int) -> list[tuple[float, float]]:
        return equilibrium_scales(num_exits)


register(DepthWeighted())
register(GradientEquilibrium())
