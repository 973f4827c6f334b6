"""Tests of mexlib.store: train once, share phase 1, store complete runs, survive damage.

One module-scoped set of smoke runs (seeds 0 and 1) is trained once and shared by the tests
that only read; tests that damage or retrain copy a run into their own folder first.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pytest
import torch

import mexlib
import mexlib.data
import mexlib.entries
import mexlib.models
import mexlib.provenance
import mexlib.store
import mexlib.train
from mexlib import paths
from mexlib.checkpoints import read_checkpoint, write_checkpoint
from mexlib.config import RunConfig, make_config
from mexlib.data import dataset_spec
from mexlib.store import DamagedRunWarning, RunStore, StoredRun, backbone_key, run_key, verify
from mexlib.train import DeviceData

CPU = torch.device("cpu")
SEED0_RUNS = ("disjoint", "mixed", "joint")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machine has 2 cores that other jobs share; one intra-op thread keeps the tiny
    smoke models from stalling on thread hand-offs. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _store(root: Path) -> RunStore:
    return RunStore(root=root, device="cpu", progress=False)


def _config(regime: str, seed: int = 0) -> RunConfig:
    return make_config("smoke", regime=regime, seed=seed)


def _clone(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@dataclass
class Shared:
    root: Path
    store: RunStore
    configs: dict[str, RunConfig] = field(default_factory=dict)
    runs: dict[str, StoredRun] = field(default_factory=dict)
    backbones: dict[int, StoredRun] = field(default_factory=dict)
    trained_after: dict[str, list[str]] = field(default_factory=dict)
    backbone_calls_after: dict[str, int] = field(default_factory=dict)
    phase_starts: list[dict] = field(default_factory=list)  # model state as each phase begins


@pytest.fixture(scope="module")
def shared(tmp_path_factory, one_thread) -> Shared:
    """Seed 0 in all three regimes (disjoint first, so it trains the backbone), then disjoint of
    seed 1, then the landscape chapter's controls of seed 0 (the backbone continued alone, mixed
    from other heads); with a counting wrapper on the store's train_backbone and a spy on
    train_phase."""
    result = Shared(tmp_path_factory.mktemp("shared-runs"), None)
    result.store = _store(result.root)
    backbone_calls = []
    real_train_backbone = mexlib.store.train_backbone
    real_train_phase = mexlib.train.train_phase
    signature = inspect.signature(real_train_phase)

    def counting_train_backbone(config, *args, **kwargs):
        backbone_calls.append(config)
        return real_train_backbone(config, *args, **kwargs)

    def spying_train_phase(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        model = bound["model"]
        result.phase_starts.append(dict(phase=bound["phase"], description=bound["description"],
                                        backbone=_clone(model.backbone), heads=_clone(model.heads)))
        return real_train_phase(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mexlib.store, "train_backbone", counting_train_backbone)
        patch.setattr(mexlib.train, "train_phase", spying_train_phase)
        for name, regime, seed in [("disjoint", "disjoint", 0), ("mixed", "mixed", 0),
                                   ("joint", "joint", 0), ("disjoint-seed1", "disjoint", 1),
                                   ("continued", "continued", 0), ("mixed-other-heads", "mixed", 0)]:
            config = _config(regime, seed)
            if name == "mixed-other-heads":
                config = replace(config, head_init=1)
            result.configs[name] = config
            result.runs[name] = result.store.get_or_run(config)
            result.trained_after[name] = list(result.store.trained)
            result.backbone_calls_after[name] = len(backbone_calls)
    for seed, name in [(0, "disjoint"), (1, "disjoint-seed1")]:
        result.backbones[seed] = result.store.find_backbone(result.configs[name])
    return result


@pytest.fixture(scope="module")
def device_data(shared) -> DeviceData:
    config = shared.configs["disjoint"]
    return DeviceData.from_dataset(config, mexlib.data.load_dataset(config.dataset), CPU)


def _run_and_config(shared: Shared, name: str) -> tuple[StoredRun, RunConfig, bool]:
    """A stored run by name ("backbone" is seed 0's phase-1 run), its configuration, and whether
    it is a backbone run."""
    if name == "backbone":
        return shared.backbones[0], shared.configs["disjoint"], True
    return shared.runs[name], shared.configs[name], False


# --- train once ---------------------------------------------------------------------------------

def test_get_or_run_trains_once(shared):
    trained_before = list(shared.store.trained)
    for name, config in shared.configs.items():
        assert shared.store.get_or_run(config).path == shared.runs[name].path
    assert shared.store.trained == trained_before

    fresh = _store(shared.root)
    for name, config in shared.configs.items():
        again = fresh.get_or_run(config)
        assert again.path == shared.runs[name].path
        assert again.path.name == f"run-{run_key(config)}"
    for seed, backbone in shared.backbones.items():
        config = shared.configs["disjoint" if seed == 0 else "disjoint-seed1"]
        assert fresh.get_or_run_backbone(config).path == backbone.path
    assert fresh.trained == []


def test_phase_one_is_trained_once_for_disjoint_and_mixed(shared):
    disjoint, mixed = shared.configs["disjoint"], shared.configs["mixed"]
    backbone_name = f"backbone-{backbone_key(disjoint)}"
    assert shared.trained_after["mixed"] == [backbone_name, f"run-{run_key(disjoint)}",
                                             f"run-{run_key(mixed)}"]
    assert sum(n.startswith("backbone-") for n in shared.trained_after["mixed"]) == 1
    assert shared.backbones[0].path.name == backbone_name
    for name in ("disjoint", "mixed"):
        assert shared.runs[name].history[0] == {"phase": "backbone", "stored_run": backbone_name}
    # Joint has no phase 1 and trains no backbone.
    assert [p["phase"] for p in shared.runs["joint"].history] == ["joint"]
    assert shared.trained_after["joint"] == shared.trained_after["mixed"] + [f"run-{run_key(shared.configs['joint'])}"]
    # The counting wrapper saw one phase-1 training for seed 0, through three regimes.
    assert shared.backbone_calls_after["disjoint"] == 1
    assert shared.backbone_calls_after["mixed"] == 1
    assert shared.backbone_calls_after["joint"] == 1


def test_another_seed_trains_its_own_backbone(shared):
    seed1 = shared.configs["disjoint-seed1"]
    assert backbone_key(seed1) != backbone_key(shared.configs["disjoint"])
    new = shared.trained_after["disjoint-seed1"][len(shared.trained_after["joint"]):]
    assert new == [f"backbone-{backbone_key(seed1)}", f"run-{run_key(seed1)}"]
    assert shared.backbone_calls_after["disjoint-seed1"] == 2
    assert shared.runs["disjoint-seed1"].history[0]["stored_run"] == shared.backbones[1].path.name
    assert not torch.equal(shared.backbones[1].logits("test")[0], shared.backbones[0].logits("test")[0])


# --- what the regimes do with phase 1 -----------------------------------------------------------

@pytest.mark.parametrize("split", ["val", "test"])
def test_disjoint_final_exit_is_exactly_the_backbone(shared, split):
    run_logits, run_labels = shared.runs["disjoint"].logits(split)
    backbone_logits, backbone_labels = shared.backbones[0].logits(split)
    assert backbone_logits.shape[0] == 1
    assert torch.equal(run_logits[-1], backbone_logits[0])
    assert torch.equal(run_labels, backbone_labels)
    assert run_logits.shape[0] == len(shared.configs["disjoint"].exit_after_blocks) + 1


def test_disjoint_backbone_state_is_the_backbone_run(shared):
    backbone = shared.backbones[0].state_dict()
    assert any(k.endswith("running_mean") for k in backbone)
    assert any(k.endswith("running_var") for k in backbone)
    assert any(k.endswith("num_batches_tracked") for k in backbone)
    run_state = shared.runs["disjoint"].state_dict()
    run_backbone = {k[len("backbone."):]: v for k, v in run_state.items() if k.startswith("backbone.")}
    assert _states_equal(run_backbone, backbone)
    assert set(run_state) - {f"backbone.{k}" for k in backbone} == {k for k in run_state if k.startswith("heads.")}


def test_mixed_changes_the_phase_one_weights(shared):
    backbone = shared.backbones[0].state_dict()
    run_state = shared.runs["mixed"].state_dict()
    mixed_backbone = {k[len("backbone."):]: v for k, v in run_state.items() if k.startswith("backbone.")}
    assert mixed_backbone.keys() == backbone.keys()
    changed = [k for k in backbone if not torch.equal(mixed_backbone[k], backbone[k])]
    assert changed
    assert any(k.endswith("running_mean") for k in changed)  # phase 2 trains BN statistics too
    assert not torch.equal(shared.runs["mixed"].logits("test")[0][-1], shared.backbones[0].logits("test")[0][0])


def _starts(shared: Shared, phase: str, regime: str, seed: int = 0) -> list[dict]:
    """The spy's records of ``phase`` starting for ``regime`` (phase 1 is named by seed only)."""
    prefix = f"seed {seed} {regime} " if phase != "backbone" else f"seed {seed} "
    return [s for s in shared.phase_starts if s["phase"] == phase and s["description"] == prefix]


def test_phases_after_phase_one_start_from_its_weights_with_fresh_heads(shared):
    backbone = shared.backbones[0].state_dict()
    (heads_start,) = _starts(shared, "heads", "disjoint")
    mixed_start = _starts(shared, "joint", "mixed")[0]  # the second: the control from other heads
    (joint_start,) = _starts(shared, "joint", "joint")
    (backbone_start,) = _starts(shared, "backbone", "disjoint")
    assert _states_equal(heads_start["backbone"], backbone)
    assert _states_equal(mixed_start["backbone"], backbone)
    # Joint starts from scratch: the same initial backbone as phase 1, not its result.
    assert _states_equal(joint_start["backbone"], backbone_start["backbone"])
    assert not _states_equal(joint_start["backbone"], backbone)
    # Every regime of the seed starts its heads from the same fresh initialisation.
    assert _states_equal(mixed_start["heads"], joint_start["heads"])
    assert _states_equal(heads_start["heads"], joint_start["heads"])


def test_the_controls_share_phase_one_and_differ_where_they_should(shared):
    """``continued`` trains the phase-1 backbone alone for phase 2's epochs, then heads on it as
    disjoint does; ``head_init=1`` changes mixed's initial heads and nothing else."""
    backbone = shared.backbones[0].state_dict()
    assert backbone_key(shared.configs["continued"]) == backbone_key(shared.configs["disjoint"])
    assert backbone_key(shared.configs["mixed-other-heads"]) == backbone_key(shared.configs["mixed"])
    assert run_key(shared.configs["mixed-other-heads"]) != run_key(shared.configs["mixed"])
    assert "head_init" not in shared.configs["mixed"].to_dict()  # the default keeps the keys runs have
    (continue_start,) = _starts(shared, "continue", "continued")
    (heads_start,) = _starts(shared, "heads", "continued")
    mixed_start, other_start = _starts(shared, "joint", "mixed")  # mixed, then mixed from other heads
    assert _states_equal(continue_start["backbone"], backbone)
    # The heads do not train while the backbone continues: the heads phase starts from fresh heads
    # on a backbone that moved.
    assert _states_equal(heads_start["heads"], continue_start["heads"])
    assert not _states_equal(heads_start["backbone"], backbone)
    continued = shared.runs["continued"]
    assert [p["phase"] for p in continued.history] == ["backbone", "continue", "heads"]
    assert all(len(row["val_acc"]) == 1 for row in continued.history[1]["history"])  # the final exit only
    assert len(continued.history[1]["history"]) == shared.configs["continued"].joint_phase.epochs
    # Mixed from other heads: the same phase-1 backbone, other initial heads.
    assert _states_equal(other_start["backbone"], mixed_start["backbone"])
    assert not _states_equal(other_start["heads"], mixed_start["heads"])
    assert not torch.equal(shared.runs["mixed-other-heads"].logits("test")[0][0],
                           shared.runs["mixed"].logits("test")[0][0])


# --- what a stored run holds ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["backbone", *SEED0_RUNS])
def test_config_json_round_trips(shared, name):
    run, config, is_backbone = _run_and_config(shared, name)
    stored = RunConfig.from_dict(run.config)
    if is_backbone:
        assert stored.backbone_config() == config.backbone_config()
        assert run.key == backbone_key(stored)
    else:
        assert stored == config
        assert run.key == run_key(stored)
    assert verify(run.path) is None


def _git_head() -> str | None:
    """The checkout's commit, when the package runs from a git checkout with one."""
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.ROOT, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.mark.parametrize("name", ["backbone", *SEED0_RUNS])
def test_provenance(shared, name):
    run, config, is_backbone = _run_and_config(shared, name)
    prov = run.provenance
    assert prov["config"] == run.config
    assert prov["results_version"] == mexlib.store.RESULTS_VERSION
    assert prov["mexlib_version"] == mexlib.__version__
    assert prov["torch"] == torch.__version__
    assert prov["device_type"] == "cpu"
    assert isinstance(prov["device"], str) and prov["device"]
    assert "git_commit" in prov
    if _git_head() is not None:
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", prov["git_commit"])
        assert prov["git_commit"].startswith(_git_head())
    assert prov["wall_time_seconds"] > 0
    phases = ["backbone"] if is_backbone else list(config.phases)
    assert list(prov["phase_wall_time_seconds"]) == phases
    for entry in run.history:
        if "wall_time" in entry:  # a phase this run trained (not a reference to phase 1)
            assert prov["phase_wall_time_seconds"][entry["phase"]] == entry["wall_time"] > 0
    if not is_backbone and "backbone" in config.phases:
        assert shared.backbones[0].provenance["phase_wall_time_seconds"]["backbone"] > 0


@pytest.mark.parametrize("name", ["backbone", *SEED0_RUNS])
def test_history_has_per_epoch_rows_per_exit(shared, name):
    run, config, is_backbone = _run_and_config(shared, name)
    num_exits = len(config.exit_after_blocks) + 1
    history = run.history
    assert [e["phase"] for e in history] == (["backbone"] if is_backbone else list(config.phases))
    trained = [e for e in history if "history" in e]
    assert trained  # every run trains at least one phase itself
    for entry in trained:
        rows = entry["history"]
        cap = config.phase(entry["phase"]).epochs
        assert 1 <= len(rows) <= cap
        assert [r["epoch"] for r in rows] == list(range(len(rows)))
        assert entry["best_epoch"] in [r["epoch"] for r in rows]
        width = 1 if entry["phase"] == "backbone" else num_exits
        for row in rows:
            for key in ("train_loss", "val_loss", "val_acc"):
                assert len(row[key]) == width, (entry["phase"], key)
            assert all(0 <= a <= 1 for a in row["val_acc"])
            assert all(v > 0 for v in row["train_loss"] + row["val_loss"])


@pytest.mark.parametrize("name", ["backbone", *SEED0_RUNS])
def test_logits_shapes_and_labels(shared, device_data, name):
    run, config, is_backbone = _run_and_config(shared, name)
    num_exits = 1 if is_backbone else len(config.exit_after_blocks) + 1
    classes = dataset_spec(config.dataset).num_classes
    for split, labels in [("val", device_data.val_labels), ("test", device_data.test_labels)]:
        logits, stored_labels = run.logits(split)
        assert logits.shape == (num_exits, len(labels), classes)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        assert torch.equal(stored_labels, labels.cpu())
    assert run.logits("test")[0].shape[1] == config.test_size
    with pytest.raises(ValueError, match="val, test"):
        run.logits("train")


@pytest.mark.parametrize("name", ["backbone", *SEED0_RUNS])
def test_model_reproduces_the_stored_test_logits(shared, device_data, name):
    run, _, is_backbone = _run_and_config(shared, name)
    model = run.model()
    assert not model.training
    values, labels = mexlib.models.exit_logits(model, device_data.eval_loader("test"))
    stored, stored_labels = run.logits("test")
    if is_backbone:
        values = values[-1:]  # the rebuilt model's heads are untrained; only the final exit counts
    torch.testing.assert_close(values, stored)
    assert torch.equal(labels, stored_labels)


# --- atomic writes and damage --------------------------------------------------------------------

def _copy_run(run: StoredRun, root: Path) -> Path:
    target = root / run.path.name
    shutil.copytree(run.path, target)
    return target


def test_leftover_temporary_folder_is_ignored(shared, tmp_path):
    config = shared.configs["joint"]
    key = run_key(config)
    # A crash while writing: a temporary folder with some files, no manifest, a truncated file.
    leftover = tmp_path / f".tmp-run-{key}-0badc0de"
    shutil.copytree(shared.runs["joint"].path, leftover)
    (leftover / "manifest.json").unlink()
    weights = (leftover / "weights.pt").read_bytes()
    (leftover / "weights.pt").write_bytes(weights[: len(weights) // 2])

    store = _store(tmp_path)
    assert store.find(config) is None
    run = store.get_or_run(config)
    assert store.trained == [f"run-{key}"]
    assert run.path == tmp_path / f"run-{key}"
    assert verify(run.path) is None
    assert not (tmp_path / "damaged").exists()


def _flip_bytes(file: Path) -> None:
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 16):
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))


