"""The interface every early-exit method implements, and the registry of methods.

A method (STUDY.md §4) decides these things, each a plug-in point of :class:`Method`:

- **heads**: :meth:`Method.build_heads` builds one head per exit before the last. Plain heads
  are called on the block output alone; heads that read earlier exits (a cascade, past states)
  subclass :class:`mexlib.models.ContextHead` and receive the forward pass's
  :class:`mexlib.models.ExitContext`.
- **loss**: :meth:`Method.exit_losses` gives each exit's loss on the heads' own logits and
  :meth:`Method.combine` the loss to backpropagate (it may read the context, e.g. GPF's
  imitation terms). :meth:`Method.step_rule` may replace the whole per-batch loss computation
  with a stateful rule (L2W's meta-learned sample weights); the trainer only calls it.
- **backward rescaling** at the exits' branch points (:meth:`Method.gradient_scales`:
  gradient equilibrium).
- **extra training stages** after the regime's phases (:meth:`Method.stages`: ZTW's ensembles).
- **inference**: what each exit outputs (a head's :meth:`ContextHead.exit_output`) and the exit
  ``policy`` of :mod:`mexlib.evaluate` that runs on those outputs.

Phase 1 (the plain backbone) never involves the method, so one trained backbone per seed
serves every method's disjoint and mixed runs. A method without training of its own names the
method whose runs it reads (``trains_as``; PBEE reads SDN's).

A run's key holds the method's name, not its settings: a variant with other settings is a new
name (``variant = GPF(state_dim=64); variant.name = "gpf-64"; register(variant)``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import ExitContext, FeatureInfo, build_head
from ..registry import lookup


def cross_entropy_per_exit(logits: list[Tensor], labels: Tensor) -> Tensor:
    """Each exit's mean cross-entropy, ``[num_exits]``, computed in float32."""
    return torch.stack([F.cross_entropy(out.float(), labels) for out in logits])


def cross_entropy_per_sample(logits: list[Tensor], labels: Tensor) -> Tensor:
    """Each sample's cross-entropy at each exit, ``[batch, num_exits]``, in float32."""
    return torch.stack([F.cross_entropy(out.float(), labels, reduction="none") for out in logits], 1)


class StepRule:
    """How one training batch becomes the loss to backpropagate, for one phase.

    The default runs the model and asks the method for its loss. A method that needs state
    across batches (L2W's weight network and its optimiser) returns its own rule; the trainer
    saves :meth:`state_dict` in every checkpoint, so a resumed phase continues exactly.
    """

    def __init__(self, method: "Method"):
        self.method = method

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, autocast, lr: float) -> tuple[Tensor, Tensor]:
        """The loss to backpropagate and each exit's loss (``[num_exits]``, for the history)."""
        with autocast:
            context = model.forward_context(x, outputs=False)
        exit_losses = self.method.exit_losses(context, y)
        return self.combine(exit_losses, context), exit_losses

    def combine(self, exit_losses: Tensor, context: ExitContext) -> Tensor:
        """This batch's loss from the exits' losses: the method's, unless the rule weights them
        by its own state (SDN's ramp over epochs)."""
        return self.method.combine(exit_losses, context)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TrainingDiverged(RuntimeError):
    """A loss or the logits became NaN or infinite; the message names the phase (or stage),
    the epoch and the exit."""


class Stage:
    """A training stage a method runs after the regime's phases (ZTW's ensembles).

    ``run(model, data, device, progress)`` trains in place and returns the stage's record:
    ``{"history": [rows], "best_epoch": ..., "wall_time": seconds}``; ``data`` is the run's
    :class:`mexlib.train.DeviceData`.
    """

    name = "stage"

    def run(self, model: nn.Module, data, device: torch.device, progress: bool = True) -> dict:
        raise NotImplementedError  # pragma: no cover - interface


class Method:
    """An early-exit method: SDN's behaviour unless a subclass overrides a plug-in point."""

    name: str = ""
    description: str = ""
    #: the exit policy of :mod:`mexlib.evaluate` that runs on the exits' outputs
    policy: str = "confidence"
    #: a method with no training of its own reads the runs of this method instead
    trains_as: str | None = None

    def build_heads(self, features: Sequence[FeatureInfo], head_kind: str, num_classes: int) -> nn.ModuleList:
        """One head per exit before the last, for the block outputs ``features``."""
        return nn.ModuleList(build_head(head_kind, feature, num_classes) for feature in features)

    def exit_losses(self, context: ExitContext, labels: Tensor) -> Tensor:
        """Each exit's loss, ``[num_exits]``: the mean cross-entropy of its head's logits."""
        return cross_entropy_per_exit(context.logits, labels)

    def combine(self, exit_losses: Tensor, context: ExitContext) -> Tensor:
        """The training loss: the plain mean over exits, the final one included (as the
        reference code does for SDN)."""
        return exit_losses.mean()

    def step_rule(self, model: nn.Module, phase: str, steps_per_epoch: int, epochs: int) -> StepRule:
        """The per-batch loss computation of a phase that trains heads (joint or heads)."""
        return StepRule(self)

    def stages(self) -> Sequence[Stage]:
        """Training stages after the regime's phases."""
        return ()

    def gradient_scales(self, num_exits: int) -> list[tuple[float, float]] | None:
        """Backward factors ``(to the head, to the later blocks)`` at each exit's branch point
        (:class:`mexlib.models.MultiExitModel`), or None for plain backpropagation."""
        return None

    def __repr__(self) -> str:
        return f"<method {self.name}: {self.description}>"


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` under its name (a new method is one such call)."""
    if not method.name:
        raise ValueError("a method needs a name")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    return lookup(METHODS, name, "method")


def training_method(name: str) -> str:
    """The method whose runs ``name`` reads: itself, or its ``trains_as``."""
    return get_method(name).trains_as or name


__all__ = ["METHODS", "Method", "Stage", "StepRule", "cross_entropy_per_exit", "cross_entropy_per_sample",
           "get_method", "register", "training_method"]
