"""Backbones that expose the output of every block.

Each backbone splits into ``stem`` → ``blocks`` (an ``nn.ModuleList``) → ``classifier`` (its own
final classifier, the last exit) and describes every block's output in ``feature_info``
(channels or token width, spatial reduction, layout), as timm does, so heads size themselves.
Blocks are numbered from 1 in configurations, as in the paper ("ICs after blocks 5, 7, … of 16").
Families: CIFAR-style ResNets and ViTs here, MSDNet in :mod:`mexlib.models.msdnet` (whose blocks
pass a list of feature maps, one per scale, from block to block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class FeatureInfo:
    """The output of one block: ``channels`` wide, ``reduction`` times smaller than the input;
    ``layout`` is ``"conv"`` (``[B, C, H, W]``), ``"tokens"`` (``[B, 1 + P, C]``, class token
    first), ``"sequence"`` (a text encoder's pair of hidden states ``[B, L, C]``, [CLS] first, and
    the attention mask its layers take: :mod:`mexlib.models.encoders`) or ``"multiscale"`` (a list of ``[B, C_s, H_s, W_s]`` maps, finest first, as MSDNet
    passes them; ``channels`` and ``reduction`` describe the coarsest, the last).
    ``head_width``: the width of a head's hidden layers where the architecture prescribes one
    (MSDNet's classifiers), else None."""

    channels: int
    reduction: int
    layout: str
    head_width: int | None = None


class Backbone(nn.Module):
    """Common interface: ``stem``, ``blocks``, ``classifier`` and ``feature_info``."""

    stem: nn.Module
    blocks: nn.ModuleList
    classifier: nn.Module
    feature_info: list[FeatureInfo]
    #: CNNs run faster in channels-last memory format on a GPU (used on CUDA only:
    #: :func:`mexlib.hardware.memory_format` says why).
    prefers_channels_last: bool = False

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)

    def example_input(self, shape, batch: int = 1, device=None, random: bool = False) -> Tensor:
        """``batch`` inputs of ``shape`` for counting and timing the model: zeros, or with
        ``random`` standard normal noise (a text encoder gives token ids instead)."""
        if random:
            return torch.randn(batch, *shape, device=device)
        return torch.zeros(batch, *shape, device=device)


# --- CIFAR-style ResNets --------------------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = _shortcut(in_channels, out, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = _shortcut(in_channels, out, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class CifarResNet(Backbone):
    """ResNet with a 3×3 stem and no max-pool (the CIFAR variant used by the study).

    ``blocks_per_stage`` and ``widths`` give one stage each; every stage after the first halves
    the resolution. ResNet-34 is ``BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512)``: 16 blocks.
    """

    prefers_channels_last = True

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks_per_stage: tuple[int, ...],
                 widths: tuple[int, ...], num_classes: int, in_channels: int = 3):
        super().__init__()
        if len(blocks_per_stage) != len(widths):
            raise ValueError("blocks_per_stage and widths need one entry per stage")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList()
        self.feature_info = []
        channels, reduction = widths[0], 1
        for stage, (count, width) in enumerate(zip(blocks_per_stage, widths)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                reduction *= stride
                self.blocks.append(block(channels, width, stride))
                channels = width * block.expansion
                self.feature_info.append(FeatureInfo(channels, reduction, "conv"))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


# --- Vision Transformer ----------------------------------------------------------------------

class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads) \
            .permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class PatchEmbedding(nn.Module):
    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not divisible by patch size {patch_size}")
        num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + num_patches, dim) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(x), -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed


class ClassTokenClassifier(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(self.norm(tokens[:, 0]))


class VisionTransformer(Backbone):
    """ViT with a class token and pre-norm encoder blocks; each encoder layer is a block."""

    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, num_heads: int,
                 num_classes: int, in_channels: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        self.stem = PatchEmbedding(image_size, patch_size, in_channels, dim)
        self.blocks = nn.ModuleList(EncoderBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.classifier = ClassTokenClassifier(dim, num_classes)
        self.feature_info = [FeatureInfo(dim, patch_size, "tokens") for _ in range(depth)]
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["Backbone", "BasicBlock", "Bottleneck", "CifarResNet", "ClassTokenClassifier", "FeatureInfo",
           "VisionTransformer", "count_parameters"]
