"""GPF: Global Past-Future early exit (Liao et al., NAACL 2021; METHODS.md §4).

Follows the study's reimplementation (``architectures/early_exits/gpf.py`` and the loss in
``methods/early_exit.py`` of kamadforge/early-exit-benchmark), adapted from transformer layers
to any backbone's block outputs:

- **State.** Head ``i`` turns its block output into a state ``s_i = ReLU(f_i(x))`` of width
  ``state_dim`` (192, the study's ``head_dim``), where ``f_i`` is the run's head kind with
  ``state_dim`` outputs (SDN's pooled head by default; the study uses its conv head).
- **Future imitation.** Each head ``j`` owns an imitator ``g_j`` that predicts its state from an
  earlier head's: at exit ``i`` the future states are ``ŝ_j = ReLU(g_j(s_i))`` for ``j > i``.
- **Gated merge.** Each head owns a reduction ``r_j`` and a gate projection ``h_j`` (state →
  classes, no bias, initialised N(0, 1/√state_dim) as in the study). With the past states
  detached (the current one is not),
  ``λ_i = σ(B_i(ReLU(mean_{j≤i} h_j(s_j))))`` (``B_i`` a linear layer over the classes, so
  ``λ_i`` lies in (0, 1) per class) and
  ``logits_i = λ_i · Σ_{j≤i} r_j(s_j) + (1 − λ_i) · Σ_{j>i} r_j(ŝ_j)``.
  The original scales the two terms by 2 and uses tanh where the study uses ReLU; we follow the
  study. The last head has no future states, so its second term is zero.
- **Loss.** ``Σ_i (i+1)·CE_i / Σ_i (i+1) + L_imit`` over all exits, the final one included (the
  study; the original halves the sum). ``L_imit`` is the mean over heads ``i`` with a future of
  the mean over ``j > i`` of ``1 − cos(s_j, ŝ_j)``, the real state detached: the original's
  ``CosineEmbeddingLoss`` with target +1. The original's gradual unfreezing of lower layers is
  not implemented (nor is it in the study).
- **Exit.** Max-softmax confidence, as in the study (the original thresholds the entropy).

The backbone's own classifier stays the last exit, as for every method here.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import ContextHead, ExitContext, FeatureInfo, build_head
from .base import Method, register


class GPFHead(ContextHead):
    """One GPF exit; it reads the earlier heads' states from the context and the later heads'
    imitators and reductions from ``context.heads``."""

    def __init__(self, feature: FeatureInfo, head_kind: str, num_classes: int, state_dim: int):
        super().__init__()
        self.state = build_head(head_kind, feature, state_dim)
        self.imitator = nn.Linear(state_dim, state_dim)
        self.reduce = nn.Linear(state_dim, num_classes, bias=False)
        self.gate = nn.Linear(state_dim, num_classes, bias=False)
        for projection in (self.reduce, self.gate):
            nn.init.normal_(projection.weight, std=1 / math.sqrt(state_dim))
        self.balance = nn.Linear(num_classes, num_classes)

    def imitate(self, earlier_state: Tensor) -> Tensor:
        """This head's state as predicted from an earlier head's state."""
        return F.relu(self.imitator(earlier_state))

    def balance_gate(self, past: list[Tensor], heads: Sequence["GPFHead"]) -> Tensor:
        """λ in (0, 1) per class: the weight of the past states against the imitated future."""
        mixed = torch.stack([heads[j].gate(s) for j, s in enumerate(past)]).mean(0)
        return torch.sigmoid(self.balance(F.relu(mixed)))

    def forward(self, x: Tensor, context: ExitContext) -> Tensor:
        heads, i = context.heads, len(context.logits)
        state = F.relu(self.state(x))
        past = [s.detach() for s in context.states] + [state]
        context.states.append(state)
        future = {j: heads[j].imitate(state) for j in range(i + 1, len(heads))}
        context.extras.setdefault("imitations", []).append(future)
        gate = self.balance_gate(past, heads)
        merged = gate * sum(heads[j].reduce(s) for j, s in enumerate(past))
        if future:
            merged = merged + (1 - gate) * sum(heads[j].reduce(s) for j, s in future.items())
        return merged


def imitation_loss(context: ExitContext) -> Tensor:
    """Mean over heads with a future of the mean over their imitated states of
    ``1 − cos(real, imitated)``, the real states detached; zero when there is nothing to imitate.
    States beyond a truncated forward (:meth:`MultiExitModel.forward_until`) are not imitated."""
    terms = []
    reached = len(context.states)
    for future in context.extras.get("imitations", []):
        pairs = [(context.states[j], imitated) for j, imitated in future.items() if j < reached]
        if pairs:
            terms.append(torch.stack([1 - F.cosine_similarity(real.detach().float(), imitated.float(), dim=1).mean()
                                      for real, imitated in pairs]).mean())
    if not terms:
        return torch.zeros((), device=context.logits[0].device)
    return torch.stack(terms).mean()


class GPF(Method):
    name = "gpf"
    description = ("Global Past-Future early exit (Liao et al. 2021): heads merge past states and "
                   "imitated future states through a learned gate; depth-weighted loss plus imitation")

    def __init__(self, state_dim: int = 192):
        self.state_dim = state_dim

    def build_heads(self, features: Sequence[FeatureInfo], head_kind: str, num_classes: int) -> nn.ModuleList:
        return nn.ModuleList(GPFHead(f, head_kind, num_classes, self.state_dim) for f in features)

    def combine(self, exit_losses: Tensor, context: ExitContext) -> Tensor:
        depth = torch.arange(1, len(exit_losses) + 1, dtype=exit_losses.dtype, device=exit_losses.device)
        return (depth * exit_losses).sum() / depth.sum() + imitation_loss(context)


register(GPF())
