"""What an analysis needs from inside training, recorded without changing it.

- :class:`GradientRecorder`: every ``every`` steps of a phase that trains the heads, the norm of
  the gradient that each exit's loss *alone* sends to each backbone block's parameters (the stem
  as block 0), and to the heads. It differentiates the batch's exit losses with
  ``torch.autograd.grad`` on the step's own graph (kept for the step's backward pass), which
  neither accumulates into ``.grad`` nor draws random numbers, so the run trains exactly as it
  would without it (tested: the same logits, bit for bit).
- :class:`SnapshotRecorder`: the model's weights after every epoch, phase 1 included, for
  analyses over training (ranks, mutual information).

:func:`recorded` trains a stored run's configuration again with one or several recorders (one
training for all) and keeps the records in the store (entries ``records-<run key>-<recorder>``, and
``records-backbone-<key>-<recorder>`` for phase 1, which the disjoint and mixed runs of a seed
share): a run's key does not include what was recorded, because recording does not change the
run. Where the run is stored, the retrained model is compared with it; a difference (other
code, another machine) is reported.
"""

from __future__ import annotations

import copy
import warnings

import pandas as pd
import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..models import exit_logits
from ..store import RunStore, backbone_key, run_key
from ..train import train_backbone, train_regime


def _block_parameters(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    backbone = model.backbone
    groups = [("0 stem", list(backbone.stem.parameters()))]
    groups += [(f"{i} block", list(block.parameters())) for i, block in enumerate(backbone.blocks, start=1)]
    groups.append(("heads", list(model.heads.parameters())))
    return [(name, params) for name, params in groups if params]


def block_parameter_counts(model: nn.Module) -> dict[str, int]:
    """The parameters of each backbone block, by the names the records give the blocks (the
    stem as ``"0 stem"``, then ``"<i> block"``)."""
    return {name: sum(p.numel() for p in params) for name, params in _block_parameters(model) if name != "heads"}


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

    def __init__(self, phases: tuple[str, ...] = ("backbone", "joint", "heads")):
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


class _Fanout:
    """Several recorders observing one training run."""

    def __init__(self, recorders):
        self.recorders = list(recorders)

    def on_step(self, *args) -> None:
        for recorder in self.recorders:
            recorder.on_step(*args)

    def on_epoch_end(self, *args) -> None:
        for recorder in self.recorders:
            recorder.on_epoch_end(*args)

    def state_dict(self) -> dict:
        return {"recorders": {r.key: r.state_dict() for r in self.recorders}}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("recorders", {})
        for recorder in self.recorders:
            recorder.load_state_dict(saved.get(recorder.key, {}))


def _join(parts: list, recorder):
    """One recorder's records of phase 1 and of the later phases, in training order."""
    if not parts:
        return copy.deepcopy(recorder).records()  # nothing it records in this regime
    if isinstance(parts[0], pd.DataFrame):
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return [item for part in parts for item in part]


def recorded(store: RunStore, config: RunConfig, recorder, progress: bool = False):
    """The records of ``recorder`` (or of each of a list of recorders) for ``config``'s run:
    read from the store, or made by training the run once more with every recorder whose
    records are missing (one training for all of them), kept through the store's one API
    (:meth:`mexlib.store.RunStore.keep`: atomic, with a manifest).

    Phase 1 (the backbone alone, shared by the disjoint and mixed runs of a seed) is recorded
    once per backbone, in entries ``records-backbone-<key>-<recorder>``, for recorders that list the
    ``"backbone"`` phase; the later phases of a run in ``records-<run key>-<recorder>``, starting from
    the stored phase-1 backbone. A recorder's records are those of phase 1 followed by those
    of the later phases. A retrained model that differs from the stored one is reported."""
    single = not isinstance(recorder, (list, tuple))
    recorders = [recorder] if single else list(recorder)
    if len({r.key for r in recorders}) < len(recorders):
        raise ValueError("two recorders with one key: " + ", ".join(r.key for r in recorders))
    config = store.resolve(config)
    later = {p for p in config.phases if p != "backbone"}
    parts: dict[str, list] = {r.key: [] for r in recorders}
    if "backbone" in config.phases:
        first = [r for r in recorders if "backbone" in r.phases]
        for r, records in zip(first, _records(store, config, first, True, progress)):
            parts[r.key].append(records)
    rest = [r for r in recorders if later & set(r.phases)]
    for r, records in zip(rest, _records(store, config, rest, False, progress)):
        parts[r.key].append(records)
    results = [_join(parts[r.key], r) for r in recorders]
    return results[0] if single else results


def _records(store: RunStore, config: RunConfig, recorders: list, phase1: bool, progress: bool) -> list:
    """The records of phase 1 (``phase1``) or of the later phases, training once for the missing."""
    if not recorders:
        return []
    key = f"backbone-{backbone_key(config)}" if phase1 else run_key(config)
    entries = [f"records-{key}-{r.key}" for r in recorders]
    found = [store.kept(entry, of_code=True) for entry in entries]
    missing = [r for r, f in zip(recorders, found) if f is None]
    if missing:
        name = f"records-{key}-{'+'.join(sorted(r.key for r in missing))}"  # one resumable training
        backbone = None
        if not phase1 and "backbone" in config.phases:
            backbone = store.get_or_run_backbone(config).state_dict()
        stored = store.find_backbone(config) if phase1 else store.find(config)  # not trained for this
        with store.training(name) as workdir:
            entry_of = dict(zip((r.key for r in recorders), entries))
            missing = [r for r in missing if store.kept(entry_of[r.key], of_code=True) is None]  # another's?
            if missing:
                fresh = [copy.deepcopy(r) for r in missing]
                data = store.device_data(config)
                if phase1:
                    model, _ = train_backbone(config, data, store.device, workdir, progress, recorder=_Fanout(fresh))
                    reference = stored.state_dict() if stored is not None else None
                    same = reference is None or all(torch.equal(value, reference[part])
                                                    for part, value in model.backbone.state_dict().items())
                else:
                    model, _ = train_regime(config, data, store.device, backbone, workdir, progress,
                                            recorder=_Fanout(fresh))
                    logits, _ = exit_logits(model, data.eval_loader("test"))
                    same = stored is None or torch.equal(logits, stored.logits("test")[0])
                if not same:
                    what = "phase-1 backbone" if phase1 else f"{config.regime} run"
                    warnings.warn(f"seed {config.seed}: the {what}, trained again to record "
                                  f"{', '.join(r.key for r in missing)}, differs from the stored one "
                                  f"(other code, thread count or machine); the records describe the "
                                  f"retrained one")
                for r in fresh:
                    store.keep(f"records-{key}-{r.key}", {"records.pt": r.records()}, of_code=True)
                for checkpoint in workdir.glob("*.ckpt"):  # done: nothing to resume
                    checkpoint.unlink()
    found = [f if f is not None else store.kept(entry, of_code=True) for f, entry in zip(found, entries)]
    return [f["records.pt"] for f in found]


__all__ = ["GradientRecorder", "SnapshotRecorder", "block_parameter_counts", "recorded"]
