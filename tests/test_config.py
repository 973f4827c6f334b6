"""Tests of mexlib.config: profiles, overrides, validation, hashing and the run store's keys.

Nothing here builds a model or touches data: a configuration is plain values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from mexlib import store
from mexlib.config import (ALL_REGIMES, CONTROL_REGIMES, OPTIMIZERS, PHASE_FIELDS, PROFILES, REGIME_PHASES, REGIMES, SCHEDULES,
                           PhaseConfig, RunConfig, make_config, stable_hash, with_pretraining_split)
from mexlib.data import DATASETS
from mexlib.methods import METHODS
from mexlib.models import ARCHITECTURES, HEAD_KINDS, arch_spec

PHASES = ("backbone_phase", "joint_phase", "heads_phase")
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name != "profile")


def _valid_exits(config: RunConfig) -> bool:
    blocks = config.exit_after_blocks
    num_blocks = arch_spec(config.arch).num_blocks
    return (len(blocks) > 0 and list(blocks) == sorted(set(blocks))
            and all(1 <= b < num_blocks for b in blocks))


def _assert_lists_all(message: str, choices) -> None:
    missing = [c for c in choices if str(c) not in message]
    assert not missing, f"the message does not name the valid choices {missing}: {message}"


# --- profiles and overrides --------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_profile_builds_a_valid_config(profile):
    config = make_config(profile)
    assert isinstance(config, RunConfig)
    assert config.profile == profile
    assert config.dataset in DATASETS and config.arch in ARCHITECTURES
    assert _valid_exits(config)
    assert config.regime in REGIMES and config.method in METHODS
    assert config.phases == REGIME_PHASES[config.regime]
    for name in PHASES:
        assert isinstance(getattr(config, name), PhaseConfig)
    # Rebuilding it from its own values gives the same configuration.
    assert RunConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}) == config


def test_profiles_differ_from_one_another():
    configs = [make_config(p) for p in PROFILES]
    assert len({store.run_key(c) for c in configs}) == len(PROFILES)


@pytest.mark.parametrize("arch", ["vit-t", "vit-s", "vit-b", "resnet34", "resnet50"])
def test_paper_profile_follows_the_architecture_family(arch):
    config = make_config("paper", arch=arch)
    assert config.arch == arch
    assert _valid_exits(config)
    family = arch_spec(arch).family
    assert HEAD_KINDS[config.head_kind][0] == ("conv" if family == "resnet" else "tokens")
    # The paper places its exits itself (STUDY.md §6), not after every block.
    assert config.exit_after_blocks != tuple(range(1, arch_spec(arch).num_blocks))


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_arch_override_places_an_exit_after_every_block_but_the_last(profile, arch):
    config = make_config(profile, arch=arch)
    assert config.arch == arch
    assert config.exit_after_blocks == tuple(range(1, arch_spec(arch).num_blocks))
    assert _valid_exits(config)


def test_arch_override_keeps_an_explicit_exit_placement():
    num_blocks = arch_spec("resnet-cpu").num_blocks
    exits = (num_blocks // 2, num_blocks - 1)
    config = make_config("smoke", arch="resnet-cpu", exit_after_blocks=exits)
    assert config.exit_after_blocks == exits


def test_run_field_overrides():
    base = make_config("smoke")
    changes = dict(seed=base.seed + 7, regime=next(r for r in REGIMES if r != base.regime),
                   method=next(m for m in METHODS if m != base.method),
                   dataset=next(d for d in DATASETS if d != base.dataset),
                   train_size=base.train_size // 2, val_fraction=base.val_fraction / 2,
                   trivial_augment=not base.trivial_augment)
    config = make_config("smoke", **changes)
    for name, value in changes.items():
        assert getattr(config, name) == value, name
    untouched = set(RUN_FIELDS) - set(changes)
    for name in untouched:
        assert getattr(config, name) == getattr(base, name), name


def test_exit_placement_is_stored_as_a_tuple_of_ints():
    config = make_config("smoke", exit_after_blocks=[1])
    assert config.exit_after_blocks == (1,)
    assert isinstance(config.exit_after_blocks, tuple)
    assert make_config("smoke", exit_after_blocks=[1, 2]) == make_config("smoke", exit_after_blocks=(1, 2))


def test_phase_field_override_applies_to_all_three_phases():
    base = make_config("smoke")
    changes = dict(epochs=base.joint_phase.epochs + 2, lr=base.joint_phase.lr * 3, patience=4,
                   optimizer=next(o for o in OPTIMIZERS if o != base.joint_phase.optimizer),
                   schedule=next(s for s in SCHEDULES if s != base.joint_phase.schedule),
                   batch_size=base.joint_phase.batch_size // 2)
    config = make_config("smoke", **changes)
    for phase_name in PHASES:
        phase = getattr(config, phase_name)
        before = getattr(base, phase_name)
        for name in PHASE_FIELDS:
            expected = changes.get(name, getattr(before, name))
            assert getattr(phase, name) == expected, (phase_name, name)


def test_per_phase_dict_override_changes_that_phase_only():
    base = make_config("smoke")
    new_lr = base.joint_phase.lr / 5
    config = make_config("smoke", joint_phase={"lr": new_lr})
    assert config.joint_phase == dataclasses.replace(base.joint_phase, lr=new_lr)
    assert config.backbone_phase == base.backbone_phase
    assert config.heads_phase == base.heads_phase


def test_per_phase_dict_wins_over_a_shared_phase_field():
    base = make_config("cpu")
    shared_lr, joint_lr = base.joint_phase.lr * 2, base.joint_phase.lr / 2
    config = make_config("cpu", lr=shared_lr, joint_phase={"lr": joint_lr, "epochs": 1})
    assert config.joint_phase.lr == joint_lr and config.joint_phase.epochs == 1
    for name in ("backbone_phase", "heads_phase"):
        assert getattr(config, name) == dataclasses.replace(getattr(base, name), lr=shared_lr)


def test_phase_given_as_a_phase_config_replaces_it():
    phase = PhaseConfig(epochs=2, lr=0.3, optimizer="adamw", patience=1)
    config = make_config("smoke", heads_phase=phase)
    assert config.heads_phase == phase
    assert config.joint_phase == make_config("smoke").joint_phase


# --- validation ---------------------------------------------------------------------------------

def test_unknown_profile_raises_with_the_choices():
    with pytest.raises(ValueError, match="profile") as error:
        make_config("laptop")
    _assert_lists_all(str(error.value), PROFILES)
    with pytest.raises(ValueError, match="profile") as error:
        RunConfig(profile="laptop")
    _assert_lists_all(str(error.value), PROFILES)


@pytest.mark.parametrize("name,value,choices", [
    ("dataset", "mnist", DATASETS),
    ("arch", "resnet-1000", ARCHITECTURES),
    ("regime", "sequential", ALL_REGIMES),
    ("method", "ee-magic", METHODS),
    ("head", "mlp", HEAD_KINDS),
])
def test_unknown_run_choice_raises_with_the_choices(name, value, choices):
    with pytest.raises(ValueError, match=repr(value)) as error:
        make_config("smoke", **{name: value})
    _assert_lists_all(str(error.value), choices)
    # The dataclass itself validates too, not just make_config.
    with pytest.raises(ValueError, match=repr(value)):
        dataclasses.replace(make_config("smoke"), **{name: value})


@pytest.mark.parametrize("name,value,choices", [
    ("optimizer", "lion", OPTIMIZERS),
    ("schedule", "step", SCHEDULES),
])
def test_unknown_phase_choice_raises_with_the_choices(name, value, choices):
    with pytest.raises(ValueError, match=repr(value)) as error:
        make_config("smoke", **{name: value})
    _assert_lists_all(str(error.value), choices)
    with pytest.raises(ValueError, match=repr(value)) as error:
        make_config("smoke", heads_phase={name: value})
    _assert_lists_all(str(error.value), choices)
    with pytest.raises(ValueError, match=repr(value)):
        PhaseConfig(epochs=1, lr=0.1, **{name: value})


@pytest.mark.parametrize("arch,head", [("resnet-smoke", "token"), ("vit-smoke", "pool")])
def test_head_that_does_not_fit_the_architecture_raises_at_construction(arch, head):
    family_layout = "conv" if arch_spec(arch).family == "resnet" else "tokens"
    fitting = [k for k, (layout, _) in HEAD_KINDS.items() if layout == family_layout]
    with pytest.raises(ValueError, match=repr(head)) as error:
        make_config("smoke", arch=arch, head=head)
    _assert_lists_all(str(error.value), fitting)


def _placements(num_blocks: int):
    return {
        "zero": (0, 1),
        "equals num_blocks": (1, num_blocks),
        "beyond num_blocks": (num_blocks + 1,),
        "decreasing": (num_blocks - 1, 1),
        "duplicate": (1, 1),
        "empty": (),
    }


@pytest.mark.parametrize("case", list(_placements(2)))
@pytest.mark.parametrize("arch", ["resnet-smoke", "vit-cpu"])
def test_bad_exit_placement_raises_with_the_valid_range(arch, case):
    num_blocks = arch_spec(arch).num_blocks
    exits = _placements(num_blocks)[case]
    with pytest.raises(ValueError, match="exit_after_blocks") as error:
        make_config("smoke", arch=arch, exit_after_blocks=exits)
    assert f"1..{num_blocks - 1}" in str(error.value)


@pytest.mark.parametrize("where", ["shared", "per phase", "direct"])
@pytest.mark.parametrize("name", ["epochs", "warmup_epochs"])
def test_negative_epochs_raise(name, where):
    with pytest.raises(ValueError, match=name):
        if where == "shared":
            make_config("smoke", **{name: -1})
        elif where == "per phase":
            make_config("smoke", backbone_phase={name: -1})
        else:
            PhaseConfig(**{"epochs": 1, "lr": 0.1, name: -1})


def test_zero_epochs_are_allowed():
    assert make_config("smoke", heads_phase={"epochs": 0}).heads_phase.epochs == 0


@pytest.mark.parametrize("settings", [dict(lr=0), dict(lr=-0.1), dict(batch_size=0),
                                      dict(weight_decay=-1e-4), dict(patience=0),
                                      dict(val_fraction=0), dict(val_fraction=1),
                                      dict(train_size=0), dict(test_size=-5)])
def test_out_of_range_numbers_raise(settings):
    with pytest.raises(ValueError):
        make_config("smoke", **settings)


def test_unknown_override_name_raises_with_the_valid_names():
    with pytest.raises(ValueError, match="learning_rate") as error:
        make_config("smoke", learning_rate=0.1, seed=1)
    _assert_lists_all(str(error.value), RUN_FIELDS + PHASE_FIELDS)


def test_unknown_per_phase_key_raises_with_the_valid_keys():
    with pytest.raises(ValueError, match="momentun") as error:
        make_config("smoke", joint_phase={"momentun": 0.8})
    assert "joint_phase" in str(error.value)
    _assert_lists_all(str(error.value), PHASE_FIELDS)


# --- hashing and serialisation ------------------------------------------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_to_dict_from_dict_round_trip(profile):
    config = make_config(profile, regime="disjoint", seed=3, joint_phase={"lr": 0.01})
    assert RunConfig.from_dict(config.to_dict()) == config
    # Through JSON too, as the run store keeps it (tuples come back as lists).
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert stable_hash(json.loads(json.dumps(config.to_dict()))) == stable_hash(config.to_dict())


def test_equal_configs_hash_equal():
    a = make_config("smoke", seed=2, exit_after_blocks=[1, 2])
    b = make_config("smoke", exit_after_blocks=(1, 2), seed=2)
    assert a == b and a is not b
    assert stable_hash(a.to_dict()) == stable_hash(b.to_dict())
    assert store.run_key(a) == store.run_key(b)
    assert store.backbone_key(a) == store.backbone_key(b)


@pytest.mark.parametrize("change", [dict(seed=1), dict(regime="joint"), dict(regime="disjoint"),
                                    dict(joint_phase={"lr": 0.01}), dict(heads_phase={"epochs": 3}),
                                    dict(backbone_phase={"patience": 3}), dict(method="pbee"),
                                    dict(exit_after_blocks=(2,)), dict(head="conv1"),
                                    dict(train_size=500), dict(trivial_augment=True)])
def test_any_field_change_changes_the_hash(change):
    base = make_config("smoke")
    changed = make_config("smoke", **change)
    assert changed != base
    assert stable_hash(changed.to_dict()) != stable_hash(base.to_dict())
    assert store.run_key(changed) != store.run_key(base)


def test_hash_ignores_dict_insertion_order():
    values = make_config("cpu").to_dict()

    def reversed_order(d):
        return {k: reversed_order(v) if isinstance(v, dict) else v for k, v in reversed(d.items())}

    shuffled = reversed_order(values)
    assert list(shuffled) != list(values)
    assert list(shuffled["joint_phase"]) != list(values["joint_phase"])
    assert stable_hash(shuffled) == stable_hash(values)
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})


def test_hash_depends_on_the_salt_and_is_short_hex():
    values = make_config("smoke").to_dict()
    key = stable_hash(values)
    assert key != stable_hash(values, salt="x")
    assert len(key) == 16 and int(key, 16) >= 0


def test_hash_is_the_same_in_a_fresh_interpreter():
    config = make_config("smoke", seed=5, regime="joint")
    code = ("import json, sys; from mexlib.config import RunConfig, stable_hash; "
            "print(stable_hash(RunConfig.from_dict(json.loads(sys.argv[1])).to_dict()))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(config.to_dict())], env=env,
                         capture_output=True, text=True, check=True, timeout=100).stdout.strip()
    assert out == stable_hash(config.to_dict())


def test_equal_configs_with_int_and_float_numbers_hash_equal():
    a = make_config("smoke", weight_decay=0, lr=1)
    b = make_config("smoke", weight_decay=0.0, lr=1.0)
    assert a == b
    assert store.run_key(a) == store.run_key(b)


# --- the run store's keys -----------------------------------------------------------------------

def test_disjoint_and_mixed_of_a_seed_share_the_backbone():
    disjoint = make_config("smoke", regime="disjoint", seed=4)
    mixed = make_config("smoke", regime="mixed", seed=4)
    assert disjoint.backbone_config() == mixed.backbone_config()
    assert store.backbone_key(disjoint) == store.backbone_key(mixed)
    assert store.run_key(disjoint) != store.run_key(mixed)


@pytest.mark.parametrize("change", [dict(seed=1), dict(backbone_phase={"lr": 0.01}),
                                    dict(backbone_phase={"epochs": 3}), dict(train_size=500),
                                    dict(arch="resnet-cpu"), dict(trivial_augment=True), dict(augment=False),
                                    dict(val_fraction=0.2)])
def test_backbone_key_follows_what_determines_phase_one(change):
    base = make_config("smoke", regime="disjoint")
    changed = make_config("smoke", regime="disjoint", **change)
    assert changed.backbone_config() != base.backbone_config()
    assert store.backbone_key(changed) != store.backbone_key(base)


@pytest.mark.parametrize("change", [dict(heads_phase={"lr": 0.01}), dict(joint_phase={"epochs": 3}),
                                    dict(exit_after_blocks=(2,)), dict(method="pbee"),
                                    dict(head="conv2"), dict(regime="joint")])
def test_backbone_key_ignores_what_phase_one_does_not_use(change):
    base = make_config("smoke", regime="mixed")
    changed = make_config("smoke", **{"regime": "mixed", **change})
    assert changed.backbone_config() == base.backbone_config()
    assert store.backbone_key(changed) == store.backbone_key(base)
    assert store.run_key(changed) != store.run_key(base)


def test_run_key_differs_across_regimes():
    base = make_config("smoke")
    keys = {store.run_key(base.with_regime(r)) for r in REGIMES}
    assert len(keys) == len(REGIMES)


def test_profile_participates_in_both_keys():
    smoke = make_config("smoke")
    as_cpu = dataclasses.replace(smoke, profile="cpu")
    assert as_cpu.profile == "cpu"
    assert store.run_key(as_cpu) != store.run_key(smoke)
    assert store.backbone_key(as_cpu) != store.backbone_key(smoke)


def test_run_and_backbone_keys_differ():
    config = make_config("smoke", regime="disjoint")
    assert store.run_key(config) != store.backbone_key(config)


# --- pretraining-length split ------------------------------------------------------------------

TOTAL = 8


def test_split_zero_is_joint_with_all_epochs():
    config = make_config("smoke", regime="mixed")
    split = with_pretraining_split(config, TOTAL, 0)
    assert split.regime == "joint" and split.phases == REGIME_PHASES["joint"]
    assert split.joint_phase == dataclasses.replace(config.joint_phase, epochs=TOTAL)
    assert split.backbone_phase == config.backbone_phase and split.heads_phase == config.heads_phase


def test_split_all_is_disjoint_with_all_backbone_epochs():
    config = make_config("smoke", regime="joint")
    split = with_pretraining_split(config, TOTAL, TOTAL)
    assert split.regime == "disjoint" and split.phases == REGIME_PHASES["disjoint"]
    assert split.backbone_phase == dataclasses.replace(config.backbone_phase, epochs=TOTAL)
    assert split.heads_phase == config.heads_phase and split.joint_phase == config.joint_phase


@pytest.mark.parametrize("k", [TOTAL // 4, TOTAL // 2, 3 * TOTAL // 4, 1, TOTAL - 1])
def test_split_between_is_mixed(k):
    config = make_config("smoke", regime="disjoint", seed=2, joint_phase={"lr": 0.01})
    split = with_pretraining_split(config, TOTAL, k)
    assert split.regime == "mixed" and split.phases == REGIME_PHASES["mixed"]
    assert split.backbone_phase == dataclasses.replace(config.backbone_phase, epochs=k)
    assert split.joint_phase == dataclasses.replace(config.joint_phase, epochs=TOTAL - k)
    assert split.backbone_phase.epochs + split.joint_phase.epochs == TOTAL
    assert split.seed == config.seed and split.heads_phase == config.heads_phase
    # Its phase 1 is the same run as a disjoint run's with k backbone epochs.
    disjoint_k = make_config("smoke", regime="disjoint", seed=2, backbone_phase={"epochs": k})
    assert store.backbone_key(split) == store.backbone_key(disjoint_k)


def test_split_lengths_give_distinct_runs():
    config = make_config("smoke")
    splits = [with_pretraining_split(config, TOTAL, k) for k in range(0, TOTAL + 1, TOTAL // 4)]
    assert len({store.run_key(s) for s in splits}) == len(splits)


@pytest.mark.parametrize("k", [-1, TOTAL + 1])
def test_split_out_of_range_raises(k):
    with pytest.raises(ValueError, match=f"0..{TOTAL}"):
        with_pretraining_split(make_config("smoke"), TOTAL, k)


@pytest.mark.parametrize("k", [0, 3, TOTAL])
def test_make_config_makes_the_pretraining_split_from_its_two_names(k):
    made = make_config("smoke", seed=1, total_epochs=TOTAL, backbone_epochs=k, lr=0.02)
    assert made == with_pretraining_split(make_config("smoke", seed=1, lr=0.02), TOTAL, k)


@pytest.mark.parametrize("names", [dict(total_epochs=8), dict(backbone_epochs=2),
                                   dict(total_epochs=8, backbone_epochs=2, regime="joint")])
def test_an_incomplete_or_conflicting_split_raises(names):
    with pytest.raises(ValueError, match="needs both total_epochs and backbone_epochs"):
        make_config("smoke", **names)
    with pytest.raises(ValueError, match="backbone_epochs must lie in 0..8"):
        make_config("smoke", total_epochs=8, backbone_epochs=9)


def test_a_field_added_later_leaves_the_keys_of_stored_runs_as_they_were():
    """``deterministic`` came after runs were stored: at its default it is not part of the
    configuration's dictionary, so every stored run keeps its key; set, it makes a run of its own."""
    import dataclasses

    from mexlib.config import LATER_FIELDS, RunConfig, stable_hash
    from mexlib.store import RESULTS_VERSION, backbone_key, run_key

    config = make_config("smoke", regime="mixed")
    before = {k: v for k, v in dataclasses.asdict(config).items() if k not in LATER_FIELDS}  # as runs were keyed
    assert "deterministic" in LATER_FIELDS and "deterministic" not in config.to_dict()
    assert run_key(config) == stable_hash(before, salt=f"run-v{RESULTS_VERSION}")
    strict = make_config("smoke", regime="mixed", deterministic=True)
    assert strict.to_dict()["deterministic"] is True
    assert run_key(strict) != run_key(config) and backbone_key(strict) != backbone_key(config)
    assert RunConfig.from_dict(strict.to_dict()) == strict and RunConfig.from_dict(config.to_dict()) == config


