"""Loss landscapes and linear mode connectivity of trained multi-exit models (STUDY.md §5.1).

- **Directions** (Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018):
  a Gaussian direction with the shape of the model's parameters, **filter-normalised**: each
  filter (a weight tensor's slice along its first dimension: a conv output channel, a row of a
  linear layer) is scaled to the norm of the model's matching filter. Parameters with one
  dimension or none (biases, BatchNorm and LayerNorm scales and shifts, SDN's pooling mix) get
  a zero direction, as Li et al. do for biases and BatchNorm ("ignore"), so the plane moves
  only the weights. ``scope`` limits the direction to the backbone or the heads (the other
  part's direction is zero).
- **BatchNorm.** A perturbed or interpolated ResNet's stored BatchNorm statistics belong to
  another set of weights. Before its loss is measured, every model here gets its BatchNorm
  running statistics recomputed on training batches (:func:`recompute_batchnorm`: a
  cumulative average over the batches, in train mode, with no gradient), as in mode
  connectivity work (Garipov et al. 2018; Frankle et al. 2020). Skipping it inflates barriers
  for ResNets; a model without BatchNorm is unaffected.
- **Loss.** On a fixed evaluation batch (no augmentation): each exit's cross-entropy and the
  total multi-exit loss, the mean over exits (the default training loss), plus each exit's
  accuracy along interpolation paths.
"""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from ..registry import check

SCOPES = ("all", "backbone", "heads")


def _in_scope(name: str, scope: str) -> bool:
    check(scope, SCOPES, "scope")
    return scope == "all" or name.startswith(scope + ".")


def filter_normalized_direction(model: nn.Module, generator: torch.Generator, scope: str = "all") -> dict[str, Tensor]:
    """A random direction in parameter space, filter-normalised to ``model`` (see above)."""
    direction = {}
    for name, param in model.named_parameters():
        if param.dim() <= 1 or not _in_scope(name, scope):
            direction[name] = torch.zeros_like(param)
            continue
        d = torch.randn(param.shape, generator=generator, dtype=param.dtype).to(param.device)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        p_norm = param.detach().flatten(1).norm(dim=1)
        direction[name] = d * (p_norm / d_norm).view(-1, *([1] * (param.dim() - 1)))
    return direction


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable) -> nn.Module:
    """Reset every BatchNorm's running statistics and recompute them on ``batches`` (images,
    labels) as a cumulative average; returns ``model`` in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches
    model.eval()
    for m in norms:  # each norm itself: a model whose heads-only mode pins its backbone to eval
        m.train()
    for x, _ in batches:
        model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


@torch.no_grad()
def exit_losses(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Each exit's mean cross-entropy and accuracy on one batch, ``[K]`` each (eval mode)."""
    model.eval()
    logits = torch.stack(model.forward_context(x, outputs=False).logits).float()
    losses = torch.stack([F.cross_entropy(out, y) for out in logits])
    return losses, (logits.argmax(-1) == y).float().mean(1)


def _set_parameters(model: nn.Module, values: dict[str, Tensor]) -> nn.Module:
    """Write ``values`` into ``model``'s parameters (its BatchNorm statistics are recomputed next)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(values[name])
    return model


def loss_surface(model: nn.Module, batch: tuple[Tensor, Tensor], bn_batches: Sequence, steps: int = 25,
                 span: float = 1.0, scope: str = "all", seed: int = 0) -> pd.DataFrame:
    """The loss on the plane ``θ + a·d₁ + b·d₂`` for ``a, b`` in ``[-span, span]`` on a
    ``steps × steps`` grid: a row per point with ``a``, ``b``, ``total`` (mean over exits) and
    ``exit k`` losses. BatchNorm statistics are recomputed at every point."""
    generator = torch.Generator().manual_seed(seed)
    d1 = filter_normalized_direction(model, generator, scope)
    d2 = filter_normalized_direction(model, generator, scope)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    coords = np.linspace(-span, span, steps)
    point = copy.deepcopy(model)  # one working copy, moved to each point of the plane
    rows = []
    for a in coords:
        for b in coords:
            _set_parameters(point, {n: base[n] + float(a) * d1[n] + float(b) * d2[n] for n in base})
            recompute_batchnorm(point, bn_batches)
            losses, _ = exit_losses(point, *batch)
            rows.append({"a": float(a), "b": float(b), "total": float(losses.mean()),
                         **{f"exit {k}": float(v) for k, v in enumerate(losses)}})
    return pd.DataFrame(rows)


def interpolate(model_a: nn.Module, model_b: nn.Module, batch: tuple[Tensor, Tensor], bn_batches: Sequence,
                steps: int = 11) -> pd.DataFrame:
    """Loss and accuracy of every exit along ``θ(α) = (1 − α)·θ_A + α·θ_B``, ``α`` in [0, 1]:
    a row per ``α`` with ``total`` loss (mean over exits), ``loss k`` and ``accuracy k``. Both
    models need the same architecture; BatchNorm statistics are recomputed at every point,
    the ends included, so the ends compare like with like."""
    names_a = [n for n, _ in model_a.named_parameters()]
    names_b = [n for n, _ in model_b.named_parameters()]
    if names_a != names_b:
        raise ValueError("the two models differ in their parameters; interpolate models of one architecture")
    theta_a = dict(model_a.named_parameters())
    theta_b = dict(model_b.named_parameters())
    point = copy.deepcopy(model_a)  # one working copy, moved along the line
    rows = []
    for alpha in np.linspace(0, 1, steps):
        values = {n: (1 - alpha) * theta_a[n].detach() + alpha * theta_b[n].detach() for n in names_a}
        recompute_batchnorm(_set_parameters(point, values), bn_batches)
        losses, accuracy = exit_losses(point, *batch)
        rows.append({"alpha": float(alpha), "total": float(losses.mean()),
                     **{f"loss {k}": float(v) for k, v in enumerate(losses)},
                     **{f"accuracy {k}": float(v) for k, v in enumerate(accuracy)}})
    return pd.DataFrame(rows)


def barrier(path: pd.DataFrame, column: str = "total") -> float:
    """The loss barrier of an interpolation path as Frankle et al. define it ("Linear mode
    connectivity and the lottery ticket hypothesis", ICML 2020): the largest excess of the loss
    on the path over the straight line between its two ends' losses, max over α of
    L(α) − ((1 − α)·L(0) + α·L(1)) (0 or below: no barrier). Unlike the highest point minus the
    mean of the ends, it does not count the difference between the ends as a barrier."""
    values = path[column].to_numpy()
    alpha = path["alpha"].to_numpy()
    return float((values - ((1 - alpha) * values[0] + alpha * values[-1])).max())


__all__ = ["SCOPES", "barrier", "exit_losses", "filter_normalized_direction", "interpolate", "loss_surface",
           "recompute_batchnorm"]
