"""L2W: learning to weight samples (Han et al., ECCV 2022; METHODS.md §6).

SDN's heads, trained with per-sample, per-exit loss weights predicted by a weight-prediction
network (WPN) that is itself learned by one-step meta-learning (``tools/main_cifar_DDP.py`` of
LeapLabTHU/L2W-DEN; the study's ``methods/l2w.py``):

- **WPN**: ``K`` per-sample losses → 500 hidden units (ReLU) → ``K`` outputs (tanh)
  (``models/weight_predict.py``). The weights are ``w_{n,k} = 1 + ε·(WPN(ℓ_n)_k − mean)`` with
  the mean over the whole batch × exits matrix (``'mat'`` centring, as the study), ε = 0.3 (the
  study's ``l2w_epsilon``). They are positive (in [1 − 2ε, 1 + 2ε]) and average exactly 1.
- **Model step**: ``mean_{n,k}(w_{n,k}·ℓ_{n,k})`` with ``w`` computed without gradient. This is
  the study's mean over samples and exits (the original sums the exits' means, i.e. ×K), so
  its scale matches SDN's mean loss.
- **Meta step**, every ``meta_interval`` batches, before the model step: the batch is split in
  halves A and B; a differentiable SGD step with the phase's current learning rate is taken
  on A's weighted loss (the WPN's graph kept), the stepped model is run on B, B's samples are
  allocated to exits by the target exit distribution ``q_k ∝ p^k`` (p = 0.75, the original's
  ``target_p_index`` 15 of 20): exit by exit, the not yet allocated samples with the highest
  max-softmax at that exit are taken, ``floor(|B|·q_k)`` of them, and the last exit takes the
  rest; the meta loss ``Σ_k CE(exit k on its samples)`` updates the WPN alone (Adam, lr 1e-4,
  weight decay 1e-4, cosine schedule over the phase). The model's weights and BatchNorm
  statistics are left untouched by the meta step.
- **Deviations**, chosen deliberately: (1) the study's allocation never marks samples as used
  (``used_sample_indices`` is not updated in ``methods/l2w.py``), so every exit picks from the
  whole batch; we follow the original's exclusion logic. (2) The pseudo step is plain SGD at the
  optimiser's learning rate (the original's ``MetaSGD`` also applies momentum and weight decay;
  the study has ``MetaAdamW`` for AdamW). Under AdamW (the ViT settings) the pseudo step is
  therefore much smaller than the real update; a differentiable AdamW step is left to do. Like
  the model step, the pseudo step's loss is the mean over exits, so its effective learning rate
  is the original's divided by K. (3) One direction (A → B) per meta step, as the study; the
  original also does B → A. (4) The study meta-steps every 100 batches on runs of tens of
  thousands of batches. The default here is every ``min(100, phase batches // 200)`` batches
  (at least 1): the study's 100 for phases of 20,000 batches or more, and enough meta steps for
  the WPN to learn (about 200) in shorter phases, e.g. every 10 batches in the cpu profile's
  2,180-batch phases.
- Attention has no second derivative in PyTorch's fused kernels, so the meta step runs scaled
  dot-product attention on its reference ("math") kernel.
- **Exit**: max-softmax confidence, as the study (the original uses MSDNet's budgeted batch
  thresholds).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import Method, StepRule, cross_entropy_per_sample, register


class WeightPredictor(nn.Module):
    """The WPN: per-sample losses of the ``num_exits`` exits → per-exit weights."""

    def __init__(self, num_exits: int, hidden: int = 500, epsilon: float = 0.3):
        super().__init__()
        self.epsilon = epsilon
        self.net = nn.Sequential(nn.Linear(num_exits, hidden), nn.ReLU(), nn.Linear(hidden, num_exits), nn.Tanh())

    def forward(self, losses: Tensor) -> Tensor:
        """``losses`` ``[batch, exits]`` (detached) → weights ``1 + ε(out − mean(out))``."""
        out = self.net(losses)
        return 1 + self.epsilon * (out - out.mean())


def target_exit_distribution(num_exits: int, p: float = 0.75) -> Tensor:
    """``q_k ∝ p^k`` for k = 1..K, summing to 1 (``calc_target_probs`` of L2W-DEN)."""
    q = torch.tensor([p ** k for k in range(1, num_exits + 1)], dtype=torch.float64)
    return q / q.sum()


def allocate_to_exits(confidence: Tensor, q: Tensor) -> list[Tensor]:
    """Sample indices per exit: exit by exit, the ``floor(N·q_k)`` most confident samples not
    yet taken (``confidence`` ``[exits, N]``); the last exit takes every sample left."""
    num_exits, n = confidence.shape
    free = torch.ones(n, dtype=torch.bool, device=confidence.device)
    groups = []
    for k in range(num_exits):
        if k == num_exits - 1:
            chosen = free.nonzero().flatten()
        else:
            take = min(int(math.floor(n * float(q[k]))), int(free.sum()))
            scores = confidence[k].masked_fill(~free, -math.inf)
            chosen = scores.argsort(descending=True)[:take]
        free[chosen] = False
        groups.append(chosen)
    return groups


class _HeadLogits(nn.Module):
    """The heads' own logits as a plain forward, for :func:`torch.func.functional_call`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_context(x, outputs=False).logits