def test_deterministic_kernels_are_switched_on_for_cuda_only_and_restored():
    import os

    import torch

    from mexlib.hardware import deterministic_kernels

    state = lambda: (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,  # noqa: E731
                     torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    before = state()
    with deterministic_kernels(torch.device("cpu"), True):
        assert state() == before  # the CPU's kernels are deterministic already
    with deterministic_kernels(torch.device("cuda"), False):
        assert state() == before
    with deterministic_kernels(torch.device("cuda"), True):  # the flags need no GPU to be set
        assert state()[:3] == (True, True, False) and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert state() == before


def test_control_regimes_are_valid_values_with_their_own_phases():
    """``continued`` trains and is keyed like a regime: phase 1, the backbone alone again with
    phase 2's settings, then the heads."""
    assert set(CONTROL_REGIMES).isdisjoint(REGIMES) and set(ALL_REGIMES) == set(REGIMES) | set(CONTROL_REGIMES)
    config = make_config("smoke", regime="continued")
    assert config.phases == ("backbone", "continue", "heads")
    assert config.phase("continue") == config.joint_phase


def test_head_init_is_a_whole_number_from_zero():
    assert make_config("smoke", head_init=2.0).head_init == 2
    for bad in (-1, 0.5):
        with pytest.raises(ValueError, match="head_init"):
            make_config("smoke", head_init=bad)


#: Values of the wrong type, out of range or not finite, each with the words its error must say.
BAD_VALUES = {
    "lr=nan": (dict(lr=float("nan")), "lr must be a finite number, got nan"),
    "lr=inf": (dict(lr=float("inf")), "lr must be a finite number, got inf"),
    "lr=0": (dict(lr=0), "lr must be > 0, got 0.0"),
    "momentum=nan": (dict(momentum=float("nan")), "momentum must be a finite number, got nan"),
    "momentum=1": (dict(momentum=1), r"momentum must be in \[0, 1\), got 1.0"),
    "weight_decay=-1": (dict(weight_decay=-1), "weight_decay must be >= 0, got -1.0"),
    "epochs=2.5": (dict(epochs=2.5), "epochs must be a whole number, got 2.5"),
    "epochs='3'": (dict(epochs="3"), "epochs must be a whole number, got '3'"),
    "batch_size=0": (dict(batch_size=0), "batch_size must be >= 1, got 0"),
    "patience=0": (dict(patience=0), "patience must be >= 1, got 0"),
    "augment='maybe'": (dict(augment="maybe"), "augment must be True or False, got 'maybe'"),
    "trivial_augment=1": (dict(trivial_augment=1), "trivial_augment must be True or False, got 1"),
    "deterministic=2": (dict(deterministic=2), "deterministic must be True or False, got 2"),
    "seed=-1": (dict(seed=-1), "seed must be >= 0, got -1"),
    "seed=True": (dict(seed=True), "seed must be a whole number, got True"),
    "train_size=nan": (dict(train_size=float("nan")), "train_size must be a whole number, got nan"),
    "val_fraction=inf": (dict(val_fraction=float("inf")), "val_fraction must be a finite number, got inf"),
    "head_init=-1": (dict(head_init=-1), "head_init must be >= 0, got -1"),
    "regime=3": (dict(regime=3), "unknown regime 3; valid regimes: disjoint, joint, mixed"),
    "arch=3": (dict(arch=3), "unknown architecture 3; valid architectures: resnet-smoke"),
    "head=3": (dict(head=3), "head must be a name .text., got 3"),
    "exit_after_blocks": (dict(exit_after_blocks=("1", "2")), r"exit_after_blocks must be whole block numbers"),
    "joint_phase": (dict(joint_phase={"lr": float("nan")}), "lr must be a finite number, got nan"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_every_field_is_validated_by_name(case):
    overrides, message = BAD_VALUES[case]
    with pytest.raises(ValueError, match=message):
        make_config("smoke", **overrides)


def test_numbers_of_other_types_are_the_same_configuration():
    import numpy as np

    base = make_config("smoke", lr=0.5, epochs=3, exit_after_blocks=(1, 2))
    assert make_config("smoke", lr=np.float32(0.5), epochs=np.int64(3), exit_after_blocks=[np.int64(1), 2]) == base
    assert RunConfig.from_dict(json.loads(json.dumps(base.to_dict()))) == base
