"""The three training phases and the regimes built from them (STUDY.md §2).

=========  ======================================  =================================
phase      trains                                  monitored by early stopping
=========  ======================================  =================================
backbone   backbone and its final classifier       the final exit
joint      backbone and every head                 every exit
heads      the heads only (backbone frozen, eval)  every head
=========  ======================================  =================================

Regimes: disjoint = backbone → heads, joint = joint, mixed = backbone → joint (fresh heads on
the phase-1 weights). A phase trains up to its epoch cap with early stopping on the validation
split: one stopper per monitored exit, a checkpoint whenever any of them improves, a stop once
all have gone ``patience`` epochs without improving, and the phase ends on that checkpoint.

Every epoch writes a resumable checkpoint (model, optimiser, scheduler, stoppers, history, and
the state of every global random generator: torch's on the CPU and on each GPU, Python's and
NumPy's); a phase started again with the same checkpoint path continues where it stopped and ends
bit-identical to an uninterrupted run, because each epoch's data order and augmentation depend
only on the seed and the epoch, and what else draws at random (dropout) continues from the
generators' state at the checkpoint.
"""

from __future__ import annotations

import copy
import errno
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import hardware
from .checkpoints import (CheckpointWriteError, DamagedCheckpointWarning, random_state, read_checkpoint, restore_random_state,
                          write_checkpoint)
from .config import BACKBONE_ALONE, PhaseConfig, RunConfig
from .data import dataset_spec
from .device_data import DeviceData, memory_format_for
from .methods import Method, StepRule, TrainingDiverged, cross_entropy_per_exit, get_method
from .models import ContextHead, ExitContext, MultiExitModel, arch_spec

FREEZE_MODE = {"backbone": "backbone", "continue": "backbone", "joint": "all", "heads": "heads"}


# --- the model -----------------------------------------------------------------------------

def build_model(config: RunConfig, device: str | torch.device = "cpu") -> MultiExitModel:
    """The run's model on ``device`` in its layout there, with the heads of its method,
    initialised from its seed. The backbone and the heads draw from separate seeds (the heads'
    ``seed + 1,000,000 × (1 + config.head_init)``), so a backbone's initialisation does
    not depend on its heads and every regime of a seed starts from the same weights."""
    spec = dataset_spec(config.dataset)
    torch.manual_seed(config.seed)
    backbone = arch_spec(config.arch).build(spec.num_classes, spec.channels, spec.image_size, config.final_head)
    torch.manual_seed(config.seed + 1_000_000 * (1 + config.head_init))
    features = [backbone.feature_info[b - 1] for b in config.exit_after_blocks]
    method = get_method(config.method)
    heads = method.build_heads(features, config.head_kind, spec.num_classes)
    model = MultiExitModel(backbone, config.exit_after_blocks, config.head_kind, spec.num_classes, heads,
                           method.gradient_scales(len(heads) + 1))
    return model.to(device, memory_format=memory_format_for(config, device))


def compile_for_training(model: MultiExitModel, config: RunConfig, device: torch.device) -> str:
    """Compile ``model``'s pieces in place as ``config.compile`` resolves on ``device``
    (:func:`mexlib.hardware.step_mode`) and return the mode. Each piece the training step calls
    (the stem, every block, the final classifier, every head that reads only its block's output)
    is compiled on its own (``nn.Module.compile``): the methods call them in their own orders
    (heads alone, the backbone alone, ZTW's stacked heads), parameters keep their names in the
    state dict, and an early exit still stops the computation at its block. ``"reduce-overhead"``
    replays each piece as a CUDA graph."""
    mode = hardware.step_mode(config.compile, device, arch_spec(config.arch).layout)
    if mode == "eager":
        return mode
    backbone = model.backbone
    pieces = [backbone.stem, *backbone.blocks, backbone.classifier,
              *(h for h in model.heads if not isinstance(h, ContextHead))]
    for piece in pieces:
        piece.compile(mode="reduce-overhead" if mode == "reduce-overhead" else "default")
    return mode


# --- early stopping ------------------------------------------------------------------------

class EarlyStopping:
    """One stopper per monitored exit on validation accuracy."""

    def __init__(self, num_exits: int, patience: int | None):
        self.patience = patience
        self.best = [-math.inf] * num_exits
        self.since_best = [0] * num_exits

    def update(self, accuracies: list[float]) -> bool:
        """Record one check; True when some exit improved (time to checkpoint)."""
        improved = False
        for i, acc in enumerate(accuracies):
            if acc > self.best[i]:
                self.best[i], self.since_best[i] = acc, 0
                improved = True
            else:
                self.since_best[i] += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and all(s >= self.patience for s in self.since_best)

    def state_dict(self) -> dict:
        return {"best": list(self.best), "since_best": list(self.since_best)}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.since_best = list(state["best"]), list(state["since_best"])


