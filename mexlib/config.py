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
import itertools
import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from . import paths
from .data import DATASETS, dataset_spec
from .hardware import COMPILE_MODES, PRECISIONS
from .methods import METHODS
from .models import arch_spec, check_exit_placement, check_head, default_head_kind
from .models.encoders import PREFERRED_FINAL_HEADS, PREFERRED_HEADS
from .registry import check, lookup
from .values import canonical_numbers, check_flags, check_range, check_text

REGIMES = {
    "disjoint": "phase 1 (backbone) then phase 3 (heads only, backbone frozen)",
    "joint": "phase 2 only (backbone and heads together, from scratch)",
    "mixed": "phase 1 (backbone) then phase 2 (all, starting from the phase-1 backbone)",
}
#: Regimes that are controls, not the paper's: trained and stored like the regimes, never part
#: of a study's default grid.
CONTROL_REGIMES = {
    "continued": "phase 1 (backbone), the backbone alone again for phase 2's epochs and schedule (a warm "
                 "restart, as mixed has), then phase 3 (heads only): the landscape chapter's control for "
                 "mixed's fine-tuning from the phase-1 weights",
}
#: Every value the ``regime`` field takes.
ALL_REGIMES = {**REGIMES, **CONTROL_REGIMES}
#: The phases each regime runs, in order ("continue": the backbone alone, with phase 2's settings).
REGIME_PHASES = {"disjoint": ("backbone", "heads"), "joint": ("joint",), "mixed": ("backbone", "joint"),
                 "continued": ("backbone", "continue", "heads")}
