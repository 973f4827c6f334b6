"""The architecture registry: each named backbone (``resnet-cpu``, ``msdnet-cifar``, ``vit-t``...)
with its family, depth in blocks and the settings its builder takes. The families' classes live in
:mod:`.backbones` (ResNet, ViT) and :mod:`.msdnet`; this module sits above both, so neither
imports the other back. Why each cpu-sized architecture has its widths: ``benchmarks/README.md``."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import check, lookup
from .backbones import Backbone, BasicBlock, Bottleneck, CifarResNet, VisionTransformer
from .encoders import EncoderBackbone, NAMED_ENCODERS, build_encoder, check_final_head, count_layers, is_encoder_name
from .library import TorchvisionBackbone, build_torchvision, count_blocks, family_of, parse_name
from .msdnet import MSDNet


@dataclass(frozen=True)
class ArchSpec:
    """A named architecture: its family, depth in blocks and the builder's settings."""

    name: str
    family: str  # one of FAMILY_LAYOUTS: "resnet", "vit", "msdnet", "torchvision" or "huggingface"
    num_blocks: int
    settings: dict
    description: str

    def __post_init__(self):
        check(self.family, FAMILY_LAYOUTS, "architecture family", "families")

    @property
    def backbone_class(self) -> type[Backbone]:
        return {"resnet": CifarResNet, "vit": VisionTransformer, "msdnet": MSDNet,
                "torchvision": TorchvisionBackbone, "huggingface": EncoderBackbone}[self.family]

    @property
    def prefers_channels_last(self) -> bool:
        if self.family == "torchvision":
            return self.layout == "conv"
        return self.backbone_class.prefers_channels_last

    @property
    def layout(self) -> str:
        """How its blocks' outputs are laid out: ``"conv"``, ``"tokens"`` or ``"multiscale"``
        (see FeatureInfo)."""
        if self.family == "torchvision":
            return "tokens" if family_of(self.settings["builder"]) == "vit" else "conv"
        return FAMILY_LAYOUTS[self.family]

    @property
    def modality(self) -> str:
        """What it reads: ``"text"`` (token ids) or ``"image"``."""
        return "text" if self.family == "huggingface" else "image"

    def check_final_head(self, final_head: str) -> None:
        """Refuses a last exit this architecture cannot have: one of ``encoders.FINAL_HEADS`` for a
        text encoder, only its own classifier (``"own"``) for every other family."""
        check_final_head(final_head)
        if final_head != "own" and self.modality != "text":
            raise ValueError(f"final head {final_head!r} reads a text encoder's tokens; the image model "
                             f"{self.name!r} has only its own classifier: final_head='own'")

    def build(self, num_classes: int, in_channels: int, image_size: int, final_head: str = "own") -> Backbone:
        """The backbone for ``num_classes``; a text encoder ignores ``in_channels`` and ``image_size``
        and reads its last layer into the last exit as ``final_head`` says (:meth:`check_final_head`)."""
        self.check_final_head(final_head)
        if self.family == "huggingface":
            return build_encoder(self.name, num_classes, final_head)
        if self.family == "torchvision":
            return build_torchvision(self.settings["builder"], self.settings["weights"], num_classes, in_channels,
                                     image_size)
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


#: The layout of each family's block outputs (FeatureInfo.layout; a torchvision model's: its own).
FAMILY_LAYOUTS = {"resnet": "conv", "vit": "tokens", "msdnet": "multiscale", "torchvision": "conv",
                  "huggingface": "sequence"}


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
        # every layer after the first drops a scale, so the smoke model runs every part of MSDNet
        # but the bottlenecks (tested on their own)
        _msdnet("msdnet-smoke", (1, 1, 1), 4, 4, 8, bottleneck=False,
                description="3 blocks of 1 layer, base width 4, growth 4, for smoke tests"),
        # sized to train about as fast as resnet-cpu (benchmarks/README.md: the cpu-sized models)
        _msdnet("msdnet-cpu", (1, 1, 1, 1, 1, 1), 4, 4, 32, bottleneck=False,
                description="6 blocks of 1 layer, base width 4, growth 4, no bottlenecks, for the CPU"),
        _msdnet("msdnet-cifar", (4, 2, 2, 2, 2, 2, 2), 16, 6, 128,
                description="7 blocks, 16 layers, base width 16, growth 6: MSDNet's CIFAR-100 setting (paper)"),
        _vit("vit-smoke", 32, 3, 2, "3 layers of width 32, for smoke tests"),
        # 7-pixel patches on Fashion-MNIST (benchmarks/README.md: the cpu-sized models)
        _vit("vit-cpu", 96, 6, 3, "6 layers of width 96, a 4x4 grid of patches, for the CPU", grid=4),
        _vit("vit-t", 192, 12, 3, "ViT-Tiny (paper)"),
        _vit("vit-s", 384, 12, 6, "ViT-Small (paper)"),
        _vit("vit-b", 768, 12, 12, "ViT-Base (paper)"),
    ]
}


def arch_spec(name: str) -> ArchSpec:
    """The architecture ``name``: one of :data:`ARCHITECTURES`, or a torchvision model named
    ``torchvision:<builder>[:<weights>]`` (:mod:`.library`), or a text encoder: one of
    :data:`~.encoders.NAMED_ENCODERS` or ``huggingface:<model id or folder>`` (:mod:`.encoders`)."""
    if is_encoder_name(name):
        description = NAMED_ENCODERS[name][1] if name in NAMED_ENCODERS else f"the Hugging Face model {name[12:]}"
        return ArchSpec(name, "huggingface", count_layers(name), {}, description)
    if isinstance(name, str) and name.startswith("torchvision:"):
        builder, weights = parse_name(name)
        family_of(builder)  # a clear error for a model that cannot be split
        return ArchSpec(name, "torchvision", count_blocks(builder), dict(builder=builder, weights=weights),
                        f"torchvision's {builder}" + (f" with weights {weights}" if weights else ", random weights"))
    return lookup(ARCHITECTURES, name, "architecture")



__all__ = ["ARCHITECTURES", "ArchSpec", "FAMILY_LAYOUTS", "arch_spec"]
