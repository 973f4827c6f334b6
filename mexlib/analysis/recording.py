"""What an analysis needs from inside training, recorded without changing it.

- :class:`GradientRecorder`: every ``every`` steps of a phase that trains the heads, the norm of
  the gradient that each exit's loss *alone* sends to each backbone block's parameters (the stem
  as block 0), and to the heads. It differentiates the batch's exit losses with
  ``torch.autograd.grad`` on the step's own graph (kept for the step's backward pass), which
  neither accumulates into ``.grad`` nor draws random numbers, so the run trains exactly as it
  would without it (tested: the same logits, bit for bit).
- :class:`SnapshotRecorder`: the model's weights after every epoch, for analyses over training
  (ranks, mutual information).

:func:`recorded` trains a stored run's configuration again with a recorder and keeps the
records beside the store (``records-<run key>/<recorder>.pt``): a run's key does not include
what was recorded, because recording does not change the run. Where the run is stored, the
retrained model's test logits are compared with it; a difference (other code, another machine)
is reported.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..models import exit_logits
from ..store import RunStore, run_key
from ..train import train_regime


def _block_parameters(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    backbone = model.backbone
    groups = [("0 stem", list(backbone.stem.parameters()))]
    groups += [(f"{i} block", list(block.parameters())) for i, block in enumerate(backbone.blocks, start=1)]
    groups.append(("heads", list(model.heads.parameters())))
    return [(name, params) for name, params in groups if params]


class GradientRecorder:
    """Per-exit gradient norms per backbone block, every ``every`` steps of the phases that
    train heads (``joint``: backbone and heads; ``heads``: the heads alone)."""

    name = "gradients"

    def __init__(self, every: int = 10, phases: tuple[str, ...] = ("joint",)):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.phases = every, tuple(phases)
        self.rows: list[dict] = []
        self._count = 0
        self._warned = False

    @property
    def key(self) -> str:
        return f"gradients-every{self.every}-{'-'.join(self.phases)}"

    def on_step(self, model: nn.Module, phase: str, epoch: int, step: int, exit_losses: Tensor) -> None:
        if phase not in self.phases:
            return
        self._count += 1
        if (self._count - 1) % self.every:
            return
        groups = [(name, [p for p in params if p.requires_grad]) for name, params in _block_parameters(model)]
        groups = [(name, params) for name, params in groups if params]
        flat = [p for _, params in groups for p in params]
        if not any(loss.requires_grad for loss in exit_losses) and not self._warned:
            self._warned = True  # e.g. L2W, whose step rule hands back detached exit losses
            warnings.warn("the step rule's exit losses carry no gradient: nothing to record for this method")
        for k in range(len(exit_losses)):
            if not exit_losses[k].requires_grad:
                continue
            grads = torch.autograd.grad(exit_losses[k], flat, retain_graph=True, allow_unused=True)
            position = 0
            for name, params in groups:
                part = grads[position:position + len(params)]
                position += len(params)
                squared = sum(float(g.detach().float().pow(2).sum()) for g in part if g is not None)
                self.rows.append(dict(phase=phase, epoch=epoch, step=step, exit=k, block=name, norm=squared ** 0.5))

    def on_epoch_end(self, model: nn.Module, phase: str, epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"rows": list(self.rows), "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self.rows, self._count = list(state.get("rows", [])), int(state.get("count", 0))

    def records(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["phase", "epoch", "step", "exit", "block", "norm"])


class SnapshotRecorder:
    """The model's state after every epoch of the given phases (weights on the CPU)."""

    name = "snapshots"

    def __init__(self, phases: tuple[str, ...] = ("joint", "heads")):
        self.phases = tuple(phases)
        self.snapshots: list[dict] = []

    @property
    def key(self) -> str:
        return f"snapshots-{'-'.join(self.phases)}"

    def on_step(self, *args) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, phase: str, epoch: int) -> None:
        if phase in self.phases:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.snapshots.append({"phase": phase, "epoch": epoch, "state": state})

    def state_dict(self) -> dict:
        return {"snapshots": list(self.snapshots)}

    def load_state_dict(self, state: dict) -> None:
        self.snapshots = list(state.get("snapshots", []))

    def records(self) -> list[dict]:
        return self.snapshots


def recorded(store: RunStore, config: RunConfig, recorder, progress: bool = False):
    """``recorder``'s records for ``config``'s run: from ``records-<key>/`` in the store, or by
    training the run once more with the recorder (its phase-1 backbone from the store)."""
    config = store.resolve(config)
    key = run_key(config)
    path = Path(store.root) / f"records-{key}" / f"{recorder.key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    backbone = store.get_or_run_backbone(config).state_dict() if "backbone" in config.phases else None
    stored = store.find(config)  # compared with, where stored; not trained just for that
    with store._training(f"records-{key}-{recorder.key}") as workdir:  # one resumable folder per recorder
        if path.is_file():  # another process recorded it meanwhile
            return torch.load(path, weights_only=False)
        data = store._device_data(config)
        fresh = copy.deepcopy(recorder)
        model, _ = train_regime(config, data, store.device, backbone, workdir, progress, recorder=fresh)
        logits, _ = exit_logits(model, data.eval_loader("test"))
        if stored is not None and not torch.equal(logits, stored.logits("test")[0]):
            warnings.warn(f"{config.regime} seed {config.seed}: trained again with {recorder.key}, the run's "
                          f"test logits differ from the stored run's (other code, thread count or machine); "
                          f"the records describe the retrained run")
        records = fresh.records()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(records, tmp)
        tmp.replace(path)
        for checkpoint in workdir.glob("*.ckpt"):  # done: nothing to resume
            checkpoint.unlink()
    return records


__all__ = ["GradientRecorder", "SnapshotRecorder", "recorded"]
