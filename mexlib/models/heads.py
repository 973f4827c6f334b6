"""Internal classifiers ("heads", "exits") attached to a backbone's block outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import ClassTokenClassifier, FeatureInfo
from .msdnet import MSDClassifier
from ..registry import check, lookup


class PooledHead(nn.Module):
    """SDN's head (Kaya et al. 2019): a learnable mix ``α·maxpool + (1−α)·avgpool`` down to
    ``pool_size × pool_size``, flattened, then one linear layer. ``α`` starts at 0.5."""

    def __init__(self, channels: int, num_classes: int, pool_size: int = 4):
        super().__init__()
        self.pool_size = pool_size
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.fc = nn.Linear(channels * pool_size * pool_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        pooled = (self.alpha * F.adaptive_max_pool2d(x, self.pool_size)
                  + (1 - self.alpha) * F.adaptive_avg_pool2d(x, self.pool_size))
        return self.fc(pooled.flatten(1))


class ConvHead(nn.Module):
    """A deeper head for the head-depth ablation: ``depth`` conv-BN-ReLU layers (3×3, same
    width), then SDN's pooled head."""

    def __init__(self, channels: int, num_classes: int, depth: int, pool_size: int = 4):
        super().__init__()
        layers = []
        for _ in range(depth):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.pooled = PooledHead(channels, num_classes, pool_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.pooled(self.convs(x))


class ClsHead(nn.Module):
    """A linear layer on the first token's hidden state ([CLS]) of a text encoder's layer: one
    per exit, as the ZTW NLP code's heads (:mod:`mexlib.models.encoders` gives the layout)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, state: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return self.fc(state[0][:, 0])


def mean_of_tokens(state: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """``[B, C]``: the mean of each text's real tokens' hidden states in a text encoder's
    (hidden states, attention mask, token mask) triple, padding left out."""
    hidden, _, tokens = state
    weights = tokens.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)


class MeanTokensHead(nn.Module):
    """A linear layer on the mean of a text encoder's real tokens' hidden states (padding left
    out): the pooling of sentence-transformers models such as MiniLM."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, state: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        return self.fc(mean_of_tokens(state))


#: Each head kind: the block-output layout it reads (FeatureInfo.layout) and what it is.
HEAD_KINDS = {
    "pool": ("conv", "SDN's pooled head: learnable max/avg-pool mix to 4x4, one linear layer"),
    "conv1": ("conv", "one 3x3 conv-BN-ReLU, then the pooled head"),
    "conv2": ("conv", "two 3x3 conv-BN-ReLU, then the pooled head"),
    "token": ("tokens", "layer norm and a linear layer on the class token"),
    "cls": ("sequence", "a linear layer on the [CLS] token's hidden state (text encoders)"),
    "mean": ("sequence", "a linear layer on the mean of the real tokens' hidden states (text encoders)"),
    "msd": ("multiscale", "MSDNet's classifier on the coarsest scale: two 3x3 stride-2 conv-BN-ReLU, "
                          "average pooling, one linear layer"),
}

#: The head kind each layout gets by default (a configuration's ``head="auto"``).
DEFAULT_HEAD_KINDS = {"conv": "pool", "tokens": "token", "multiscale": "msd", "sequence": "cls"}


def default_head_kind(layout: str) -> str:
    return lookup(DEFAULT_HEAD_KINDS, layout, "feature layout", "layouts")


def check_head(kind: str, layout: str) -> None:
    """Raise unless ``kind`` is a known head that reads features of ``layout``."""
    check(kind, HEAD_KINDS, "head")
    needs = HEAD_KINDS[kind][0]
    if needs != layout:
        valid = [k for k, (lay, _) in HEAD_KINDS.items() if lay == layout]
        raise ValueError(f"head {kind!r} needs {needs} features but this backbone yields "
                         f"{layout}; valid heads here: {', '.join(valid)}")


def build_head(kind: str, feature: FeatureInfo, num_classes: int) -> nn.Module:
    check_head(kind, feature.layout)
    if kind == "pool":
        return PooledHead(feature.channels, num_classes)
    if kind == "token":
        # the same layer norm and linear layer as the ViT's own classifier
        return ClassTokenClassifier(feature.channels, num_classes)
    if kind == "cls":
        return ClsHead(feature.channels, num_classes)
    if kind == "mean":
        return MeanTokensHead(feature.channels, num_classes)
    if kind == "msd":
        # the same classifier as MSDNet's own, of the width the architecture prescribes
        return MSDClassifier(feature.channels, num_classes, feature.head_width or 128)
    return ConvHead(feature.channels, num_classes, depth=int(kind[-1]))
