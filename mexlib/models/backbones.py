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
    first) or ``"multiscale"`` (a list of ``[B, C_s, H_s, W_s]`` maps, finest first, as MSDNet
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


# --- the registry ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchSpec:
    """A named architecture: its family, depth in blocks and the builder's settings."""

    name: str
    family: str  # one of FAMILY_LAYOUTS: "resnet", "vit" or "msdnet"
    num_blocks: int
    settings: dict
    description: str

    def __post_init__(self):
        if self.family not in FAMILY_LAYOUTS:
            raise ValueError(f"unknown architecture family {self.family!r}; valid families: "
                             f"{', '.join(FAMILY_LAYOUTS)}")

    @property
    def backbone_class(self) -> type[Backbone]:
        from .msdnet import MSDNet  # msdnet.py builds on this module's Backbone

        return {"resnet": CifarResNet, "vit": VisionTransformer, "msdnet": MSDNet}[self.family]

    @property
    def prefers_channels_last(self) -> bool:
        return self.backbone_class.prefers_channels_last

    @property
    def layout(self) -> str:
        """How its blocks' outputs are laid out: ``"conv"``, ``"tokens"`` or ``"multiscale"``
        (see FeatureInfo)."""
        return FAMILY_LAYOUTS[self.family]

    def build(self, num_classes: int, in_channels: int, image_size: int) -> Backbone:
        if self.family == "resnet":
            block = Bottleneck if self.settings["bottleneck"] else BasicBlock
            return CifarResNet(block, self.settings["blocks_per_stage"], self.settings["widths"],
                               num_classes, in_channels)
        if self.family == "msdnet":  # strided convs round up: every scale keeps at least 1 pixel
            return self.backbone_class(num_classes=num_classes, in_channels=in_channels, **self.settings)
        grid = self.settings.get("grid")
        patch = image_size // grid if grid else _default_patch_size(image_size)
        return VisionTransformer(image_size, patch, self.settings["dim"], self.num_blocks,
                                 self.settings["num_heads"], num_classes, in_channels)


#: The layout of each family's block outputs (FeatureInfo.layout).
FAMILY_LAYOUTS = {"resnet": "conv", "vit": "tokens", "msdnet": "multiscale"}


def _default_patch_size(image_size: int) -> int:
    """4-pixel patches for small images (28, 32 px), an 8×8 grid up to 128 px (Tiny ImageNet's
    64, Imagenette's 128), and ViT's 16-pixel patches beyond (a 14×14 grid at 224 px)."""
    return 4 if image_size <= 32 else image_size // 8 if image_size <= 128 else 16


def _resnet(name, blocks, widths, bottleneck=False, description=""):
    return ArchSpec(name, "resnet", sum(blocks), dict(blocks_per_stage=tuple(blocks),
                    widths=tuple(widths), bottleneck=bottleneck), description)


def _vit(name, dim, depth, heads, description="", grid=None):
    """Patches: a ``grid`` × ``grid`` grid of them whatever the image size, or with ``grid=None``
    :func:`_default_patch_size` of the data's image size."""
    return ArchSpec(name, "vit", depth, dict(dim=dim, num_heads=heads, grid=grid), description)


def _msdnet(name, layers_per_block, channels, growth, classifier_width, bottleneck=True, description=""):
    """MSDNet with 3 scales (width factors 1, 2, 4; bottleneck factors 1, 2, 4 if any) and
    transitions of compression 0.5, as the author's port has for CIFAR."""
    return ArchSpec(name, "msdnet", len(layers_per_block), dict(
        layers_per_block=tuple(layers_per_block), channels=channels, growth=growth,
        width_factors=(1, 2, 4), bottleneck_factors=(1, 2, 4) if bottleneck else None, reduction=0.5,
        classifier_width=classifier_width), description)


ARCHITECTURES: dict[str, ArchSpec] = {
    a.name: a
    for a in [
        _resnet("resnet-smoke", (1, 1, 1), (4, 8, 16), description="3 blocks, for smoke tests"),
        _resnet("resnet-cpu", (2, 2, 2), (8, 16, 32), description="6 blocks, the cpu profile"),
        _resnet("resnet18", (2, 2, 2, 2), (64, 128, 256, 512), description="8 blocks"),
        _resnet("resnet34", (3, 4, 6, 3), (64, 128, 256, 512), description="16 blocks (paper)"),
        _resnet("resnet50", (3, 4, 6, 3), (64, 128, 256, 512), bottleneck=True,
                description="16 bottleneck blocks (paper)"),
        # 3 layers over 3 scales: every layer after the first drops a scale (and a transition
        # follows), so the smoke model runs every part but the bottlenecks (msdnet-cifar's, tested
        # on their own); a smoke run trains in 1.6x resnet-smoke's time (bottlenecks, a 4th block
        # and 16-wide classifiers: 4x)
        _msdnet("msdnet-smoke", (1, 1, 1), 4, 4, 8, bottleneck=False,
                description="3 blocks of 1 layer, base width 4, growth 4, for smoke tests"),
        # no 1x1 bottlenecks at these widths: they would double the layers (and memory passes)
        # of every MSDNet layer, the CPU's main cost here, for about the same FLOPs. Base width
        # 4: a training step costs 1.13x resnet-cpu's (base width 8: 1.58x, 6: 1.40x; growth 2
        # at width 8: 1.27x; measured side by side, 30 steps, 2 rounds), which fits 3 seeds of
        # the three regimes in about 40 minutes, as the ResNet's take 35
        _msdnet("msdnet-cpu", (1, 1, 1, 1, 1, 1), 4, 4, 32, bottleneck=False,
                description="6 blocks of 1 layer, base width 4, growth 4, no bottlenecks, for the CPU"),
        _msdnet("msdnet-cifar", (4, 2, 2, 2, 2, 2, 2), 16, 6, 128,
                description="7 blocks, 16 layers, base width 16, growth 6: MSDNet's CIFAR-100 setting (paper)"),
        _vit("vit-smoke", 32, 3, 2, "3 layers of width 32, for smoke tests"),
        # a 4x4 grid of patches (7 px on Fashion-MNIST's 28): in a short trial of the joint regime
        # (28k images, 3 epochs) 4-pixel patches (49 tokens) took 3x as long per epoch for no
        # better exits (53-64 % against 56-62 % with SGD); see config's cpu-profile ViT recipe
        _vit("vit-cpu", 96, 6, 3, "6 layers of width 96, a 4x4 grid of patches, for the CPU", grid=4),
        _vit("vit-t", 192, 12, 3, "ViT-Tiny (paper)"),
        _vit("vit-s", 384, 12, 6, "ViT-Small (paper)"),
        _vit("vit-b", 768, 12, 12, "ViT-Base (paper)"),
    ]
}


def arch_spec(name: str) -> ArchSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; valid architectures: "
                         f"{', '.join(ARCHITECTURES)}") from None


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["ARCHITECTURES", "ArchSpec", "Backbone", "CifarResNet", "FAMILY_LAYOUTS", "FeatureInfo",
           "VisionTransformer", "arch_spec", "count_parameters"]
