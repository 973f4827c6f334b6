"""Backbones from torchvision: any classification model of a supported family, split into
``stem`` → ``blocks`` → ``classifier`` behind the same interface as our own backbones.

The model is *split*, not tapped with hooks: each block is a module of its own, so a sample that
leaves at an exit never runs the blocks after it (inference stops there, and an exit's cost in
FLOPs is what runs up to it). A block is one residual unit of a ResNet-like model, one stage of
a model whose ``features`` is a sequence of stages (VGG: the convolutions between two poolings),
or one encoder layer of a Vision Transformer. Supported families, by builder name
(``torchvision.models.list_models(module=torchvision.models)`` lists the builders):
:data:`FAMILIES`; any other model is refused, naming them. To see a model's nodes by name,
``torchvision.models.feature_extraction.get_graph_node_names(model)``; its blocks here are
numbered from 1, as every backbone's are (``TorchvisionBackbone.describe()`` lists them).

Input and output are fitted to the data: a first convolution for another number of channels
(pretrained RGB filters summed over the colours, as timm adapts them) and a final linear layer
for another number of classes (newly initialised). Weights: a torchvision weights name
(``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) loads them through torchvision, from its cache
(``TORCH_HOME``) or by download; without one the model starts from random weights.
"""

from __future__ import annotations

import functools
import math
import re

import torch
from torch import Tensor, nn

from .backbones import Backbone, FeatureInfo

#: The families whose models split into blocks, by the prefix of their builder's name.
FAMILIES = {
    "resnet": "ResNet, ResNeXt, Wide ResNet: every residual unit of layer1-layer4 is a block",
    "resnext": "as ResNet",
    "wide_resnet": "as ResNet",
    "regnet": "every unit of each stage of the trunk is a block",
    "vgg": "the convolutions up to each max-pooling form a block",
    "mobilenet_v2": "every entry of `features` after the first (the stem) is a block",
    "mobilenet_v3": "as MobileNetV2",
    "efficientnet": "as MobileNetV2",
    "convnext": "every stage and downsampling layer of `features` after the stem is a block",
    "vit": "every encoder layer is a block; the class token is the first token",
}


def family_of(builder: str) -> str:
    """The supported family of a torchvision builder name, or a clear error naming them."""
    for family in sorted(FAMILIES, key=len, reverse=True):
        if builder.startswith(family):
            return family
    raise ValueError(f"torchvision model {builder!r} cannot be split into blocks; supported families (builder "
                     f"names starting with): {', '.join(FAMILIES)}")


class _Pool(nn.Module):
    """Global average pooling to a vector (the last convolutional map → the classifier)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class _VitStem(nn.Module):
    """torchvision ViT's input: patches projected, the class token first, position embeddings."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.patch_size, self.conv_proj = model.patch_size, model.conv_proj
        self.class_token, self.pos_embedding = model.class_token, model.encoder.pos_embedding
        self.dropout = model.encoder.dropout

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), tokens], dim=1)
        return self.dropout(tokens + self.pos_embedding)


class _VitClassifier(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.norm, self.heads = model.encoder.ln, model.heads

    def forward(self, tokens: Tensor) -> Tensor:
        return self.heads(self.norm(tokens)[:, 0])


def split(model: nn.Module, family: str) -> tuple[nn.Module, list[nn.Module], nn.Module]:
    """``(stem, blocks, classifier)`` of a torchvision model of ``family``: run in turn, they
    compute what the model's own ``forward`` does."""
    if family in ("resnet", "resnext", "wide_resnet"):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        blocks = [unit for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for unit in layer]
        return stem, blocks, nn.Sequential(_Pool(), model.fc)
    if family == "regnet":
        blocks = [unit for stage in model.trunk_output for unit in stage]
        return model.stem, blocks, nn.Sequential(_Pool(), model.fc)
    if family == "vgg":
        blocks, current = [], []
        for layer in model.features:
            current.append(layer)
            if isinstance(layer, nn.MaxPool2d):
                blocks.append(nn.Sequential(*current))
                current = []
        if current:
            blocks.append(nn.Sequential(*current))
        return nn.Identity(), blocks, nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier)
    if family in ("mobilenet_v2", "mobilenet_v3", "efficientnet", "convnext"):
        head = [model.classifier] if family != "convnext" else list(model.classifier)
        pool = [_Pool()] if family == "mobilenet_v2" else [model.avgpool] + ([] if family == "convnext" else
                                                                            [nn.Flatten(1)])
        return model.features[0], list(model.features[1:]), nn.Sequential(*pool, *head)
    if family == "vit":
        return _VitStem(model), list(model.encoder.layers), _VitClassifier(model)
    raise ValueError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")