DAMAGE = {
    "corrupted weights": (lambda p: _flip_bytes(p / "weights.pt"), "weights.pt does not match its checksum"),
    "missing manifest": (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
    "missing logits": (lambda p: (p / "logits.pt").unlink(), "logits.pt is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_run_is_reported_moved_and_trained_again(shared, tmp_path, damage):
    config = shared.configs["joint"]
    key = run_key(config)
    copy = _copy_run(shared.runs["joint"], tmp_path)
    assert verify(copy) is None
    apply, problem = DAMAGE[damage]
    apply(copy)
    assert verify(copy) == problem
    damaged_files = {f.name: f.read_bytes() for f in copy.iterdir()}

    store = _store(tmp_path)
    with pytest.warns(DamagedRunWarning, match=re.escape(problem)) as record:
        run = store.get_or_run(config)
    message = str(record[0].message)
    assert str(copy) in message and "damaged" in message

    moved = list((tmp_path / "damaged").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith(f"run-{key}-")
    assert {f.name: f.read_bytes() for f in moved[0].iterdir()} == damaged_files
    assert str(moved[0]) in message

    assert store.trained == [f"run-{key}"]
    assert run.path == copy
    assert verify(run.path) is None


def test_damaged_backbone_is_trained_again(shared, tmp_path):
    """A damaged phase-1 run is caught on the way to a mixed run that needs it."""
    config = shared.configs["mixed"]
    copy = _copy_run(shared.backbones[0], tmp_path)
    _flip_bytes(copy / "logits.pt")
    store = _store(tmp_path)
    with pytest.warns(DamagedRunWarning, match=re.escape("logits.pt does not match its checksum")):
        run = store.get_or_run(config)
    assert store.trained == [f"backbone-{backbone_key(config)}", f"run-{run_key(config)}"]
    assert verify(copy) is None and verify(run.path) is None
    assert run.history[0]["stored_run"] == copy.name


def test_results_version_is_part_of_the_keys(shared, tmp_path, monkeypatch):
    config = shared.configs["joint"]
    old_run, old_backbone = run_key(config), backbone_key(config)
    copy = _copy_run(shared.runs["joint"], tmp_path)
    reused = _store(tmp_path)
    assert reused.get_or_run(config).path == copy and reused.trained == []

    new_version = mexlib.store.RESULTS_VERSION + 1
    monkeypatch.setattr(mexlib.store, "RESULTS_VERSION", new_version)
    assert run_key(config) != old_run
    assert backbone_key(config) != old_backbone
    store = _store(tmp_path)
    assert store.find(config) is None
    run = store.get_or_run(config)
    assert store.trained == [f"run-{run_key(config)}"]
    assert run.path != copy
    assert run.provenance["results_version"] == new_version
    assert verify(copy) is None  # the old run is left as it was


# --- determinism -------------------------------------------------------------------------------

def test_logits_are_bit_identical_across_stores(shared, tmp_path):
    config = shared.configs["disjoint"]
    store = _store(tmp_path)
    run = store.get_or_run(config)
    assert store.trained == [f"backbone-{backbone_key(config)}", f"run-{run_key(config)}"]
    backbone = store.find_backbone(config)
    for split in ("val", "test"):
        for mine, theirs in [(run, shared.runs["disjoint"]), (backbone, shared.backbones[0])]:
            a, a_labels = mine.logits(split)
            b, b_labels = theirs.logits(split)
            assert torch.equal(a, b), (mine.path.name, split)
            assert torch.equal(a_labels, b_labels)
    assert _states_equal(run.state_dict(), shared.runs["disjoint"].state_dict())
    assert _states_equal(backbone.state_dict(), shared.backbones[0].state_dict())


# --- code fingerprints, stale checkpoints, precision and head keys ---------------------------

def test_runs_of_other_code_are_reused_with_a_warning_and_named_or_refused_in_strict_mode(tmp_path, monkeypatch):
    from mexlib.chapters.base import Result, records_stale_runs

    config = _config("joint")
    first = RunStore(tmp_path, device="cpu", progress=False).get_or_run(config)
    assert first.provenance["code_fingerprint"] == mexlib.provenance.code_fingerprint()
    assert mexlib.store.strict_mode()  # the test suite's setting (tests/conftest.py)

    def later_store(**strict):
        store = RunStore(tmp_path, device="cpu", progress=False, **strict)
        store.fingerprint = "0" * 16  # as if the training code had changed since
        return store

    with pytest.raises(mexlib.store.StaleRunError, match=f"{first.path}.*strict mode") as error:
        later_store().get_or_run(config)
    assert first.provenance["code_fingerprint"] in str(error.value)

    @records_stale_runs
    def chapter(strict: bool) -> Result:  # a chapter's run: reads the run, returns its result
        store = later_store(strict=strict)
        return Result("smoke", "findings", {}, data=dict(run=store.get_or_run(config), store=store))

    with pytest.warns(mexlib.store.StaleCodeWarning, match="RESULTS_VERSION"):
        result = chapter(strict=False)
    assert result["run"].path == first.path and result["store"].trained == []
    assert result.stale == {first.path.name: first.provenance["code_fingerprint"]}
    assert first.path.name in result.findings_markdown() and "STRICT=1" in result.findings_markdown()
    figures = tmp_path / "figures"
    monkeypatch.setenv("MEXLIB_FIGURES", str(figures))
    result.add("table", pd.DataFrame({"a": [1.0]}))
    result.save()
    (folder,) = {p.parent for p in figures.rglob("table.md")}
    assert "1 stored run" in (folder / "table.md").read_text() and first.provenance["code_fingerprint"] in \
        (folder / "table.md").read_text()
    assert pd.read_csv(folder / "table.csv").shape == (1, 2)  # the CSV stays a plain table
    # A chapter that reads no stale run names none, whatever this process read before.
    fresh = records_stale_runs(lambda: Result("smoke", "findings", {}))()
    assert fresh.stale == {} and "other code" not in fresh.findings_markdown()


def test_checkpoints_of_other_code_are_discarded_and_broken_ones_restart(tmp_path):
    config = _config("joint")
    workdir = tmp_path / "work" / run_key(config)
    workdir.mkdir(parents=True)
    (workdir / "joint.ckpt").write_bytes(b"not a checkpoint")
    (workdir / "code_fingerprint").write_text("f" * 16)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # discarded silently: never read, so no warning
        RunStore(tmp_path, device="cpu", progress=False).get_or_run(config)
    other = tmp_path / "other"
    workdir = other / "work" / run_key(config)
    workdir.mkdir(parents=True)
    (workdir / "joint.ckpt").write_bytes(b"not a checkpoint")
    (workdir / "code_fingerprint").write_text(mexlib.provenance.code_fingerprint())
    with pytest.warns(UserWarning, match="cannot resume"):
        run = RunStore(other, device="cpu", progress=False).get_or_run(config)
    assert verify(run.path) is None and not workdir.exists()


def test_precision_and_resolved_head_in_the_key():
    base = make_config("smoke")
    assert base.head == "pool" and run_key(base) == run_key(make_config("smoke", head="pool"))
    bf16 = make_config("smoke", precision="bf16")
    assert run_key(bf16) != run_key(base) and backbone_key(bf16) != backbone_key(base)
    assert make_config("paper").precision == "bf16"
    with pytest.raises(ValueError, match="valid precisions: fp32, bf16"):
        make_config("smoke", precision="fp16")


def test_learning_rate_is_logged_at_the_epochs_start(tmp_path):
    """(bf16 on the CPU, native and not, is tested in test_hardware.py.)"""
    config = make_config("smoke", regime="joint", epochs=1, train_size=256)
    run = RunStore(tmp_path, device="cpu", progress=False).get_or_run(config)
    history = run.history[0]["history"]
    assert history[0]["lr"] == pytest.approx(config.joint_phase.lr)  # logged at the epoch's start


def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    script = ("import sys, torch; torch.set_num_threads(1)\n"
              "from mexlib.config import make_config\n"
              "from mexlib.store import RunStore\n"
              "store = RunStore(sys.argv[1], device='cpu', progress=False)\n"
              "run = store.get_or_run(make_config('smoke', regime='joint', train_size=512))\n"
              "print(len(store.trained), run.path.name)\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(paths.ROOT)}
    processes = [subprocess.Popen([__import__("sys").executable, "-c", script, str(tmp_path)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=100) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in outputs]
    counts = sorted(int(out.split()[0]) for out, _ in outputs)
    names = {out.split()[1] for out, _ in outputs}
    assert counts == [0, 1] and len(names) == 1  # one trained it, the other waited and loaded it
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("run-")] == list(names)


def test_fingerprint_ignores_comments_and_docstrings_only():
    code = 'def f(x):\n    """Double."""\n    return 2 * x  # twice\n'
    assert mexlib.provenance.code_without_comments(code) == \
        mexlib.provenance.code_without_comments('def f(x):\n    return 2 * x\n')
    assert mexlib.provenance.code_without_comments(code) != \
        mexlib.provenance.code_without_comments('def f(x):\n    return 3 * x\n')
    only_docstring = 'class A:\n    """Nothing else."""\n'
    assert mexlib.provenance.code_without_comments(only_docstring) == "class A:\n    pass"


def _import_fresh(path, name):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # inspect finds a module's source through sys.modules
    spec.loader.exec_module(module)
    return module


def test_a_cached_result_is_computed_again_when_the_code_that_computed_it_changes(tmp_path, monkeypatch):
    """The stale-cache bug of issue 24: a result computed by a helper (a chapter's ``measure``)
    must not be read back once that helper's code changed; a comment edit changes nothing."""
    store = RunStore(tmp_path / "runs", device="cpu", progress=False)
    source = tmp_path / "chapter_under_test.py"
    version = 'def measure(x):\n    return x + 1\n\n\ndef run(store):\n    return store.cached("m", {"x": 1}, lambda: measure(1))\n'
    source.write_text(version)
    assert _import_fresh(source, "chapter_under_test").run(store) == 2
    source.write_text(version.replace("x + 1", "x + 1  # a comment changes no result"))
    assert _import_fresh(source, "chapter_under_test").run(store) == 2  # read back
    assert len(list((tmp_path / "runs").glob("result-m-*"))) == 1
    source.write_text(version.replace("x + 1", "x + 10"))  # the helper, not the cached lambda, changed
    assert _import_fresh(source, "chapter_under_test").run(store) == 11  # computed afresh
    assert len(list((tmp_path / "runs").glob("result-m-*"))) == 2
    # a damaged entry is moved aside and computed again, never read
    entry = next(p for p in (tmp_path / "runs").glob("result-m-*") if store.kept(p.name)["result.pt"] == 11)
    (entry / "result.pt").write_bytes(b"garbage")
    with pytest.warns(DamagedRunWarning, match="does not match its checksum"):
        assert _import_fresh(source, "chapter_under_test").run(store) == 11
    assert list((tmp_path / "runs" / "damaged").iterdir())


def test_kept_entries_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    store = RunStore(tmp_path, device="cpu", progress=False)
    store.keep("records-a", {"records.pt": [1, 2], "about.json": {"n": 2}})
    assert store.kept("records-a") == {"records.pt": [1, 2], "about.json": {"n": 2}}
    assert store.kept("records-b") is None
    monkeypatch.setattr(mexlib.store.torch, "save", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        store.keep("records-b", {"records.pt": [3]})
    assert store.kept("records-b") is None  # the half-written folder is not an entry
    with pytest.raises(ValueError, match="entry's name"):
        store.keep("../elsewhere", {"x.pt": 1})


@contextlib.contextmanager
def _small_disk(path: Path, size: str):
    """A real file system of ``size`` (a tmpfs) at ``path``: root only; skipped where it cannot
    be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def test_a_full_disk_names_the_entry_and_leaves_the_store_as_it_was(tmp_path):
    from mexlib.store import StoreWriteError

    with _small_disk(tmp_path / "small", "256k") as root:
        store = RunStore(root, device="cpu", progress=False)
        store.keep("result-small-1", {"values.pt": torch.arange(100.0)})
        with pytest.raises(StoreWriteError, match="No space left on device") as info:
            store.keep("result-large-1", {"values.pt": torch.zeros(200_000)})  # 800 kB on a 256 kB disk
        assert str(root / "result-large-1") in str(info.value)
        assert not list(root.glob(".tmp-*"))  # nothing half-written left
        assert torch.equal(store.kept("result-small-1")["values.pt"], torch.arange(100.0))
        assert store.kept("result-large-1") is None


def test_a_file_written_whole_keeps_the_old_one_on_a_full_disk(tmp_path):
    """paths.write_whole (a checkpoint, a sweep's marker, a results file): the new content or,
    on a full disk, the old file as it was and no temporary file; made with the umask, as a
    plain write (a shared store's other users read it)."""
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    whole = tmp_path / "whole.json"
    paths.write_whole(whole, "{}")
    assert whole.read_text() == "{}" and whole.stat().st_mode == plain.stat().st_mode
    with _small_disk(tmp_path / "small", "64k") as root:
        marker, checkpoint = root / "failed.json", root / "joint.ckpt"
        paths.write_whole(marker, '{"error": "old"}')
        write_checkpoint({"epoch": 1}, checkpoint)
        before = {f.name: f.read_bytes() for f in root.iterdir()}
        with pytest.raises(OSError, match="No space left on device"):
            paths.write_whole(marker, "x" * 200_000)
        with pytest.raises(OSError, match="No space left on device"):
            write_checkpoint({"epoch": 2, "weights": torch.zeros(50_000)}, checkpoint)
        assert {f.name: f.read_bytes() for f in root.iterdir()} == before  # nothing else left, nothing changed
        assert read_checkpoint(checkpoint) == {"epoch": 1}


def test_a_read_only_store_is_read_and_refuses_a_write_by_name(tmp_path):
    from mexlib.store import StoreWriteError

    with _small_disk(tmp_path / "shared", "1m") as root:
        writer = RunStore(root, device="cpu", progress=False)
        writer.keep("result-kept-1", {"values.pt": torch.ones(3)})
        writer.keep("result-damaged-1", {"values.pt": torch.ones(3)})
        values = root / "result-damaged-1" / "values.pt"
        data = bytearray(values.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one byte flipped: its checksum no longer matches
        values.write_bytes(bytes(data))
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True, timeout=30)
        store = RunStore(root, device="cpu", progress=False)
        assert torch.equal(store.kept("result-kept-1")["values.pt"], torch.ones(3))
        # a damaged entry it cannot move aside: the damaged-entry warning, not a PermissionError
        with pytest.warns(DamagedRunWarning, match="could not move it aside .Read-only file system."):
            assert store.kept("result-damaged-1") is None
        with pytest.raises(StoreWriteError, match="Read-only file system") as info:
            store.keep("result-new-1", {"values.pt": torch.ones(3)})
        assert str(root / "result-new-1") in str(info.value)
        # a cached result: said first that it will not be kept, then computed and returned
        warned_before = []
        with pytest.warns(mexlib.store.StoreWriteWarning, match=f"the store {root} cannot be written") as caught:
            def compute():
                warned_before.append(len(caught))
                return torch.arange(4.0)

            assert torch.equal(store.cached("answer", {"n": 4}, compute), torch.arange(4.0))
        assert warned_before == [1] and len(caught) == 1
        assert not any(p.name.startswith("result-answer") for p in root.iterdir())


def test_a_manifest_that_is_json_but_not_a_list_of_files_is_damaged(tmp_path):
    store = RunStore(tmp_path / "runs", device="cpu", progress=False)
    store.keep("result-odd-1", {"values.pt": torch.ones(2)})
    (tmp_path / "runs" / "result-odd-1" / "manifest.json").write_text("[1, 2, 3]")
    with pytest.warns(DamagedRunWarning, match="holds a list, not a list of files"):
        assert store.kept("result-odd-1") is None


def test_two_processes_that_find_one_damaged_entry_both_go_on(tmp_path):
    """The second finds the entry already moved aside by the first: a warning, no error."""
    first, second = (RunStore(tmp_path / "runs", device="cpu", progress=False) for _ in range(2))
    first.keep("result-shared-1", {"values.pt": torch.ones(3)})
    (tmp_path / "runs" / "result-shared-1" / "manifest.json").write_text("{")
    with pytest.warns(DamagedRunWarning, match="moved it to"):
        assert first.kept("result-shared-1") is None
    with pytest.warns(DamagedRunWarning, match="another process moved it aside"):
        second._set_aside("result-shared-1", "is damaged (found by both)", stacklevel=2)


def test_the_code_fingerprint_covers_every_module_a_run_depends_on(tmp_path, monkeypatch):
    """The list is derived from the imports of the trainer and the store: each module in it,
    edited in a copy of the package, changes the fingerprint (a comment does not); the modules
    the issue found missing are in it; what only evaluates or draws is not; and a new import
    from a result module brings its target in."""
    from mexlib.provenance import code_fingerprint, result_modules

    modules = result_modules()
    for needed in ("hardware.py", "device_data.py", "store.py", "train.py", "config.py", "data.py",
                   "methods/ztw.py", "models/msdnet.py", "models/heads.py"):
        assert needed in modules, needed
    for other in ("plots.py", "study.py", "verdicts.py", "evaluate/tables.py", "chapters/regimes.py", "sweep.py"):
        assert other not in modules, other
    copy = tmp_path / "mexlib"
    shutil.copytree(paths.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(paths, "PACKAGE", copy)
    result_modules.cache_clear()
    try:
        assert result_modules() == modules
        base = code_fingerprint()
        for module in modules:
            file = copy / module
            original = file.read_text()
            file.write_text(original + "\n# a comment changes nothing\n")
            assert code_fingerprint() == base, module
            file.write_text(original + "\n_EDITED = 1\n")
            assert code_fingerprint() != base, module
            file.write_text(original)
        train = copy / "train.py"
        train.write_text(train.read_text() + "\nfrom . import verdicts  # noqa: E402,F401\n")
        result_modules.cache_clear()
        assert "verdicts.py" in result_modules() and "study.py" in result_modules()
    finally:
        result_modules.cache_clear()


def test_a_diverging_run_and_a_failed_checkpoint_name_the_run(tmp_path):
    from mexlib.checkpoints import CheckpointWriteError
    from mexlib.methods import TrainingDiverged

    config = make_config("smoke", regime="joint", lr=1e12, train_size=300)
    with pytest.raises(TrainingDiverged, match=rf"resnet-smoke on fashion-mnist, joint, sdn, seed 0 "
                                               rf"\(run-{run_key(config)}\): training diverged in phase 'joint'"):
        RunStore(tmp_path, device="cpu", progress=False).get_or_run(config)
    config = make_config("smoke", regime="joint", epochs=1, train_size=300, seed=3)
    (tmp_path / "work" / run_key(config) / "joint.ckpt").mkdir(parents=True)  # the checkpoint's name is taken
    with pytest.raises(CheckpointWriteError, match=rf"seed 3 \(run-{run_key(config)}\): could not write the "
                                                   rf"checkpoint of .* to {tmp_path / 'work' / run_key(config)}"):
        RunStore(tmp_path, device="cpu", progress=False).get_or_run(config)


READER_SCRIPT = """
import hashlib, json, sys, warnings
import torch
torch.set_num_threads(int(sys.argv[3]))
from mexlib.config import make_config
from mexlib.store import RunStore
reports = []
for overrides in json.loads(sys.argv[2]):
    config = make_config("smoke", **overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = RunStore(sys.argv[1], device="cpu", progress=False)
        run = store.get_or_run(config)
        again = RunStore(sys.argv[1], device="cpu", progress=False).get_or_run(config)
    reports.append({"path": str(run.path), "again": str(again.path), "trained": store.trained,
                    "config": run.config, "asked": json.loads(json.dumps(config.to_dict())),
                    "logits": hashlib.sha256(run.logits("test")[0].numpy().tobytes()).hexdigest(),
                    "again_logits": hashlib.sha256(again.logits("test")[0].numpy().tobytes()).hexdigest(),
                    "warnings": [str(w.message) for w in caught]})
print(json.dumps(reports))
"""

#: A process that is root but may not override file permissions: another user of a shared store.
NOT_THE_OWNER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


def test_a_damaged_entry_of_a_shared_store_is_never_served(shared, tmp_path):
    """A store another user wrote (its entries theirs, the folders group-writable as a shared
    store's are): a reader who finds a damaged entry it may not move aside trains the run again
    and returns the fresh result, kept beside the damaged one, never the damaged one."""
    import hashlib
    import json
    import shutil as _shutil
    import sys

    if os.geteuid() != 0 or _shutil.which("setpriv") is None:
        pytest.skip("needs root (to give the store to another user) and util-linux's setpriv (to drop the "
                    "capability that overrides file permissions)")
    config = shared.configs["joint"]
    overrides = {"regime": "joint", "train_size": config.train_size}
    assert make_config("smoke", **overrides) == config
    renamed = {"regime": "joint", "train_size": config.train_size, "epochs": 1, "seed": 5}  # another's files
    root = tmp_path / "shared"
    copy = _copy_run(shared.runs["joint"], root)
    expected = hashlib.sha256(shared.runs["joint"].logits("test")[0].numpy().tobytes()).hexdigest()
    _flip_bytes(copy / "logits.pt")
    wrong = root / f"run-{run_key(make_config('smoke', **renamed))}"
    shutil.copytree(shared.runs["mixed"].path, wrong)  # sound files, under another configuration's key
    subprocess.run(["chown", "-R", "65534:65534", str(root)], check=True)
    (root / "work").mkdir()
    for folder in (root, root / "work"):
        os.chown(folder, 65534, 65534)
        folder.chmod(0o777)  # a shared store: anyone in the group adds entries
    env = {**os.environ, "PYTHONPATH": str(Path(mexlib.__file__).resolve().parent.parent)}
    done = subprocess.run([*NOT_THE_OWNER, sys.executable, "-c", READER_SCRIPT, str(root),
                           json.dumps([overrides, renamed]), str(torch.get_num_threads())],
                          capture_output=True, text=True, env=env, timeout=100)
    assert done.returncode == 0, done.stderr
    report, other = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["logits"] == expected and report["again_logits"] == expected  # the fresh result, twice
    assert report["trained"] == [copy.name]
    assert report["path"] != str(copy) and report["again"] == report["path"]
    assert verify(Path(report["path"])) is None
    assert verify(copy) == "logits.pt does not match its checksum"  # still there: not the reader's to move
    warned = " ".join(report["warnings"])
    assert "could not move it aside" in warned and f"kept the fresh result at {report['path']}" in warned
    # the renamed folder: its files are sound but another configuration's, and not the reader's to move
    assert other["config"] == other["asked"] and other["trained"] == [wrong.name]
    assert other["path"] == str(root / "replacements" / wrong.name) and other["again"] == other["path"]
    assert "not of the key it is stored under" in " ".join(other["warnings"]) and wrong.is_dir()


def test_an_entry_renamed_to_another_configurations_key_is_damage(shared, tmp_path):
    """Sound files under the wrong name (a folder renamed or copied by hand) are not another
    configuration's result: moved aside, and the asked-for run trained."""
    asked, other = shared.configs["joint"], shared.configs["mixed"]
    (tmp_path / f"run-{run_key(asked)}").mkdir()
    shutil.copytree(shared.runs["mixed"].path, tmp_path / f"run-{run_key(asked)}", dirs_exist_ok=True)
    shutil.copytree(shared.backbones[1].path, tmp_path / f"backbone-{backbone_key(asked)}")
    assert verify(tmp_path / f"run-{run_key(asked)}") is None
    store = _store(tmp_path)
    with pytest.warns(DamagedRunWarning, match=f"holds the configuration of {run_key(other)}, not of the key"):
        assert store.find(asked) is None
    with pytest.warns(DamagedRunWarning, match="not of the key it is stored under"):
        assert store.find_backbone(asked) is None
    assert len(list((tmp_path / "damaged").iterdir())) == 2
    run = store.get_or_run(asked)
    assert RunConfig.from_dict(run.config) == asked and store.trained == [f"run-{run_key(asked)}"]


STATUS_SCRIPT = """
import sys
from mexlib.sweep import main
sys.exit(main(["status", "--profile", "smoke", "--grid", "regime=joint,disjoint", "--seeds", "0"]))
"""


def test_an_unreadable_entry_is_reported_by_status_which_goes_on(shared, tmp_path):
    """Another user's entry this process may not read: status names it as unreadable (path and
    cause) and reports every other task; finding the run raises the same, never a bare
    PermissionError, and never moves the entry aside."""
    import sys

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and util-linux's setpriv (to read as a process that file permissions bind)")
    root = tmp_path / "store"
    for run in (shared.runs["joint"], shared.runs["disjoint"], shared.backbones[0]):
        _copy_run(run, root)
    unreadable = root / shared.runs["joint"].path.name
    (unreadable / "logits.pt").chmod(0)
    env = {**os.environ, "MEXLIB_RUNS": str(root), "PYTHONPATH": str(Path(mexlib.__file__).resolve().parent.parent)}
    done = subprocess.run([*NOT_THE_OWNER, sys.executable, "-c", STATUS_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=100)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    rows = {line.split("|")[2].strip(): line for line in done.stdout.splitlines() if line.startswith("| run")
            or line.startswith("| backbone")}
    assert "unreadable" in rows["sdn joint resnet-smoke seed 0"]
    assert f"{unreadable / 'logits.pt'}: Permission denied" in rows["sdn joint resnet-smoke seed 0"]
    assert "done" in rows["sdn disjoint resnet-smoke seed 0"]
    assert "2 done" in done.stdout and "1 unreadable" in done.stdout
    assert unreadable.is_dir() and not (root / "damaged").exists()


def test_strict_status_reports_stale_runs_and_recordings_of_other_code_are_refused(shared, tmp_path):
    from mexlib.sweep import plan, task_state

    store = RunStore(shared.root, device="cpu", progress=False, strict=True)
    store.fingerprint = "0" * 16  # as if the training code had changed since
    rows = [task_state(task, store) for task in plan([shared.configs["joint"], shared.configs["disjoint"]], store)]
    assert {row["status"] for row in rows} == {"stale"}
    assert all("strict mode" in row["error"] for row in rows)

    recordings = RunStore(tmp_path, device="cpu", progress=False, strict=True)
    recordings.keep("records-abc-gradients", {"records.pt": torch.ones(3)}, of_code=True)
    recordings.keep("records-old-gradients", {"records.pt": torch.ones(3)})  # older code: no fingerprint
    assert torch.equal(recordings.kept("records-abc-gradients", of_code=True)["records.pt"], torch.ones(3))
    later = RunStore(tmp_path, device="cpu", progress=False, strict=True)
    later.fingerprint = "0" * 16
    with pytest.raises(mexlib.store.StaleRunError, match="records-abc-gradients.*strict mode"):
        later.kept("records-abc-gradients", of_code=True)
    with pytest.raises(mexlib.store.StaleRunError, match="records-old-gradients.*fingerprint unknown"):
        recordings.kept("records-old-gradients", of_code=True)
    lenient = RunStore(tmp_path, device="cpu", progress=False, strict=False)
    lenient.fingerprint = "0" * 16
    mark = mexlib.store.stale_reads()
    with pytest.warns(mexlib.store.StaleCodeWarning):
        assert torch.equal(lenient.kept("records-abc-gradients", of_code=True)["records.pt"], torch.ones(3))
    assert list(mexlib.store.stale_runs(mark)) == ["records-abc-gradients"]


def test_a_pickle_of_objects_in_a_stored_run_is_refused_by_name(shared, tmp_path):
    """A run folder whose logits are a pickle of Python objects (with a manifest that matches
    them): not loaded, and the error says it is not a result of this package, naming the file,
    never torch's advice to load it with weights_only=False."""
    import pickle

    from mexlib.checkpoints import ForeignFileError, load_tensors

    copy = _copy_run(shared.runs["joint"], tmp_path)
    foreign = copy / "logits.pt"
    torch.save({"test_logits": torch.zeros(1), "payload": _Foreign()}, foreign)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["logits.pt"] = mexlib.entries._describe(foreign)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    run = _store(tmp_path).find(shared.configs["joint"])
    assert run is not None  # its checksums match: only loading it tells
    with pytest.raises(ForeignFileError, match=f"{foreign} holds Python objects.*not a result of this package "
                                               f"and was not loaded") as info:
        run.logits("test")
    assert "weights_only=False" not in str(info.value) and isinstance(info.value.__cause__, pickle.UnpicklingError)
    with pytest.raises(ForeignFileError, match="was not loaded"):
        load_tensors(foreign)


class _Foreign:
    """An object a pickle can hold and a weights-only load refuses."""
