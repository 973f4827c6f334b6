"""What each block's representation holds (STUDY.md §5.2–5.3): numerical rank and mutual
information with the labels.

- **Block outputs** (:func:`block_features`): the backbone's output after each block on fixed
  held-out images, flattened to a samples × features matrix (a conv block's C×H×W map gives
  C·H·W features; MSDNet's block output, one map per scale, gives them all side by side).
- **Numerical rank** (:func:`numerical_rank`): the number of singular values of the centred
  matrix above ``rel_tol`` times the largest. The rank is at most min(samples, features), so
  it is meaningful only with at least as many samples as the rank it measures
  (:func:`numerical_rank` reports the bound); the tolerance is a choice, so the notebooks show
  how the result moves with it (:func:`rank_profile`).
- **Effective rank** (:func:`effective_rank`, O. Roy and M. Vetterli, "The effective rank: a
  measure of effective dimensionality", EUSIPCO 2007): ``exp(H(p))`` with ``p_i = σ_i / Σ σ_j``
  the singular values normalised to sum to one. It needs no tolerance: k equal singular values
  give k, a spectrum that decays gives a value between 1 and the rank. Its uncertainty over the
  sampled images comes from a bootstrap over them (:func:`effective_rank_interval`).
- **I(T;Y)** (:func:`mutual_information`): Ross's k-nearest-neighbour estimator for the mutual
  information between a continuous variable and a discrete one (B. C. Ross, "Mutual
  Information between Discrete and Continuous Data Sets", PLoS ONE 9(2), 2014), a relative of
  the Kraskov–Stögbauer–Grassberger estimator: ``I = ψ(N) − ⟨ψ(N_y)⟩ + ψ(k) − ⟨ψ(m)⟩``, where
  ``N_y`` counts the samples of a sample's class, and ``m`` the samples of any class within the
  distance to its k-th neighbour of the same class. In nats. High-dimensional block outputs
  are first projected on their leading principal components (``dims``), where k-NN
  distances still mean something; the estimate is then that of the projection, a lower bound
  on the block's (the data-processing inequality).
- **I(X;T)** is not estimated: for a deterministic network with continuous inputs it is
  infinite (or, with a finite data set, the entropy of the sample index), so no estimator is
  sound for it without adding noise to the network (Goldfeld et al., ICML 2019; Amjad and
  Geiger, IEEE TPAMI 2020).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm as _normal
from torch import Tensor


@torch.no_grad()
def block_features(model, batches: Iterable, blocks: Sequence[int] | None = None) -> dict[int, Tensor]:
    """The backbone's output after each block (numbered from 1; default: all) on ``batches``,
    flattened: ``{block: [samples, features]}`` in float32 on the CPU."""
    backbone = model.backbone
    wanted = set(blocks or range(1, backbone.num_blocks + 1))
    outputs: dict[int, list[Tensor]] = {b: [] for b in sorted(wanted)}
    model.eval()
    for x, _ in batches:
        h = backbone.stem(x)
        for number, block in enumerate(backbone.blocks, start=1):
            h = block(h)
            if number in wanted:
                scales = h if isinstance(h, (list, tuple)) else [h]  # MSDNet: one map per scale
                outputs[number].append(torch.cat([t.flatten(1) for t in scales], 1).float().cpu())
            if number >= max(wanted):
                break
    return {b: torch.cat(parts) for b, parts in outputs.items()}


def singular_values(features: Tensor, exact: bool = False) -> Tensor:
    """Singular values of the column-centred matrix, largest first (float64).

    By default from the eigenvalues of the smaller Gram matrix (``MMᵀ`` or ``MᵀM``): about ten
    times faster than an SVD for block outputs of thousands of features, and accurate to about
    1e-8 of the largest value (the square root of float64's precision), far below any rank
    tolerance used here. ``exact=True`` computes the SVD itself."""
    matrix = features.double()
    matrix = matrix - matrix.mean(0, keepdim=True)
    if exact:
        return torch.linalg.svdvals(matrix)
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().flip(0)


def numerical_rank(features: Tensor, rel_tol: float = 1e-3) -> int:
    """Singular values above ``rel_tol`` × the largest, of the centred matrix."""
    if not 0 < rel_tol < 1:
        raise ValueError(f"rel_tol must lie in (0, 1), got {rel_tol}")
    values = singular_values(features, exact=rel_tol < 1e-6)
    if values.numel() == 0 or values[0] == 0:
        return 0
    return int((values > rel_tol * values[0]).sum())


def _entropy_rank(values: Tensor) -> float:
    """exp of the entropy of ``values`` normalised to sum to one (0 for all zeros)."""
    total = float(values.sum())
    if total == 0:
        return 0.0
    p = values[values > 0] / total
    return float(torch.exp(-(p * p.log()).sum()))


def _centred_values(gram: Tensor) -> Tensor:
    """The singular values of the column-centred matrix whose row Gram matrix ``MMᵀ`` is
    ``gram``: the square roots of the double-centred Gram matrix's eigenvalues, largest first,
    those below the rounding floor (count × float64's epsilon × the largest) set to zero, where an
    exact value would be zero."""
    centred = gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()
    values = torch.linalg.eigvalsh(centred).flip(0)
    floor = max(float(values[0]), 0.0) * len(values) * torch.finfo(values.dtype).eps
    return torch.where(values > floor, values, torch.zeros_like(values)).sqrt()


def effective_rank(features: Tensor) -> float:
    """Roy and Vetterli's effective rank of the centred matrix (2007): exp of the entropy of its
    singular values normalised to sum to one (1 for a rank-one matrix, k for k equal values).
    From the row Gram matrix's eigenvalues, with the rounding floor zeroed (values of about 1e-8
    of the largest would otherwise stand where the exact ones are zero, and add to the entropy):
    equal to the SVD's to 1e-6 and several times faster for blocks of thousands of features."""
    matrix = features.double()
    return _entropy_rank(_centred_values(matrix @ matrix.T))


def effective_rank_interval(features: Tensor, resamples: int = 200, level: float = 0.95,
                            seed: int = 0) -> tuple[float, float, float]:
    """The effective rank and its normal bootstrap interval over the samples: the value ± the
    normal quantile × the standard deviation of ``resamples`` resamples (rows drawn with
    replacement; each resample's centred Gram matrix is read from the whole sample's, so a
    resample costs one eigendecomposition): ``(value, low, high)``. Not the percentile interval:
    a resample's repeated rows lower its effective rank (on 300 rows of rank 40, every resample
    falls below the whole sample's value), so the resamples' spread measures the sampling error
    and their location does not."""
    if resamples < 2:
        raise ValueError(f"resamples must be at least 2, got {resamples}")
    generator = torch.Generator().manual_seed(seed)
    matrix = features.double()
    gram = matrix @ matrix.T
    n = gram.shape[0]
    draws = []
    for _ in range(resamples):
        rows = torch.randint(0, n, (n,), generator=generator)
        draws.append(_entropy_rank(_centred_values(gram[rows][:, rows])))
    value = _entropy_rank(_centred_values(gram))
    half = float(_normal.ppf(0.5 + level / 2)) * float(np.std(draws, ddof=1))
    return value, value - half, value + half


def rank_profile(features: dict[int, Tensor], tolerances: Sequence[float] = (1e-2, 1e-3, 1e-4)) -> pd.DataFrame:
    """Rank of every block at every tolerance: a row per (block, tolerance) with the rank, the
    bound min(samples, features) and the rank as a share of the bound."""
    rows = []
    for block, matrix in features.items():
        values = singular_values(matrix, exact=min(tolerances) < 1e-6)
        bound = min(matrix.shape[0] - 1, matrix.shape[1])  # centring removes one dimension
        for tol in tolerances:
            rank = int((values > tol * values[0]).sum()) if values.numel() and values[0] > 0 else 0
            rows.append(dict(block=block, tolerance=tol, rank=rank, bound=bound, share=rank / max(bound, 1)))
    return pd.DataFrame(rows)


def principal_components(features: Tensor, dims: int) -> Tensor:
    """``features`` projected on its ``dims`` leading principal components (all if fewer)."""
    matrix = features.double() - features.double().mean(0, keepdim=True)
    if matrix.shape[1] <= dims:
        return matrix
    q = min(dims + 10, *matrix.shape)
    _, _, v = torch.pca_lowrank(matrix, q=q, center=False, niter=4)
    return matrix @ v[:, :dims]


#: Distances computed directly, not through the matrix-product formula, so that the radius and the
#: count of one sample agree to the last bit (the k-th neighbour itself must be counted).
_EXACT = "donot_use_mm_for_euclid_dist"


def mutual_information(features: Tensor, labels: Tensor, k: int = 3, dims: int | None = 10,
                       chunk: int = 2048) -> float:
    """Ross's k-NN estimate of I(T;Y) in nats (see the module docstring); ``dims`` principal
    components first (None: the raw features). Classes with at most ``k`` samples are left
    out, as the estimator needs k neighbours of the same class."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = features.double() if dims is None else principal_components(features, dims)
    labels = torch.as_tensor(labels)
    classes, counts = labels.unique(return_counts=True)
    keep = torch.isin(labels, classes[counts > k])
    x, labels = x[keep], labels[keep]
    n = len(labels)
    if n == 0:
        raise ValueError(f"no class has more than k={k} samples")
    radius = torch.empty(n, dtype=torch.float64)
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        points = x[members]
        for start in range(0, len(members), chunk):
            d = torch.cdist(points[start:start + chunk], points, compute_mode=_EXACT)
            # the k-th neighbour of the same class, the sample itself (distance 0) excluded
            radius[members[start:start + chunk]] = d.kthvalue(k + 1, dim=1).values
    within = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, chunk):
        d = torch.cdist(x[start:start + chunk], x, compute_mode=_EXACT)
        within[start:start + chunk] = (d <= radius[start:start + chunk, None]).sum(1).double() - 1  # minus itself
    class_size = torch.tensor([int((labels == c).sum()) for c in labels], dtype=torch.float64)
    digamma = torch.special.digamma
    estimate = (digamma(torch.tensor(float(n))) - digamma(class_size).mean()
                + digamma(torch.tensor(float(k))) - digamma(within.clamp_min(1)).mean())
    return float(estimate)


def gaussian_mixture_information(separation: float, points: int = 200_001, span: float = 12.0) -> float:
    """The exact I(T;Y) in nats of ``T = ±separation/2 + N(0, 1)`` with ``Y`` a fair coin
    choosing the sign, by numerical integration (a known answer for the estimator's tests)."""
    t = np.linspace(-span - separation, span + separation, points)
    step = t[1] - t[0]
    normal = lambda m: np.exp(-0.5 * (t - m) ** 2) / math.sqrt(2 * math.pi)  # noqa: E731
    mixture = 0.5 * normal(-separation / 2) + 0.5 * normal(separation / 2)
    entropy_t = -np.sum(mixture * np.log(np.clip(mixture, 1e-300, None))) * step
    entropy_t_given_y = 0.5 * math.log(2 * math.pi * math.e)
    return float(entropy_t - entropy_t_given_y)


__all__ = ["block_features", "effective_rank", "effective_rank_interval", "gaussian_mixture_information",
           "mutual_information", "numerical_rank",
           "principal_components", "rank_profile", "singular_values"]
