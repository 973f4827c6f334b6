"""The multi-exit wrapper: a backbone, heads after some of its blocks, and freeze modes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbones import Backbone
from .heads import build_head

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


class MultiExitModel(nn.Module):
    """A backbone with internal classifiers after the blocks ``exit_after_blocks`` (numbered
    from 1); the backbone's own classifier is the last exit.

    ``forward`` returns every exit's logits in depth order; ``forward_until(x, k)`` computes
    only what exit ``k`` (from 0) needs; ``backbone_only`` is the plain backbone.
    """

    def __init__(self, backbone: Backbone, exit_after_blocks: tuple[int, ...], head_kind: str,
                 num_classes: int):
        super().__init__()
        blocks = tuple(exit_after_blocks)
        check_exit_placement(blocks, backbone.num_blocks)
        self.backbone = backbone
        self.exit_after_blocks = blocks
        self.heads = nn.ModuleList(build_head(head_kind, backbone.feature_info[b - 1], num_classes)
                                   for b in blocks)
        self.freeze_mode = "all"

    @property
    def num_exits(self) -> int:
        return len(self.heads) + 1

    # --- forward passes ------------------------------------------------------------------

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.forward_until(x, self.num_exits - 1)

    def forward_until(self, x: Tensor, k: int) -> list[Tensor]:
        """Logits of exits ``0..k``, computing the blocks up to exit ``k`` and no further."""
        if not 0 <= k < self.num_exits:
            raise ValueError(f"exit index must lie in 0..{self.num_exits - 1}, got {k}")
        outputs = []
        last_block = self.exit_after_blocks[k] if k < len(self.heads) else self.backbone.num_blocks
        x = self.backbone.stem(x)
        for number, block in enumerate(self.backbone.blocks[:last_block], start=1):
            x = block(x)
            if number in self.exit_after_blocks:
                outputs.append(self.heads[self.exit_after_blocks.index(number)](x))
        if k == self.num_exits - 1:
            outputs.append(self.backbone.classifier(x))
        return outputs

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
        if mode not in TRAINABLE:
            raise ValueError(f"unknown freeze mode {mode!r}; valid modes: {', '.join(TRAINABLE)}")
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
def exit_logits(model: MultiExitModel, batches) -> tuple[Tensor, Tensor]:
    """Every exit's logits over an iterable of (images, labels): ``[K, N, C]`` and ``[N]``,
    in float32 on the CPU."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in batches:
        logits.append(torch.stack(model(x)).float().cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(logits, dim=1), torch.cat(labels)
