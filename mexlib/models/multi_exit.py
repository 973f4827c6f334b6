"""The multi-exit wrapper: a backbone, heads after some of its blocks, and freeze modes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .backbones import Backbone
from .heads import build_head
from ..registry import check

#: What trains in each freeze mode (STUDY.md §2): phase 1 trains the backbone with its own
#: classifier, phase 2 everything, phase 3 the heads only.
TRAINABLE = {
    "backbone": ("backbone",),
    "all": ("backbone", "heads"),
    "heads": ("heads",),
}


def check_exit_placement(blocks: tuple[int, ...], num_blocks: int) -> None:
    """Raise unless ``blocks`` are increasing block numbers in 1..num_blocks-1 (at least one:
    the backbone's own classifier is the last exit, so a head after the last block repeats it)."""
    if not blocks or list(blocks) != sorted(set(blocks)) or blocks[0] < 1 or blocks[-1] >= num_blocks:
        raise ValueError(f"exit_after_blocks must be increasing block numbers in 1..{num_blocks - 1} "
                         f"(the backbone has {num_blocks} blocks; its own classifier is the last "
                         f"exit), got {tuple(blocks)}")


@dataclass
class ExitContext:
    """What one forward pass has computed so far, for heads that read earlier exits.

    ``logits`` are the heads' own outputs in depth order (what the training losses use);
    ``outputs`` the exits' inference outputs (the same tensors, except for methods that combine
    heads at inference, such as ZTW's ensembles); ``states`` and ``extras`` hold whatever a
    method's heads keep per exit (GPF's hidden states) or hand to its loss (GPF's imitations).
    """

    heads: nn.ModuleList
    logits: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    states: list = field(default_factory=list)
    extras: dict = field(default_factory=dict)


class ContextHead(nn.Module):
    """Base of heads that read earlier exits (ZTW's cascade, GPF's past states).

    ``forward(x, context)`` returns the head's logits for the block output ``x`` and may read
    and extend ``context``; ``exit_output(context)`` is the exit's inference output once this
    head's logits are in ``context.logits`` (by default those logits). Plain heads are called
    with ``x`` alone.
    """

    def forward(self, x: Tensor, context: ExitContext) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def exit_output(self, context: ExitContext) -> Tensor:
        return context.logits[-1]


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; the backward multiplies the gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def scale_gradient(x: Tensor | list[Tensor], scale: float) -> Tensor | list[Tensor]:
    """``x`` unchanged, with its gradient multiplied by ``scale`` on the way back; a list of
    tensors (MSDNet's scales) has each of them scaled."""
    if scale == 1:
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(_ScaleGradient.apply(t, scale) for t in x)
    return _ScaleGradient.apply(x, scale)


class MultiExitModel(nn.Module):
    """A backbone with internal classifiers after the blocks ``exit_after_blocks`` (numbered
    from 1); the backbone's own classifier is the last exit.

    ``forward`` returns every exit's inference output in depth order; ``forward_until(x, k)``
    computes only what exit ``k`` (from 0) needs; ``forward_context`` returns the whole
    :class:`ExitContext` (the heads' own logits and what a method's loss needs);
    ``backbone_only`` is the plain backbone.

    ``heads`` (one module per exit before the last) replaces the heads of ``head_kind``: an
    early-exit method builds its own (:meth:`mexlib.methods.Method.build_heads`).
    ``gradient_scales``, one ``(to the head, to the later blocks)`` pair per exit before the
    last, rescales the backward pass at each exit's branch point (the forward pass is
    unchanged; gradient equilibrium, :mod:`mexlib.methods.weighting`). A block's output is a
    tensor, or for MSDNet a list of tensors, one per scale; each of them is rescaled.
    """

    def __init__(self, backbone: Backbone, exit_after_blocks: tuple[int, ...], head_kind: str,
                 num_classes: int, heads: nn.ModuleList | None = None,
                 gradient_scales: list[tuple[float, float]] | None = None):
        super().__init__()
        blocks = tuple(exit_after_blocks)
        check_exit_placement(blocks, backbone.num_blocks)
        self.backbone = backbone
        self.exit_after_blocks = blocks
        if heads is None:
            heads = nn.ModuleList(build_head(head_kind, backbone.feature_info[b - 1], num_classes)
                                  for b in blocks)
        if len(heads) != len(blocks):
            raise ValueError(f"{len(heads)} heads given for {len(blocks)} exits before the last")
        self.heads = heads
        if gradient_scales is not None and len(gradient_scales) != len(blocks):
            raise ValueError(f"{len(gradient_scales)} gradient scales given for {len(blocks)} exits before the last")
        self.gradient_scales = None if gradient_scales is None else [tuple(map(float, s)) for s in gradient_scales]
        self.freeze_mode = "all"

    @property
    def num_exits(self) -> int:
        return len(self.heads) + 1

    # --- forward passes ------------------------------------------------------------------

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.forward_until(x, self.num_exits - 1)

    def forward_until(self, x: Tensor, k: int) -> list[Tensor]:
        """Inference outputs of exits ``0..k``, computing the blocks up to exit ``k`` and no
        further."""
        return self.forward_context(x, k).outputs

    def forward_context(self, x: Tensor, k: int | None = None, outputs: bool = True) -> ExitContext:
        """Run up to exit ``k`` (default: the last) and return everything computed on the way.
        ``outputs=False`` skips the inference outputs where they differ from the heads' logits
        (training reads only the logits; ``context.outputs`` is then left empty)."""
        k = self.num_exits - 1 if k is None else k
        if not 0 <= k < self.num_exits:
            raise ValueError(f"exit index must lie in 0..{self.num_exits - 1}, got {k}")
        context = ExitContext(self.heads)
        last_block = self.exit_after_blocks[k] if k < len(self.heads) else self.backbone.num_blocks
        rescale = self.gradient_scales is not None and torch.is_grad_enabled()
        x = self.backbone.stem(x)
        for number, block in enumerate(self.backbone.blocks[:last_block], start=1):
            x = block(x)
            if number in self.exit_after_blocks:
                index = self.exit_after_blocks.index(number)
                head = self.heads[index]
                branch = x
                if rescale:
                    to_head, to_trunk = self.gradient_scales[index]
                    branch, x = scale_gradient(x, to_head), scale_gradient(x, to_trunk)
                reads_context = isinstance(head, ContextHead)
                context.logits.append(head(branch, context) if reads_context else head(branch))
                if outputs:
                    context.outputs.append(head.exit_output(context) if reads_context else context.logits[-1])
        if k == self.num_exits - 1:
            context.logits.append(self.backbone.classifier(x))
            if outputs:
                context.outputs.append(context.logits[-1])
        return context

    def backbone_only(self, x: Tensor) -> Tensor:
        """The plain backbone's logits: no head is evaluated (phase 1, the cost reference)."""
        return self.backbone(x)

    # --- freezing ------------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by declared group: the backbone (with its final classifier) and the heads."""
        return {"backbone": list(self.backbone.parameters()), "heads": list(self.heads.parameters())}

    def set_freeze_mode(self, mode: str) -> "MultiExitModel":
        """Choose what trains: ``"backbone"`` (phase 1), ``"all"`` (phase 2) or ``"heads"``
        (phase 3: the backbone and its classifier are frozen and the backbone stays in eval
        mode, so its BatchNorm statistics never change, also after ``.train()``)."""
        check(mode, TRAINABLE, "freeze mode", "modes")
        self.freeze_mode = mode
        for group, params in self.parameter_groups().items():
            for p in params:
                p.requires_grad_(group in TRAINABLE[mode])
        return self.train(self.training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "MultiExitModel":
        super().train(mode)
        if self.freeze_mode == "heads":
            self.backbone.eval()
        return self


@torch.no_grad()
def exit_logits(model: MultiExitModel, batches, raw: bool = False) -> tuple[Tensor, Tensor]:
    """Every exit's logits over an iterable of (images, labels): ``[K, N, C]`` and ``[N]``,
    in float32 on the CPU; the inference outputs, or with ``raw`` the heads' own logits
    (they differ where a method combines heads at inference, as ZTW's ensembles do)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in batches:
        context = model.forward_context(x, outputs=not raw)
        logits.append(torch.stack(context.logits if raw else context.outputs).float().cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(logits, dim=1), torch.cat(labels)