#: The phases that train the plain backbone alone, on its own classifier's loss.
BACKBONE_ALONE = ("backbone", "continue")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


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
        if self.epochs is None:
            raise ValueError("epochs must be a whole number, got None")
        canonical_numbers(self, floats=("lr", "weight_decay", "momentum"),
                           ints=("epochs", "batch_size", "warmup_epochs", "patience"))
        check(self.optimizer, OPTIMIZERS, "optimizer")
        check(self.schedule, SCHEDULES, "schedule")
        check_range("epochs", self.epochs, 0)
        check_range("warmup_epochs", self.warmup_epochs, 0)
        check_range("lr", self.lr, 0, low_open=True)
        check_range("batch_size", self.batch_size, 1)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("momentum", self.momentum, 0, 1, high_open=True)
        check_range("patience", self.patience, 1)  # None: no early stopping


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one multi-exit run."""

    profile: str
    dataset: str = "fashion-mnist"
    train_size: int | None = None  # a stratified subset of the training split (None: all)
    val_size: int | None = None  # a stratified subset of the validation split (None: all); smoke
    test_size: int | None = None  # the first n test images, a stratified n of the test texts (None: all)
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
    # CUDA only: deterministic kernels (mexlib.hardware.deterministic_kernels), so a rerun on the same
    # GPU and software is bit-identical, at some cost in speed; the CPU's runs are bit-identical already
    deterministic: bool = False
    # which initialisation of the heads: they draw from seed + 1,000,000 × (1 + head_init), so at
    # the default every regime of a seed starts its heads from the same weights (the landscape
    # chapter's control sets 1)
    head_init: int = 0
    # how the training step runs (mexlib.hardware.step_mode): "auto" compiles where that was measured
    # faster (transformers on CUDA) and runs eagerly elsewhere; the store keys a run by what it resolved to
    compile: str = "auto"
    # how the last exit reads a text encoder's last layer (models.encoders.FINAL_HEADS): "own", the
    # model's own classifier (BERT: the pooler on [CLS]), or "mean", the mean of the real tokens into
    # it; every image model has only its own
    final_head: str = "own"

    def __post_init__(self):
        canonical_numbers(self, floats=("val_fraction",), ints=("train_size", "val_size", "test_size", "seed", "head_init"))
        check_text(self, ("dataset", "arch", "head", "final_head"))  # the others: checked against their choices
        check_flags(self, ("augment", "trivial_augment", "deterministic"))
        for name in ("backbone_phase", "joint_phase", "heads_phase"):
            if not isinstance(getattr(self, name), PhaseConfig):
                raise ValueError(f"{name} must be a PhaseConfig (or, in make_config, a dict of its fields), "
                                 f"got {getattr(self, name)!r}")
        check_range("seed", self.seed, 0)
        check(self.profile, PROFILES, "profile")
        data = dataset_spec(self.dataset)
        arch = arch_spec(self.arch)
        if data.modality != arch.modality:
            fitting = "a text encoder (minilm-l6, bert-base, bert-smoke or huggingface:<model>)" \
                if data.modality == "text" else "an image model (resnet-cpu, vit-cpu, torchvision:<builder>, ...)"
            raise ValueError(f"the data set {self.dataset!r} holds {data.modality}s but the architecture "
                             f"{self.arch!r} reads {arch.modality}s: choose {fitting}, or a data set of "
                             f"{arch.modality}s")
        check(self.regime, tuple(ALL_REGIMES), "regime")
        check(self.method, tuple(METHODS), "method")
        check(self.precision, PRECISIONS, "precision")
        check(self.compile, COMPILE_MODES, "compile mode", "modes")
        if self.head == "auto":  # resolved here, so "auto" and its choice share one store key
            object.__setattr__(self, "head", default_head_kind(arch.layout))
        check_head(self.head, arch.layout)
        arch.check_final_head(self.final_head)
        blocks = self.exit_after_blocks
        if (isinstance(blocks, (str, bytes)) or not hasattr(blocks, "__iter__")
                or not all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in blocks)):
            raise ValueError(f"exit_after_blocks must be whole block numbers (e.g. (1, 2, 3)), got {blocks!r}")
        object.__setattr__(self, "exit_after_blocks", tuple(int(b) for b in blocks))
        check_exit_placement(self.exit_after_blocks, arch.num_blocks)
        check_range("val_fraction", self.val_fraction, 0, 1, low_open=True, high_open=True)
        check_range("head_init", self.head_init, 0)  # 0: the regimes' shared heads
        for name in ("train_size", "val_size", "test_size"):
            check_range(name, getattr(self, name), 1)  # None: all

    # --- derived -------------------------------------------------------------------------

    @property
    def head_kind(self) -> str:
        return self.head

    @property
    def phases(self) -> tuple[str, ...]:
        return REGIME_PHASES[self.regime]

    def phase(self, name: str) -> PhaseConfig:
        return {"backbone": self.backbone_phase, "continue": self.joint_phase, "joint": self.joint_phase,
                "heads": self.heads_phase}[name]

    def with_regime(self, regime: str) -> "RunConfig":
        return replace(self, regime=regime)

    def backbone_config(self) -> dict:
        """What determines phase 1: disjoint and mixed runs that agree on it share one
        trained backbone (the final classifier trains with it, so how it reads counts)."""
        keys = ("profile", "dataset", "train_size", "val_size", "test_size", "val_fraction", "arch", "seed",
                "precision", "augment", "trivial_augment", "backbone_phase", "deterministic", "compile", "final_head")
        return {k: v for k, v in self.to_dict().items() if k in keys}

    # --- serialisation and hashing -------------------------------------------------------

    def to_dict(self) -> dict:
        """The configuration as plain values; a field added after runs were stored is left out at
        its default (:data:`LATER_FIELDS`), so those runs keep their store keys."""
        values = dataclasses.asdict(self)
        for name, defaults in LATER_FIELDS.items():
            if values.get(name) in defaults:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        values = dict(values)
        for name in ("backbone_phase", "joint_phase", "heads_phase"):
            if isinstance(values.get(name), dict):
                values[name] = PhaseConfig(**values[name])
        return cls(**values)


#: Fields added to :class:`RunConfig` after runs were stored, with the values that mean what every
#: run stored before meant: left out of :meth:`RunConfig.to_dict` (and so of every store key) at
#: them. ``compile="auto"`` is one of them: the store resolves it before keying a run
#: (:meth:`mexlib.store.RunStore.resolve`), and it means ``"eager"`` wherever runs were stored
#: before (the CPU; CNNs on a GPU).
LATER_FIELDS = {"deterministic": (False,), "head_init": (0,), "compile": ("eager", "auto"), "final_head": ("own",)}


def stable_hash(values: dict, salt: str = "") -> str:
    """A short hash of canonical JSON: the same values give the same key on every machine."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":")) + salt
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- profiles ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    """Everything a profile decides besides a run's configuration: the one table that knows
    what ``smoke``, ``cpu`` and ``paper`` mean (the runs' own settings: :func:`make_config`)."""

    name: str
    description: str
    seeds: tuple[int, ...]  # the seeds of every study chapter unless a notebook names its own
    progress: bool  # progress bars while training
    notebooks_at_once: int  # make reproduce's default number of notebooks executed together
    figures_subfolder: str  # under figures/: "" for the committed profile's figures
    archs: tuple[str, ...]  # the architectures chapter's default
    tour_training: dict = field(default_factory=dict)  # the tour's overrides of make_config
    # analysis sizes: loss planes (steps × steps points), paths, test and BatchNorm samples
    plane_steps: int = 25
    path_steps: int = 21
    eval_size: int = 256
    bn_size: int = 256
    latency_repeats: int = 20  # timed repetitions of an exit not in figures/exit_latency.csv
    beside_the_paper: bool = False  # tables print the paper's Table 1 numbers beside ours
    regimes_seeds: tuple[int, ...] = ()  # the regimes chapter's, where it has more (empty: seeds)
    # the language chapter's text encoder and data set (a text data set's encoder, a text encoder's data)
    text_arch: str = "minilm-l6"
    text_dataset: str = "wordnet-supersenses"


