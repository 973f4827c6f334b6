"""A run's configuration: plain values that map one-to-one onto a notebook's parameters.

A :class:`RunConfig` fixes everything that changes a run's results: data, model, method,
regime, seed and each phase's optimisation. It validates itself at construction (a bad value
raises with the valid choices) and has a stable hash, the run store's key. Where the device
runs is not part of it: it is recorded with the run as provenance.

Profiles give the defaults: ``smoke`` (seconds, for tests), ``cpu`` (real results on a 2-core
machine) and ``paper`` (the paper's models and data, for a GPU). Build a configuration with
:func:`make_config`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .data import DATASETS, dataset_spec
from .hardware import PRECISIONS
from .methods import METHODS
from .models import arch_spec, check_exit_placement, check_head, default_head_kind

REGIMES = {
    "disjoint": "phase 1 (backbone) then phase 3 (heads only, backbone frozen)",
    "joint": "phase 2 only (backbone and heads together, from scratch)",
    "mixed": "phase 1 (backbone) then phase 2 (all, starting from the phase-1 backbone)",
}
#: The phases each regime runs, in order.
REGIME_PHASES = {"disjoint": ("backbone", "heads"), "joint": ("joint",), "mixed": ("backbone", "joint")}
PROFILES = ("smoke", "cpu", "paper")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


def _choose(kind: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid {kind}s: {', '.join(map(str, valid))}")


def _canonical_numbers(obj, floats: tuple[str, ...], ints: tuple[str, ...]) -> None:
    """Store numbers as one type each, so equal configurations hash equally (1 and 1.0)."""
    for name in floats:
        object.__setattr__(obj, name, float(getattr(obj, name)))
    for name in ints:
        value = getattr(obj, name)
        if value is not None:
            if isinstance(value, bool) or float(value) != int(value):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
            object.__setattr__(obj, name, int(value))


@dataclass(frozen=True)
class PhaseConfig:
    """Optimisation of one training phase.

    ``epochs`` caps the phase; early stopping ends it sooner when every monitored exit has gone
    ``patience`` epochs without improving its validation accuracy (``patience=None`` trains to
    the cap). Either way the phase ends with the checkpoint at which some exit last improved.
    """

    epochs: int
    lr: float
    batch_size: int = 128
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: int = 0
    patience: int | None = None

    def __post_init__(self):
        _canonical_numbers(self, floats=("lr", "weight_decay", "momentum"),
                           ints=("epochs", "batch_size", "warmup_epochs", "patience"))
        _choose("optimizer", self.optimizer, OPTIMIZERS)
        _choose("schedule", self.schedule, SCHEDULES)
        for name in ("epochs", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.batch_size <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr and batch_size must be positive and weight_decay >= 0: {self}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one multi-exit run."""

    profile: str
    dataset: str = "fashion-mnist"
    train_size: int | None = None  # a stratified subset of the training split (None: all)
    val_size: int | None = None  # a stratified subset of the validation split (None: all); smoke
    test_size: int | None = None  # the first n test images (None: all); smoke only
    val_fraction: float = 0.1
    arch: str = "resnet-cpu"
    exit_after_blocks: tuple[int, ...] = (1, 2, 3, 4, 5)
    head: str = "auto"  # "auto": the layout's default (models.heads.DEFAULT_HEAD_KINDS): SDN's pooled head
    # on CNNs, the class-token head on ViTs, MSDNet's classifier on MSDNet
    method: str = "sdn"
    regime: str = "mixed"
    seed: int = 0
    # "bf16": bfloat16 autocast while training (stored logits in fp32), where the device has
    # native bf16; elsewhere the run trains and is stored as fp32 (mexlib.hardware)
    precision: str = "fp32"
    augment: bool = True  # random crop and flip during training (TrivialAugment on top if set)
    trivial_augment: bool = False
    backbone_phase: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=6, lr=0.05))
    joint_phase: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=6, lr=0.05))
    heads_phase: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=6, lr=0.05))

    def __post_init__(self):
        _canonical_numbers(self, floats=("val_fraction",), ints=("train_size", "val_size", "test_size", "seed"))
        _choose("profile", self.profile, PROFILES)
        dataset_spec(self.dataset)
        arch = arch_spec(self.arch)
        _choose("regime", self.regime, tuple(REGIMES))
        _choose("method", self.method, tuple(METHODS))
        _choose("precision", self.precision, PRECISIONS)
        if self.head == "auto":  # resolved here, so "auto" and its choice share one store key
            object.__setattr__(self, "head", default_head_kind(arch.layout))
        check_head(self.head, arch.layout)
        object.__setattr__(self, "exit_after_blocks", tuple(int(b) for b in self.exit_after_blocks))
        check_exit_placement(self.exit_after_blocks, arch.num_blocks)
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        for name in ("train_size", "val_size", "test_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")

    # --- derived -------------------------------------------------------------------------

    @property
    def head_kind(self) -> str:
        return self.head

    @property
    def phases(self) -> tuple[str, ...]:
        return REGIME_PHASES[self.regime]

    def phase(self, name: str) -> PhaseConfig:
        return {"backbone": self.backbone_phase, "joint": self.joint_phase,
                "heads": self.heads_phase}[name]

    def with_regime(self, regime: str) -> "RunConfig":
        return replace(self, regime=regime)

    def backbone_config(self) -> dict:
        """What determines phase 1: disjoint and mixed runs that agree on it share one
        trained backbone."""
        keys = ("profile", "dataset", "train_size", "val_size", "test_size", "val_fraction", "arch", "seed",
                "precision", "augment", "trivial_augment", "backbone_phase")
        return {k: v for k, v in self.to_dict().items() if k in keys}

    # --- serialisation and hashing -------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        values = dict(values)
        for name in ("backbone_phase", "joint_phase", "heads_phase"):
            if isinstance(values.get(name), dict):
                values[name] = PhaseConfig(**values[name])
        return cls(**values)