# --- one phase -----------------------------------------------------------------------------

@dataclass
class PhaseResult:
    phase: str
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int | None = None
    stopped_early: bool = False
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        return dict(phase=self.phase, history=self.history, best_epoch=self.best_epoch,
                    stopped_early=self.stopped_early, wall_time=self.wall_time)


def make_optimizer(params, phase: PhaseConfig) -> torch.optim.Optimizer:
    if phase.optimizer == "sgd":
        return torch.optim.SGD(params, lr=phase.lr, momentum=phase.momentum,
                               weight_decay=phase.weight_decay)
    return torch.optim.AdamW(params, lr=phase.lr, weight_decay=phase.weight_decay)


def make_scheduler(optimizer, phase: PhaseConfig, steps_per_epoch: int):
    """Linear warm-up, then cosine annealing to zero (or constant), stepped every batch."""
    warmup = phase.warmup_epochs * steps_per_epoch
    total = max(1, phase.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if phase.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _exit_outputs(model: MultiExitModel, phase: str, x: Tensor) -> ExitContext:
    """What a phase's losses read: the forward pass's heads' own logits (not the inference
    outputs), or in phase 1 the plain backbone's logits alone."""
    if phase in BACKBONE_ALONE:
        return ExitContext(model.heads, logits=[model.backbone_only(x)])
    return model.forward_context(x, outputs=False)


def _monitored(model: MultiExitModel, phase: str) -> list[int]:
    """Exit indices whose validation accuracy early stopping watches."""
    if phase in BACKBONE_ALONE:
        return [0]  # the only output in phase 1 is the final exit
    if phase == "heads":
        return list(range(model.num_exits - 1))
    return list(range(model.num_exits))


def _exit_losses(method: Method, phase: str, context: ExitContext, labels: Tensor) -> Tensor:
    # Phase 1 trains a plain backbone: plain cross-entropy, whatever the method.
    if phase in BACKBONE_ALONE:
        return cross_entropy_per_exit(context.logits, labels)
    return method.exit_losses(context, labels)


class BackboneStep(StepRule):
    """Phase 1: the plain backbone's cross-entropy, whatever the method."""

    def loss(self, model, x, y, autocast, lr):
        with autocast:
            logits = model.backbone_only(x)
        exit_losses = cross_entropy_per_exit([logits], y)
        return exit_losses[0], exit_losses


def step_rule(model: MultiExitModel, phase: str, method: Method, steps_per_epoch: int,
              epochs: int) -> StepRule:
    """The per-batch loss computation of ``phase``: the method's own, except in phase 1 (and
    the backbone's continuation)."""
    if phase in BACKBONE_ALONE:
        return BackboneStep(method)
    return method.step_rule(model, phase, steps_per_epoch, epochs)


def autocast_for(device: torch.device, precision: str):
    """The forward passes' autocast context: bfloat16 when ``precision`` is ``"bf16"`` and the
    device computes it natively, otherwise disabled (:func:`mexlib.hardware.training_precision`)."""
    precision = hardware.training_precision(precision, device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def training_loss(model: MultiExitModel, phase: str, x: Tensor, y: Tensor, method: Method,
                  autocast, lr: float = 0.0) -> tuple[Tensor, Tensor]:
    """One batch's loss to backpropagate in ``phase``, and each exit's loss, by a fresh
    :class:`mexlib.methods.StepRule`. Meant for stateless rules (checks and benchmarks): a
    stateful rule (L2W's) starts afresh on every call; training keeps one per phase
    (:func:`train_phase`)."""
    return step_rule(model, phase, method, 1, 1).loss(model, x, y, autocast, lr)


@torch.no_grad()
def _validate(model, phase, loader, method, autocast, graphs: bool = False) -> tuple[list[float], list[float]]:
    model.eval()
    correct, losses, n = None, None, 0
    for x, y in loader:
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            outs = _exit_outputs(model, phase, x)
        batch_correct = torch.stack([(o.argmax(1) == y).sum() for o in outs.logits])
        batch_loss = _exit_losses(method, phase, outs, y) * len(y)
        correct = batch_correct if correct is None else correct + batch_correct
        losses = batch_loss if losses is None else losses + batch_loss
        n += len(y)
    return (correct.double() / n).tolist(), (losses / n).tolist()


def train_phase(model: MultiExitModel, phase: str, settings: PhaseConfig, data: DeviceData,
                method: Method, device: torch.device, checkpoint: Path | None = None,
                progress: bool = True, description: str = "", precision: str = "fp32",
                recorder=None, step_mode: str = "eager") -> PhaseResult:
    """Train one phase in place and leave ``model`` at the phase's best checkpoint.

    ``precision="bf16"`` runs forward passes under bfloat16 autocast (losses in float32) where
    the device has native bf16, and falls back to fp32 with a warning elsewhere.

    ``recorder`` (:mod:`mexlib.analysis.recording`) observes training without changing it: its
    ``on_step(model, phase, epoch, step, exit_losses)`` sees each batch's exit losses before the
    backward pass, its ``on_epoch_end(model, phase, epoch)`` the model after each epoch. Its
    state is saved in the phase's checkpoints, so a resumed phase keeps what it recorded.

    ``step_mode``: what :func:`compile_for_training` made of the model; under
    ``"reduce-overhead"`` every step tells the CUDA graphs a new iteration begins (the last
    one's outputs may then be overwritten), which a step reading last step's tensors would break."""
    model.set_freeze_mode(FREEZE_MODE[phase])
    result = PhaseResult(phase)
    if settings.epochs == 0:
        return result
    loader = data.train_loader(phase, settings.batch_size)
    optimizer = make_optimizer(model.trainable_parameters(), settings)
    scheduler = make_scheduler(optimizer, settings, len(loader))
    monitored = _monitored(model, phase)
    stopper = EarlyStopping(len(monitored), settings.patience)
    rule = step_rule(model, phase, method, len(loader), settings.epochs)
    best_state = copy.deepcopy(model.state_dict())
    start_epoch = 0
    state = _read_checkpoint(checkpoint, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["stopper"])
        rule.load_state_dict(state.get("step_rule", {}))
        if recorder is not None:
            recorder.load_state_dict(state.get("recorder", {}))
        best_state, start_epoch = state["best_state"], state["epoch"] + 1
        result = PhaseResult(**state["result"])
        restore_random_state(state["random"])
    autocast = autocast_for(device, precision)
    bar = tqdm(total=settings.epochs, initial=start_epoch, disable=not progress, leave=True,
               desc=f"{description}{phase}", unit="epoch", dynamic_ncols=True)
    for epoch in range(start_epoch, settings.epochs):
        if stopper.should_stop:
            break
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the rate the epoch starts with
        loader.set_epoch(epoch)
        model.train()
        loss_sum, seen = None, 0
        for step, (x, y) in enumerate(loader):
            if step_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            loss, exit_losses = rule.loss(model, x, y, autocast, optimizer.param_groups[0]["lr"])
            if recorder is not None:
                recorder.on_step(model, phase, epoch, step, exit_losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            batch = exit_losses.detach() * len(y)
            loss_sum = batch if loss_sum is None else loss_sum + batch
            seen += len(y)
        train_loss = (loss_sum / seen).tolist()
        _check_finite(train_loss, phase, epoch, model.num_exits)
        val_acc, val_loss = _validate(model, phase, data.eval_loader("val"), method, autocast,
                                      step_mode == "reduce-overhead")
        _check_finite(val_loss, phase, epoch, model.num_exits, "validation loss")
        result.history.append(dict(epoch=epoch, lr=lr,
                                   train_loss=train_loss, val_loss=val_loss, val_acc=val_acc,
                                   seconds=time.perf_counter() - started))
        result.wall_time += time.perf_counter() - started
        if stopper.update([val_acc[i] for i in monitored]):
            best_state, result.best_epoch = copy.deepcopy(model.state_dict()), epoch
        result.stopped_early = stopper.should_stop and epoch + 1 < settings.epochs
        if recorder is not None:
            recorder.on_epoch_end(model, phase, epoch)
        if checkpoint is not None:
            _save_checkpoint(dict(epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                  scheduler=scheduler.state_dict(), stopper=stopper.state_dict(),
                                  step_rule=rule.state_dict(), best_state=best_state,
                                  result=result.to_dict(), random=random_state(),
                                  recorder=recorder.state_dict() if recorder is not None else {}),
                             checkpoint, f"{description}{phase}, epoch {epoch}")
        bar.update(1)
        bar.set_postfix_str(_progress_text(train_loss, val_acc))
    bar.close()
    model.load_state_dict(best_state)
    return result


#: What every checkpoint of a phase holds; one without them is not resumed.
CHECKPOINT_FIELDS = ("epoch", "model", "optimizer", "scheduler", "stopper", "step_rule", "best_state",
                     "result", "random", "recorder")


def _save_checkpoint(state: dict, checkpoint: Path, what: str) -> None:
    """Write one epoch's checkpoint (:func:`mexlib.checkpoints.write_checkpoint`); a failure (a
    full disk, a read-only folder) names the phase, the epoch and the file, and keeps the
    previous checkpoint."""
    try:
        write_checkpoint(state, checkpoint)
    except OSError as error:
        raise CheckpointWriteError(error.errno or errno.EIO,
                                   f"could not write the checkpoint of {what} to {checkpoint}: "
                                   f"{error.strerror or error} (the previous checkpoint is kept)") from error


def _read_checkpoint(checkpoint: Path | None, device: torch.device) -> dict | None:
    """The phase's checkpoint, or None (the phase starts afresh): none yet, or one that is
    damaged, cut short, foreign or incomplete, which is named in a warning."""
    if checkpoint is None or not checkpoint.is_file():
        return None
    try:
        state = read_checkpoint(checkpoint, map_location=device)
        missing = [f for f in CHECKPOINT_FIELDS if not isinstance(state, dict) or f not in state]
        if missing:
            raise ValueError(f"it lacks {', '.join(missing)}")
        return state
    except Exception as error:  # damaged, truncated, foreign: start the phase afresh
        warnings.warn(f"cannot resume from the checkpoint {checkpoint} ({type(error).__name__}: {error}); "
                      f"training the phase from its start", DamagedCheckpointWarning)
        return None


def _check_finite(losses: list[float], phase: str, epoch: int, num_exits: int, what: str = "loss") -> None:
    """Stop a phase whose training ``loss`` (or ``validation loss``: the model's logits on held-out
    data) is NaN or infinite, naming the phase, the epoch and the exit."""
    for i, value in enumerate(losses):
        if not math.isfinite(value):
            exit_name = "the final exit" if phase in BACKBONE_ALONE or i == num_exits - 1 else f"exit {i}"
            raise TrainingDiverged(f"training diverged in phase {phase!r}, epoch {epoch}: the {what} of "
                                   f"{exit_name} is {value}; lower the learning rate or check the data")


def _progress_text(train_loss: list[float], val_acc: list[float]) -> str:
    losses = " ".join(f"{v:.2f}" for v in train_loss)
    accs = " ".join(f"{100 * v:.1f}" for v in val_acc)
    return f"loss [{losses}] val% [{accs}]"


# --- regimes ---------------------------------------------------------------------------------

def train_backbone(config: RunConfig, data: DeviceData, device: torch.device,
                   workdir: Path | None = None, progress: bool = True,
                   recorder=None) -> tuple[MultiExitModel, PhaseResult]:
    """Phase 1: the plain backbone with its own classifier (shared by disjoint and mixed);
    ``recorder`` observes it (:func:`train_phase`)."""
    model = build_model(config, device)
    step = compile_for_training(model, config, device)
    with hardware.deterministic_kernels(device, config.deterministic):
        result = train_phase(model, "backbone", config.backbone_phase, data, get_method(config.method),
                             device, _checkpoint(workdir, "backbone"), progress, f"seed {config.seed} ",
                             config.precision, recorder, step)
    return model, result


def train_regime(config: RunConfig, data: DeviceData, device: torch.device,
                 backbone_state: dict | None = None, workdir: Path | None = None,
                 progress: bool = True, recorder=None) -> tuple[MultiExitModel, list[PhaseResult]]:
    """The phases after phase 1: joint from scratch, or heads / joint on a trained backbone
    (``backbone_state``: the backbone's state dict from :func:`train_backbone`); ``recorder``
    observes them (:func:`train_phase`)."""
    model = build_model(config, device)
    phases = [p for p in config.phases if p != "backbone"]
    if "backbone" in config.phases:
        if backbone_state is None:
            raise ValueError(f"the {config.regime} regime starts from a trained backbone; "
                             f"pass backbone_state from train_backbone")
        model.backbone.load_state_dict(backbone_state)
    method = get_method(config.method)
    step = compile_for_training(model, config, device)
    with hardware.deterministic_kernels(device, config.deterministic):
        results = [train_phase(model, p, config.phase(p), data, method, device, _checkpoint(workdir, p),
                               progress, f"seed {config.seed} {config.regime} ", config.precision, recorder, step)
                   for p in phases]
        for stage in method.stages():  # e.g. ZTW's ensembles, trained after the heads
            record = stage.run(model, data, device, progress)
            results.append(PhaseResult(stage.name, record["history"], record.get("best_epoch"),
                                       wall_time=record.get("wall_time", 0.0)))
    model.set_freeze_mode("all")
    return model, results


def _checkpoint(workdir: Path | None, phase: str) -> Path | None:
    if workdir is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir / f"{phase}.ckpt"