class L2WStep(StepRule):
    def __init__(self, method: "L2W", model: nn.Module, total_steps: int):
        super().__init__(method)
        device = next(model.parameters()).device
        self.wpn = WeightPredictor(model.num_exits, method.hidden, method.epsilon).to(device)
        self.optimizer = torch.optim.Adam(self.wpn.parameters(), lr=method.meta_lr,
                                          weight_decay=method.meta_weight_decay)
        self.interval = method.interval_for(total_steps)
        meta_steps = max(1, total_steps // self.interval)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / meta_steps))))
        self.q = target_exit_distribution(model.num_exits, method.p)
        self.step = 0

    def loss(self, model, x, y, autocast, lr):
        if self.step % self.interval == 0 and len(y) >= 2:
            # it differentiates twice through the model, which compiled pieces (aot_autograd)
            # cannot: under a compiled step (compile="compile" or CUDA graphs) it runs them eagerly
            with torch.compiler.set_stance("force_eager"):
                self.meta_step(model, x, y, autocast, lr)
        self.step += 1
        with autocast:
            logits = model.forward_context(x, outputs=False).logits
        per_sample = cross_entropy_per_sample(logits, y)
        with torch.no_grad():
            weights = self.wpn(per_sample.detach())
        return (weights * per_sample).mean(), per_sample.detach().mean(0)

    def meta_step(self, model: nn.Module, x: Tensor, y: Tensor, autocast, lr: float) -> Tensor:
        """One update of the WPN; returns the meta loss. The model is left as it was."""
        half = len(y) // 2
        wrapper = _HeadLogits(model)
        names = [n for n, p in wrapper.named_parameters() if p.requires_grad]
        params = [p for p in wrapper.parameters() if p.requires_grad]
        buffers = {n: b.clone() for n, b in wrapper.named_buffers()}  # BN statistics stay put
        with autocast, sdpa_kernel(SDPBackend.MATH):  # fused attention has no double backward
            logits = functional_call(wrapper, {**dict(zip(names, params)), **buffers}, (x[:half],))
        per_sample = cross_entropy_per_sample(logits, y[:half])
        pseudo_loss = (self.wpn(per_sample.detach()) * per_sample).mean()
        grads = torch.autograd.grad(pseudo_loss, params, create_graph=True, allow_unused=True)
        stepped = {n: p if g is None else p - lr * g for n, p, g in zip(names, params, grads)}
        with autocast, sdpa_kernel(SDPBackend.MATH):
            meta_logits = functional_call(wrapper, {**stepped, **buffers}, (x[half:],))
        meta_y = y[half:]
        with torch.no_grad():
            confidence = torch.stack([F.softmax(out.float(), 1).amax(1) for out in meta_logits])
        groups = allocate_to_exits(confidence, self.q)
        meta_loss = sum(F.cross_entropy(out[g].float(), meta_y[g]) for out, g in zip(meta_logits, groups) if len(g))
        if not meta_loss.requires_grad:  # every sample went to an exit this phase does not train
            return meta_loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        meta_loss.backward(inputs=list(self.wpn.parameters()))
        self.optimizer.step()
        self.scheduler.step()
        return meta_loss.detach()

    def state_dict(self) -> dict:
        return dict(wpn=self.wpn.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), step=self.step)

    def load_state_dict(self, state: dict) -> None:
        self.wpn.load_state_dict(state["wpn"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]


class L2W(Method):
    name = "l2w"
    description = ("Learning to weight samples (Han et al. 2022): SDN's heads with per-sample, "
                   "per-exit loss weights from a meta-learned weight network")

    def __init__(self, epsilon: float = 0.3, hidden: int = 500, meta_interval: int | None = None,
                 p: float = 0.75, meta_lr: float = 1e-4, meta_weight_decay: float = 1e-4):
        self.epsilon, self.hidden, self.meta_interval, self.p = epsilon, hidden, meta_interval, p
        self.meta_lr, self.meta_weight_decay = meta_lr, meta_weight_decay

    def interval_for(self, total_steps: int) -> int:
        """Batches between meta steps: ``meta_interval`` if set, else the study's 100 capped
        so that a phase of ``total_steps`` batches gets about 200 meta steps."""
        if self.meta_interval is not None:
            return self.meta_interval
        return max(1, min(100, total_steps // 200))

    def step_rule(self, model, phase, steps_per_epoch, epochs):
        return L2WStep(self, model, steps_per_epoch * epochs)


register(L2W())