def stable_hash(values: dict, salt: str = "") -> str:
    """A short hash of canonical JSON: the same values give the same key on every machine."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":")) + salt
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- profiles ----------------------------------------------------------------------------------

def _profile_defaults(profile: str, arch: str | None) -> dict:
    if profile == "smoke":
        phase = PhaseConfig(epochs=2, lr=0.05, batch_size=64)
        return dict(dataset="fashion-mnist", train_size=640, val_size=500, test_size=500, arch="resnet-smoke",
                    exit_after_blocks=(1, 2), backbone_phase=phase, joint_phase=phase,
                    heads_phase=phase)
    if profile == "cpu":
        # Sized so that 3 seeds of the three regimes train in about 20 minutes on 2 cores:
        # a 6-block ResNet of widths 8/16/32 with a head after each of its first 5 blocks, on
        # a stratified 28,000-image subset of Fashion-MNIST's 54,000 training images, each
        # phase capped at 10 epochs with early stopping (patience 3). lr 0.1 beat 0.05 for
        # every exit in a 6-epoch trial of the joint regime (final exit 87.5 % against 83.2 %).
        phase = PhaseConfig(epochs=10, lr=0.1, batch_size=128, patience=3)
        if arch is not None and arch_spec(arch).family == "vit":
            # A ViT does not train well with the ResNet's SGD at lr 0.1 (exits 56-62 % after 3
            # epochs of the joint regime); AdamW with a 1-epoch warm-up did (73-76 % at lr 1e-3,
            # 71-79 % at 3e-3; 10 epochs at 3e-3: 76.8-84.9 % in 224 s, at 5e-3: 76.9-85.1 % in
            # 258 s). Weight decay 0.05 as in the paper profile.
            phase = PhaseConfig(epochs=10, lr=3e-3, batch_size=128, patience=3, optimizer="adamw",
                                weight_decay=0.05, warmup_epochs=1)
        return dict(dataset="fashion-mnist", train_size=28_000, arch="resnet-cpu",
                    exit_after_blocks=(1, 2, 3, 4, 5), backbone_phase=phase, joint_phase=phase,
                    heads_phase=phase)
    # paper: STUDY.md §2 and §6. Patience 20 is our choice; the paper's is not known.
    arch = arch or "resnet34"
    family = arch_spec(arch).family
    if family == "vit":
        phase = PhaseConfig(epochs=200, lr=1e-3, batch_size=256, optimizer="adamw",
                            weight_decay=0.05, warmup_epochs=5, patience=20)
        exits = (4, 6, 8, 10)
    elif family == "msdnet":  # MSDNet's own CIFAR recipe (Huang et al. 2018); the study's is not known
        phase = PhaseConfig(epochs=200, lr=0.1, batch_size=64, weight_decay=1e-4, patience=20)
        exits = tuple(range(1, arch_spec(arch).num_blocks))  # a classifier after every block, as MSDNet has
    else:
        phase = PhaseConfig(epochs=200, lr=0.05, batch_size=128, weight_decay=5e-4, patience=20)
        exits = (5, 7, 9, 11, 13, 15)
    num_blocks = arch_spec(arch).num_blocks
    if exits[-1] >= num_blocks:  # not one of the paper's depths: a head after every block
        exits = tuple(range(1, num_blocks))
    later = phase if family == "msdnet" else replace(phase, batch_size=256)
    return dict(dataset="cifar100", arch=arch, exit_after_blocks=exits, trivial_augment=True,
                precision="bf16",
                backbone_phase=phase, joint_phase=later, heads_phase=later)


PHASE_FIELDS = tuple(f.name for f in fields(PhaseConfig))
#: The names of :func:`make_config` that make a pretraining split (:func:`with_pretraining_split`).
SPLIT_FIELDS = ("total_epochs", "backbone_epochs")


def make_config(profile: str = "cpu", **overrides: Any) -> RunConfig:
    """The profile's configuration with ``overrides`` applied.

    Besides :class:`RunConfig`'s fields, an override may name a :class:`PhaseConfig` field
    (``epochs=3``, ``lr=0.1``), which then applies to all three phases, or give a phase as a
    dict of changes (``joint_phase={"lr": 0.01}``). ``total_epochs=N, backbone_epochs=k``
    (both together, no ``regime``) make the pretraining split :func:`with_pretraining_split`,
    so that a study's grid can sweep ``k``. Unknown names raise with the valid ones.
    """
    _choose("profile", profile, PROFILES)
    split = {k: overrides.pop(k) for k in SPLIT_FIELDS if k in overrides}
    if split:
        if len(split) != 2 or "regime" in overrides:
            raise ValueError(f"a pretraining split needs both {' and '.join(SPLIT_FIELDS)} and sets the "
                             f"regime itself; got {sorted(split)}" + (" and a regime" if "regime" in overrides else ""))
        return with_pretraining_split(make_config(profile, **overrides), split["total_epochs"],
                                      split["backbone_epochs"])
    run_fields = {f.name for f in fields(RunConfig)} - {"profile"}
    unknown = set(overrides) - run_fields - set(PHASE_FIELDS) - set(SPLIT_FIELDS)
    if unknown:
        raise ValueError(f"unknown configuration names {sorted(unknown)}; valid names: "
                         f"{', '.join(sorted(run_fields | set(PHASE_FIELDS) | set(SPLIT_FIELDS)))}")
    values = _profile_defaults(profile, overrides.get("arch"))
    if "arch" in overrides and "exit_after_blocks" not in overrides and profile != "paper":
        values.pop("exit_after_blocks")
        num_blocks = arch_spec(overrides["arch"]).num_blocks
        values["exit_after_blocks"] = tuple(range(1, num_blocks))
    shared_phase = {k: overrides.pop(k) for k in list(overrides) if k in PHASE_FIELDS}
    for name in ("backbone_phase", "joint_phase", "heads_phase"):
        phase = values.get(name, PhaseConfig(epochs=6, lr=0.05))
        change = overrides.pop(name, {})
        if isinstance(change, PhaseConfig):
            phase, change = change, {}
        unknown = set(change) - set(PHASE_FIELDS)
        if unknown:
            raise ValueError(f"unknown phase settings {sorted(unknown)} in {name}; valid: "
                             f"{', '.join(PHASE_FIELDS)}")
        values[name] = replace(phase, **{**shared_phase, **change})
    values.update(overrides)
    return RunConfig(profile=profile, **values)


def with_pretraining_split(config: RunConfig, total_epochs: int, backbone_epochs: int) -> RunConfig:
    """The pretraining-length study (STUDY.md §2): of ``total_epochs``, phase 1 gets
    ``backbone_epochs`` = k and phase 2 gets the rest. k = 0 is the joint regime with all N
    epochs; k = N trains the backbone for N epochs and then, as the disjoint regime does, the
    heads alone (with ``heads_phase``'s cap), since phase 2 would get no epoch."""
    total_epochs, backbone_epochs = int(total_epochs), int(backbone_epochs)
    if not 0 <= backbone_epochs <= total_epochs or total_epochs < 1:
        raise ValueError(f"backbone_epochs must lie in 0..{total_epochs}, got {backbone_epochs}")
    if backbone_epochs == 0:
        return replace(config, regime="joint", joint_phase=replace(config.joint_phase, epochs=total_epochs))
    if backbone_epochs == total_epochs:
        return replace(config, regime="disjoint",
                       backbone_phase=replace(config.backbone_phase, epochs=total_epochs))
    return replace(config, regime="mixed",
                   backbone_phase=replace(config.backbone_phase, epochs=backbone_epochs),
                   joint_phase=replace(config.joint_phase, epochs=total_epochs - backbone_epochs))


__all__ = ["DATASETS", "METHODS", "PROFILES", "PhaseConfig", "REGIMES", "RunConfig",
           "make_config", "stable_hash", "with_pretraining_split"]