def _first_conv(module: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """The first convolution of ``module`` with its parent and attribute name."""
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            parent_name, _, attribute = name.rpartition(".")
            return module.get_submodule(parent_name) if parent_name else module, attribute, child
    raise ValueError("the model has no convolution to take the input")


def _last_linear(module: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    found = None
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear):
            found = name, child
    if found is None:
        raise ValueError("the model's classifier has no linear layer")
    parent_name, _, attribute = found[0].rpartition(".")
    return module.get_submodule(parent_name) if parent_name else module, attribute, found[1]


def fit_input_and_output(model: nn.Module, in_channels: int, num_classes: int) -> nn.Module:
    """``model`` with its first convolution taking ``in_channels`` (pretrained filters summed
    over the colours for one channel; for more, channel k takes colour k mod 3, scaled by
    3 / ``in_channels`` so the total weight stays about the same) and its last linear layer
    giving ``num_classes`` (new, when the count differs)."""
    parent, attribute, conv = _first_conv(model)
    if conv.in_channels != in_channels:
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, conv.bias is not None)
        with torch.no_grad():
            weight = conv.weight.sum(1, keepdim=True) if in_channels == 1 else \
                conv.weight.repeat(1, -(-in_channels // conv.in_channels), 1, 1)[:, :in_channels] \
                * conv.in_channels / in_channels
            new.weight.copy_(weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        setattr(parent, attribute, new)
    parent, attribute, linear = _last_linear(model)
    if linear.out_features != num_classes:
        setattr(parent, attribute, nn.Linear(linear.in_features, num_classes, linear.bias is not None))
    return model


def _power_of_two(ratio: float) -> int:
    return 2 ** max(0, round(math.log2(ratio)))


class TorchvisionBackbone(Backbone):
    """A torchvision classification model split into blocks (see the module docstring); its
    ``feature_info`` is measured with one forward pass of an image of the data's size."""

    def __init__(self, model: nn.Module, family: str, in_channels: int, image_size: int):
        super().__init__()
        stem, blocks, classifier = split(model, family)
        self.stem, self.blocks, self.classifier = stem, nn.ModuleList(blocks), classifier
        self.family = family
        self.prefers_channels_last = family != "vit"
        self.feature_info = self._measure(in_channels, image_size)

    @torch.no_grad()
    def _measure(self, in_channels: int, image_size: int) -> list[FeatureInfo]:
        training = self.training
        self.eval()
        x = self.stem(torch.zeros(1, in_channels, image_size, image_size))
        info = []
        for block in self.blocks:
            x = block(x)
            if x.dim() == 3:  # tokens [1, 1 + P, C] on a square grid of patches
                info.append(FeatureInfo(x.shape[2], _power_of_two(image_size / (x.shape[1] - 1) ** 0.5), "tokens"))
            else:  # strided layers round sizes up (28 px at stride 8: 4 px), so the nearest power of two
                info.append(FeatureInfo(x.shape[1], _power_of_two(image_size / x.shape[-1]), "conv"))
        self.train(training)
        return info

    def describe(self) -> list[str]:
        """One line per block: its number, its module's class and its output."""
        return [f"block {k}: {type(block).__name__} → {info.channels} {'channels' if info.layout == 'conv' else 'wide'}"
                f", 1/{info.reduction} of the input" for k, (block, info) in enumerate(zip(self.blocks,
                                                                                           self.feature_info), 1)]


#: ``torchvision:<builder>`` or ``torchvision:<builder>:<weights>`` (e.g. ``torchvision:resnet18:DEFAULT``).
NAME = re.compile(r"^torchvision:(?P<builder>[a-z0-9_]+)(?::(?P<weights>[A-Za-z0-9_]+))?$")


def parse_name(name: str) -> tuple[str, str | None]:
    """``(builder, weights or None)`` of an architecture name of the form :data:`NAME`."""
    match = NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a torchvision architecture name: write torchvision:<builder> or "
                         f"torchvision:<builder>:<weights>, e.g. torchvision:resnet18:DEFAULT")
    return match["builder"], match["weights"]


def build_torchvision(builder: str, weights: str | None, num_classes: int, in_channels: int,
                      image_size: int) -> TorchvisionBackbone:
    """torchvision's ``builder`` (with ``weights``, or random) fitted to the data and split."""
    import torchvision

    family = family_of(builder)
    if builder not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"torchvision has no classification model {builder!r}; its models: "
                         f"{', '.join(torchvision.models.list_models(module=torchvision.models))}")
    extra = {"image_size": image_size} if family == "vit" and weights is None else {}
    model = torchvision.models.get_model(builder, weights=weights, **extra)
    return TorchvisionBackbone(fit_input_and_output(model, in_channels, num_classes), family, in_channels,
                               image_size)


@functools.lru_cache(maxsize=None)
def count_blocks(builder: str) -> int:
    """How many blocks the split gives ``builder``'s model (built once, with random weights)."""
    import torchvision

    family = family_of(builder)
    extra = {"image_size": 224} if family == "vit" else {}
    return len(split(torchvision.models.get_model(builder, weights=None, **extra), family)[1])


__all__ = ["FAMILIES", "NAME", "TorchvisionBackbone", "build_torchvision", "count_blocks", "family_of",
           "fit_input_and_output", "parse_name", "split"]