PROFILES: dict[str, Profile] = {p.name: p for p in [
    Profile("smoke", "the whole pipeline at toy scale in seconds (tests, CI)", seeds=(0, 1), progress=False,
            notebooks_at_once=2, figures_subfolder="smoke", archs=("resnet-smoke", "msdnet-smoke", "vit-smoke"),
            plane_steps=5, path_steps=5, eval_size=64, bn_size=64, latency_repeats=3, text_arch="bert-smoke"),
    Profile("cpu", "real results on a 2-core machine without a GPU (the committed figures)", seeds=(0, 1, 2),
            progress=True, notebooks_at_once=1, figures_subfolder="", archs=("resnet-cpu", "msdnet-cpu", "vit-cpu"),
            tour_training={"epochs": 3, "train_size": 12_000}, regimes_seeds=(0, 1, 2, 3, 4)),
    Profile("paper", "the paper's models and data sets, for a GPU", seeds=(0, 1, 2), progress=True,
            notebooks_at_once=1, figures_subfolder="paper", archs=("resnet34", "msdnet-cifar", "vit-t"),
            tour_training={"epochs": 3, "train_size": 12_000}, beside_the_paper=True, text_arch="bert-base",
            text_dataset="20newsgroups"),
]}


def profile_settings(name: str) -> Profile:
    """The :class:`Profile` called ``name``; an unknown one raises with the valid names."""
    return lookup(PROFILES, name, "profile")


def figures_dir(profile: str) -> Path:
    """The profile's figures and tables: ``figures/`` itself for the cpu profile (committed, shown
    in the README), ``figures/<profile>/`` for the others, so a smoke run never overwrites them."""
    return paths.figures_root() / profile_settings(profile).figures_subfolder


def profile_seeds(profile: str, seeds=None, chapter: str | None = None) -> tuple[int, ...]:
    """``seeds`` as a tuple, or the profile's when None (``chapter="regimes"``: the regimes
    chapter's, 5 seeds in the cpu profile, where its verdicts rest on paired intervals)."""
    if seeds is not None:
        return tuple(seeds)
    settings = profile_settings(profile)
    if chapter == "regimes" and settings.regimes_seeds:
        return tuple(settings.regimes_seeds)
    return tuple(settings.seeds)


def grid_points(profile: str, grid: Mapping[str, Sequence], seeds: Iterable[int],
                overrides: Mapping[str, Any]) -> list[tuple[dict, int, RunConfig]]:
    """Every point of ``grid`` × ``seeds``: ``(grid values, seed, configuration)``, seed by seed.
    The evaluation-only field ``policy`` (the exit rule) is part of a point but not of its
    configuration."""
    for name, where in (("seed", "the seeds"), ("profile", "the profile")):
        if name in grid or name in overrides:
            raise ValueError(f"{name} is not a grid or fixed value: give {where} on their own "
                             f"(run_study's/grid_configs' {name}{'s' if name == 'seed' else ''} argument; "
                             f"--{name}{'s' if name == 'seed' else ''} on the command line)")
    both = sorted(set(grid) & set(overrides))
    if both:
        raise ValueError(f"{', '.join(both)} is both a grid axis and a fixed value: give it once, as a grid "
                         f"(several values) or as a fixed value (one)")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"the grid's {name} takes a list of values, got {values!r}")
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    return [(point, seed, make_config(profile, seed=seed, **overrides,
                                      **{k: v for k, v in point.items() if k != "policy"}))
            for seed in seeds for point in points]


def grid_configs(profile: str, grid: Mapping[str, Sequence] | None, seeds: Iterable[int], /,
                 **overrides) -> list[RunConfig]:
    """The configurations of ``grid`` × ``seeds``, as :func:`mexlib.study.run_study` builds them."""
    return [config for _, _, config in grid_points(profile, grid or {}, seeds, overrides)]


