"""ZTW: Zero Time Waste (Wołczyk et al., NeurIPS 2021; METHODS.md §5).

- **Cascading heads.** Head ``m`` adds to its own logits a linear map of the previous head's
  logits, detached and layer-normalised: ``logits_m = f_m(x) + W_m·LN(logits_{m−1}.detach())``,
  where ``f_m`` is the run's head kind. This is the study's ``Linear(in + C → C)`` on
  ``concat(features, LN(prev))`` (``ztw.py:ZTWCascading``) written as a sum, so any head kind
  can cascade; the only difference is the initial scale of ``W_m`` (Kaiming-uniform over ``C``
  inputs instead of ``in + C``). The first head has no cascade input. The original puts a
  3×3 conv (then ReLU) in front of SDN's pooling and the study a strided 3×3 conv halving the
  width on ``ReLU(x)``; here the run's head kind decides (SDN's pooled head by default;
  ``head="conv1"`` adds a 3×3 conv-BN-ReLU of the same width), so every method compares on
  the same heads.
- **Geometric ensembles.** Exit ``m`` outputs
  ``z_m = mean_{i≤m}(exp(w_i^m) · log p_i) + b_m`` with ``w^m`` initialised N(0, 0.01²) and
  ``b_m = 0`` (``weighted_avg_model.py``, mode ``geometric``): a product of the heads'
  distributions with positive learned exponents. As in the study, the final exit (the
  backbone's classifier) gets no ensemble. The ensembles are trained after the heads
  (:class:`EnsembleStage`), everything else frozen, as in the original: on cached log-probabilities
  of the training set (no augmentation), Adam with lr 1e-3, batches of 512, 501 epochs
  (the original's CIFAR settings), all ensembles at once (their parameters are disjoint, so
  summing their losses trains each as if alone).
- **Loss** while the heads train: the mean cross-entropy of the heads' own logits over all
  exits (the study's default), not of the ensembles. The ensembles' parameters sit in the
  heads' parameter group but get no gradient there, so the phase's optimiser leaves them be
  (SGD and AdamW skip parameters without a gradient); training forwards skip the ensembles.
- **Exit.** Max-softmax of the ensemble's output; samples that never exit take the final exit.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import ContextHead, ExitContext, FeatureInfo, build_head, exit_logits
from .base import Method, Stage, TrainingDiverged, register


class GeometricEnsemble(nn.Module):
    """``mean_i(exp(w_i) · log p_i) + b`` over the log-probabilities of ``size`` heads."""

    def __init__(self, size: int, num_classes: int):
        super().__init__()
        self.log_weights = nn.Parameter(torch.randn(size) * 0.01)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, log_probs: Tensor) -> Tensor:
        """``log_probs``: ``[size, batch, classes]`` → ``[batch, classes]``."""
        weights = self.log_weights.exp().view(-1, 1, 1)
        return (weights * log_probs).mean(0) + self.bias


class CascadingHead(ContextHead):
    def __init__(self, feature: FeatureInfo, head_kind: str, num_classes: int, index: int):
        super().__init__()
        self.base = build_head(head_kind, feature, num_classes)
        self.cascade = (nn.Sequential(nn.LayerNorm(num_classes), nn.Linear(num_classes, num_classes, bias=False))
                        if index > 0 else None)
        self.ensemble = GeometricEnsemble(index + 1, num_classes)

    def forward(self, x: Tensor, context: ExitContext) -> Tensor:
        logits = self.base(x)
        if self.cascade is not None:
            logits = logits + self.cascade(context.logits[-1].detach())
        return logits

    def exit_output(self, context: ExitContext) -> Tensor:
        return self.ensemble(heads_log_probs(context.logits))


def heads_log_probs(logits: Sequence[Tensor]) -> Tensor:
    return torch.stack([F.log_softmax(out.float(), dim=1) for out in logits])


class EnsembleStage(Stage):
    """Trains every head's ensemble on the frozen model's cached training-set log-probabilities;
    its record also says how many of its seconds caching took (``cache_time``)."""

    name = "ensembles"

    def __init__(self, epochs: int = 501, lr: float = 1e-3, batch_size: int = 512):
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size

    def run(self, model: nn.Module, data, device: torch.device, progress: bool = True) -> dict:
        started = time.perf_counter()
        ensembles = [head.ensemble for head in model.heads]
        log_probs, labels = _cached_log_probs(model, data.eval_loader("train"), device)
        val_log_probs, val_labels = _cached_log_probs(model, data.eval_loader("val"), device)
        cached = time.perf_counter()
        trainable = {p: p.requires_grad for p in model.parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        params = [p for e in ensembles for p in e.parameters()]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=self.lr)
        generator = torch.Generator().manual_seed(data.seed * 100 + 4)
        history = []
        for epoch in range(self.epochs):
            order = torch.randperm(len(labels), generator=generator).to(labels.device)
            total, seen = torch.zeros(len(ensembles), device=labels.device), 0
            for start in range(0, len(order), self.batch_size):
                index = order[start:start + self.batch_size]
                losses = torch.stack([F.cross_entropy(e(log_probs[:m + 1, index]), labels[index])
                                      for m, e in enumerate(ensembles)])
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimizer.step()
                total += losses.detach() * len(index)
                seen += len(index)
            mean = (total / seen).tolist()
            for m, value in enumerate(mean):
                if not math.isfinite(value):
                    raise TrainingDiverged(f"training diverged in stage 'ensembles', epoch {epoch}: the ensemble "
                                           f"loss of exit {m} is {value}; lower the ensembles' learning rate "
                                           f"(now {self.lr:g}) or check the heads' outputs")
            if epoch % 50 == 0 or epoch == self.epochs - 1:
                with torch.no_grad():
                    val_acc = [(e(val_log_probs[:m + 1]).argmax(1) == val_labels).double().mean().item()
                               for m, e in enumerate(ensembles)]
                history.append(dict(epoch=epoch, train_loss=mean, val_acc=val_acc))
        for p, flag in trainable.items():  # as the phase left them
            p.requires_grad_(flag)
        finished = time.perf_counter()
        return dict(history=history, best_epoch=self.epochs - 1, wall_time=finished - started,
                    cache_time=cached - started)


def _cached_log_probs(model: nn.Module, batches, device: torch.device) -> tuple[Tensor, Tensor]:
    """The heads' log-probabilities ``[heads, N, C]`` (eval mode) and the labels, on ``device``."""
    logits, labels = exit_logits(model, batches, raw=True)
    return F.log_softmax(logits[:-1], dim=-1).to(device), labels.to(device)


class ZTW(Method):
    name = "ztw"
    description = ("Zero Time Waste (Wołczyk et al. 2021): cascading heads, then geometric ensembles "
                   "of the heads so far, exit on the ensemble's confidence")

    def __init__(self, ensemble_epochs: int = 501):
        self.ensemble_epochs = ensemble_epochs

    def build_heads(self, features: Sequence[FeatureInfo], head_kind: str, num_classes: int) -> nn.ModuleList:
        return nn.ModuleList(CascadingHead(f, head_kind, num_classes, i) for i, f in enumerate(features))

    def stages(self):
        return (EnsembleStage(self.ensemble_epochs),)


register(ZTW())
