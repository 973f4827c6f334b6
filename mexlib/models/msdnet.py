"""MSDNet: Multi-Scale Dense Networks (Huang et al., ICLR 2018, arXiv 1703.09844).

The CIFAR variant, written from the paper and read against the author's PyTorch port
(``kalviny/MSDNet-PyTorch`` @ f654595, ``models/msdnet.py``; METHODS.md §0):

- **State.** Between blocks the network carries a list of feature maps, finest scale first,
  one per scale still in use: ``[B, c·g_s, H/2^s, W/2^s]`` for scale ``s``, where ``c`` is the
  current base width and ``g_s`` the scale's width factor (1, 2, 4 on CIFAR).
- **Stem** (the paper's first layer): a 3×3 conv-BN-ReLU at full resolution, then one strided
  3×3 conv-BN-ReLU per coarser scale, each reading the scale above it.
- **Layers.** Each layer grows every scale it keeps, densely: scale ``s`` gets ``growth·g_s``
  new channels concatenated onto its input, computed from the same scale (a 3×3 conv) and,
  except at the finest scale, half of them from the finer scale (a strided 3×3 conv). Each
  conv is preceded by a 1×1 bottleneck of at most ``b_s`` times its output width (the port's
  ``bnFactor``), and followed by BN and ReLU.
- **Dropping scales** (the port's ``prune="max"``): the ``L`` layers fall into ``S`` runs of
  ``ceil(L / S)``; the first layer of each later run drops the finest scale (its new features
  for the new finest scale still read the dropped one, strided), and a transition follows it:
  one 1×1 conv-BN-ReLU per scale that compresses the base width by ``reduction`` (0.5).
  The last layer computes only the coarsest scale, the only one the final classifier reads:
  where the schedule keeps finer scales there (not in the CIFAR setting, whose last third of
  layers has the coarsest scale alone), the port computes them for nothing, and their weights
  would get no gradient.
- **Blocks** are the runs of layers between two classifiers; ``layers_per_block`` lists them
  (the CIFAR-100 anytime setting: ``4, 2, 2, 2, 2, 2, 2``, the port's ``--base 4 --step 2
  --stepmode even --nBlocks 7``).
- **Classifiers** (the backbone's own, and the heads of kind ``"msd"``) read the coarsest scale:
  two 3×3 stride-2 conv-BN-ReLU of width ``classifier_width`` (128 on CIFAR), average pooling
  and one linear layer. The port pools with ``AvgPool2d(2)`` on the 2×2 map a 32-pixel input
  leaves; we pool globally (``AdaptiveAvgPool2d(1)``), the same on 32- and 28-pixel inputs
  (8 → 4 → 2 and 7 → 4 → 2) and defined for any size.

Initialisation: He-normal convolutions (fan-out), BN weight 1 and bias 0, linear biases 0, as
the port's ``_init_weights`` intends (the port calls it on whole MSDNet layers and classifier
modules, never on a convolution, so PyTorch's defaults stay in effect there; we apply it to
every layer, as ``CifarResNet`` does).

Verified against the port: ``msdnet-cifar`` has its parameter count (3,067,960 with the six
internal classifiers, 853,984 without) and its FLOPs, and with the port's weights copied in it
gives the port's logits at every exit exactly.

Variants (:data:`mexlib.models.ARCHITECTURES`), all with 3 scales (width factors 1, 2, 4) and
compression 0.5: ``msdnet-cifar`` is the CIFAR-100 setting above (the study names MSDNet on
CIFAR-100 but not its setting; this is the port's anytime-prediction one, whose 7 exits match
the ResNet runs' 6 + 1); ``msdnet-cpu`` and ``msdnet-smoke`` are small ones for the CPU and for
tests. ``msdnet-cpu`` has no 1×1 bottlenecks: at its widths they would double the convolutions
(and the memory passes, the CPU's main cost for such small maps) of every layer for about the
same FLOPs. A head's width comes from ``FeatureInfo.head_width`` (``classifier_width``).

**Exits and the training regimes.** MSDNet trains all its classifiers together (the plain sum
of their cross-entropies; here that is the joint regime, with the method's loss). In this
package the backbone's own ``classifier`` is the classifier after the last block, and the
classifiers after the earlier blocks are the multi-exit model's heads (kind ``"msd"``, the
default for this backbone). So phase 1 (``"backbone"``) trains the network with its final
classifier only, and the internal classifiers do not exist for it (they are neither run nor
trained); **disjoint** = the backbone with its final classifier, then the other classifiers
with the backbone frozen (phase 3, backbone in eval mode); **mixed** = the same backbone,
then everything together with fresh internal classifiers; **joint** = MSDNet's own training
(everything from scratch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .backbones import Backbone, FeatureInfo

Scales = list[Tensor]  # one feature map per scale in use, finest first


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def dense_conv(in_channels: int, out_channels: int, stride: int, bottleneck_factor: int | None) -> nn.Sequential:
    """New features for one scale: an optional 1×1 bottleneck (at most ``bottleneck_factor`` ×
    the output width, never wider than the input), then a 3×3 conv-BN-ReLU."""
    if bottleneck_factor is None:
        return conv_bn_relu(in_channels, out_channels, 3, stride)
    inner = min(in_channels, bottleneck_factor * out_channels)
    return nn.Sequential(*conv_bn_relu(in_channels, inner, 1), *conv_bn_relu(inner, out_channels, 3, stride))


def scale_schedule(num_layers: int, num_scales: int) -> list[tuple[int, int]]:
    """``(input scales, output scales)`` of each layer, in order: ``num_scales`` runs of
    ``ceil(num_layers / num_scales)`` layers, the first layer of each later run dropping the
    finest scale (the port's ``prune="max"``)."""
    run = math.ceil(num_layers / num_scales)
    return [(num_scales - max(0, n - 2) // run, num_scales - (n - 1) // run)
            for n in range(1, num_layers + 1)]


class MultiScaleStem(nn.Module):
    """MSDNet's first layer: the input at full resolution, then each coarser scale from the
    scale above it by a strided conv."""

    def __init__(self, in_channels: int, widths: list[int]):
        super().__init__()
        self.convs = nn.ModuleList([conv_bn_relu(in_channels, widths[0], 3, 1)]
                                   + [conv_bn_relu(a, b, 3, 2) for a, b in zip(widths, widths[1:])])

    def forward(self, x: Tensor) -> Scales:
        scales = []
        for conv in self.convs:
            x = conv(x)
            scales.append(x)
        return scales


class ScaleGrowth(nn.Module):
    """One scale's share of a layer: its input with ``growth`` new channels concatenated,
    from the same scale, and half of them from the finer scale (strided) when it is given."""

    def __init__(self, channels: int, finer_channels: int | None, growth: int,
                 bottleneck: int | None, finer_bottleneck: int | None):
        super().__init__()
        if finer_channels is None:
            self.from_finer = None
            self.from_same = dense_conv(channels, growth, 1, bottleneck)
        else:
            if growth % 2:
                raise ValueError(f"a scale grown from two scales needs an even growth, got {growth}")
            self.from_finer = dense_conv(finer_channels, growth // 2, 2, finer_bottleneck)
            self.from_same = dense_conv(channels, growth // 2, 1, bottleneck)

    def forward(self, same: Tensor, finer: Tensor | None = None) -> Tensor:
        parts = [same] if self.from_finer is None else [same, self.from_finer(finer)]
        return torch.cat(parts + [self.from_same(same)], dim=1)


class MSDLayer(nn.Module):
    """One MSDNet layer: grows each of the ``out_scales`` coarsest scales of its
    ``in_scales`` input scales (the ``in_scales - out_scales`` finest ones are dropped)."""

    def __init__(self, base_channels: int, growth: int, width_factors: tuple[int, ...],
                 bottleneck_factors: tuple[int, ...] | None, in_scales: int, out_scales: int):
        super().__init__()
        num_scales = len(width_factors)
        self.dropped = in_scales - out_scales
        first_in = num_scales - in_scales
        bottleneck = bottleneck_factors or (None,) * num_scales
        self.scales = nn.ModuleList()
        for s in range(num_scales - out_scales, num_scales):
            finer = s - 1 >= first_in
            self.scales.append(ScaleGrowth(
                base_channels * width_factors[s], base_channels * width_factors[s - 1] if finer else None,
                growth * width_factors[s], bottleneck[s], bottleneck[s - 1] if finer else None))

    def forward(self, xs: Scales) -> Scales:
        out = []
        for j, grow in enumerate(self.scales):
            i = self.dropped + j  # this scale's index in the input list
            out.append(grow(xs[i], xs[i - 1]) if grow.from_finer is not None else grow(xs[i]))
        return out


class Transition(nn.Module):
    """A 1×1 conv-BN-ReLU per scale, changing the base width from ``in_channels`` to
    ``out_channels`` (DenseNet's compression)."""

    def __init__(self, in_channels: int, out_channels: int, factors: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(conv_bn_relu(in_channels * g, out_channels * g, 1) for g in factors)

    def forward(self, xs: Scales) -> Scales:
        return [conv(x) for conv, x in zip(self.convs, xs)]


class MSDBlock(nn.Sequential):
    """The layers (and transitions) between two classifiers; maps a list of scales to one."""


class MSDClassifier(nn.Module):
    """MSDNet's classifier on the coarsest scale: two 3×3 stride-2 conv-BN-ReLU of ``width``
    channels, global average pooling, one linear layer. Takes the list of scales (or the
    coarsest map itself)."""

    def __init__(self, channels: int, num_classes: int, width: int = 128):
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(channels, width, 3, 2), conv_bn_relu(width, width, 3, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)

    def forward(self, features: Scales | Tensor) -> Tensor:
        coarsest = features if isinstance(features, Tensor) else features[-1]
        return self.fc(self.pool(self.convs(coarsest)).flatten(1))


def init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class MSDNet(Backbone):
    """MSDNet's CIFAR variant (see the module text); each block ends where MSDNet has a
    classifier, and the backbone's ``classifier`` is the one after the last block.

    ``layers_per_block``: MSDNet layers in each block. ``channels``: the base width of the
    stem's finest scale; scale ``s`` is ``width_factors[s]`` times as wide. ``growth``: new
    channels per layer at the finest scale (times ``width_factors[s]`` at scale ``s``).
    ``bottleneck_factors``: the 1×1 bottlenecks' width limits per scale (None: no bottleneck).
    ``reduction``: the transitions' compression. ``classifier_width``: the classifiers' conv width.
    """

    prefers_channels_last = True

    def __init__(self, layers_per_block: tuple[int, ...], channels: int, growth: int, num_classes: int,
                 in_channels: int = 3, width_factors: tuple[int, ...] = (1, 2, 4),
                 bottleneck_factors: tuple[int, ...] | None = (1, 2, 4), reduction: float = 0.5,
                 classifier_width: int = 128):
        super().__init__()
        num_scales = len(width_factors)
        if bottleneck_factors is not None and len(bottleneck_factors) != num_scales:
            raise ValueError("bottleneck_factors needs one entry per scale, as width_factors has")
        if not 0 < reduction <= 1:
            raise ValueError(f"reduction must lie in (0, 1], got {reduction}")
        if not layers_per_block or min(layers_per_block) < 1:
            raise ValueError(f"every block needs at least one layer, got {layers_per_block}")
        self.stem = MultiScaleStem(in_channels, [channels * g for g in width_factors])
        num_layers = sum(layers_per_block)
        schedule = iter(enumerate(scale_schedule(num_layers, num_scales), start=1))
        self.blocks = nn.ModuleList()
        self.feature_info = []
        self.scales_after_block = []
        for count in layers_per_block:
            block = MSDBlock()
            for _ in range(count):
                number, (in_scales, out_scales) = next(schedule)
                drops = out_scales < in_scales
                if number == num_layers:
                    out_scales = 1  # only the final classifier reads the last layer: its coarsest scale
                block.append(MSDLayer(channels, growth, width_factors, bottleneck_factors, in_scales, out_scales))
                channels += growth
                if drops:
                    compressed = math.floor(reduction * channels)
                    block.append(Transition(channels, compressed, width_factors[num_scales - out_scales:]))
                    channels = compressed
            self.blocks.append(block)
            self.scales_after_block.append(out_scales)
            self.feature_info.append(FeatureInfo(channels * width_factors[-1], 2 ** (num_scales - 1),
                                                 "multiscale", head_width=classifier_width))
        self.classifier = MSDClassifier(channels * width_factors[-1], num_classes, classifier_width)
        init_weights(self)


__all__ = ["MSDClassifier", "MSDNet", "scale_schedule"]