def _text_defaults(profile: str, arch: str | None) -> dict:
    """A text encoder's: fine-tuning with AdamW (the cpu profile's small MiniLM at 1e-4, the paper's
    BERT-Base at BERT's 2e-5) for the phases that train the encoder, 1e-3 for the heads on a frozen
    one (linear heads from scratch learn slowly at fine-tuning rates); a head after every layer
    (the ZTW NLP code's placement), of the kind the encoder's pretraining suits (PREFERRED_HEADS),
    the last exit too (PREFERRED_FINAL_HEADS);
    no augmentation."""
    tune = dict(optimizer="adamw", weight_decay=0.01)
    texts = dict(augment=False)  # nothing augments texts: the configuration says so
    if arch in PREFERRED_HEADS:
        texts["head"] = PREFERRED_HEADS[arch]
    if arch in PREFERRED_FINAL_HEADS:
        texts["final_head"] = PREFERRED_FINAL_HEADS[arch]
    if profile == "smoke":
        phase = PhaseConfig(epochs=2, lr=1e-3, batch_size=32, **tune)
        return dict(dataset=profile_settings(profile).text_dataset, train_size=640, val_size=256, test_size=256, arch="bert-smoke",
                    backbone_phase=phase, joint_phase=phase, heads_phase=phase, **texts)
    if profile == "cpu":  # sized by benchmarks/language_cost.py (README: the language chapter)
        phase = PhaseConfig(epochs=2, lr=1e-4, batch_size=32, **tune)
        return dict(dataset=profile_settings(profile).text_dataset, train_size=6_000, val_size=2_000, test_size=5_000, arch=arch,
                    backbone_phase=phase, joint_phase=phase, heads_phase=replace(phase, lr=1e-3), **texts)
    phase = PhaseConfig(epochs=5, lr=2e-5, batch_size=32, patience=2, **tune)
    return dict(dataset=profile_settings(profile).text_dataset, arch=arch, exit_after_blocks=tuple(range(1, arch_spec(arch).num_blocks)),
                backbone_phase=phase, joint_phase=phase, heads_phase=replace(phase, lr=1e-3), precision="bf16", **texts)


def _profile_defaults(profile: str, arch: str | None) -> dict:
    if arch is not None and arch_spec(arch).modality == "text":
        return _text_defaults(profile, arch)
    if profile == "smoke":
        phase = PhaseConfig(epochs=2, lr=0.05, batch_size=64)
        return dict(dataset="fashion-mnist", train_size=640, val_size=500, test_size=500, arch="resnet-smoke",
                    exit_after_blocks=(1, 2), backbone_phase=phase, joint_phase=phase,
                    heads_phase=phase)
    if profile == "cpu":
        # A 6-block ResNet on 28,000 of Fashion-MNIST's training images, phases capped at 10
        # epochs (patience 3); the trials behind each choice: benchmarks/README.md
        phase = PhaseConfig(epochs=10, lr=0.1, batch_size=128, patience=3)
        if arch is not None and arch_spec(arch).family == "vit":
            # AdamW with a warm-up: the ResNet's SGD recipe trains a ViT badly (benchmarks/README.md)
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
    check(profile, PROFILES, "profile")
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
    if "arch" not in overrides and "dataset" in overrides and dataset_spec(overrides["dataset"]).modality == "text":
        overrides["arch"] = profile_settings(profile).text_arch
    values = _profile_defaults(profile, overrides.get("arch"))
    if "arch" in overrides and "exit_after_blocks" not in overrides and profile != "paper":
        values.pop("exit_after_blocks", None)
        num_blocks = arch_spec(overrides["arch"]).num_blocks
        values["exit_after_blocks"] = tuple(range(1, num_blocks))
    shared_phase = {k: overrides.pop(k) for k in list(overrides) if k in PHASE_FIELDS}
    for name in ("backbone_phase", "joint_phase", "heads_phase"):
        phase = values.get(name, PhaseConfig(epochs=6, lr=0.05))
        change = overrides.pop(name, {})
        if isinstance(change, PhaseConfig):
            phase, change = change, {}
        if not isinstance(change, Mapping):
            raise ValueError(f"{name} takes a PhaseConfig or a dict of its fields to change (e.g. "
                             f"{{'lr': 0.01, 'epochs': 3}}; fields: {', '.join(PHASE_FIELDS)}), got {change!r}")
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


__all__ = ["ALL_REGIMES", "BACKBONE_ALONE", "CONTROL_REGIMES", "DATASETS", "METHODS", "PROFILES", "PhaseConfig",
           "Profile", "REGIMES", "RunConfig", "figures_dir",
           "grid_configs", "grid_points", "make_config", "profile_seeds", "profile_settings", "stable_hash",
           "with_pretraining_split"]
