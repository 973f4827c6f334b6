"""Training phases: early stopping, determinism, resumption after a kill, divergence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from mexlib import data as data_module
from mexlib.config import make_config
from mexlib.batches import BatchLoader
from mexlib.checkpoints import checkpoint_epoch
from interrupted import train_until
from mexlib.models import exit_logits
from mexlib.store import RunStore, run_key
from mexlib.train import (DeviceData, EarlyStopping, TrainingDiverged, build_model, train_backbone,
                          train_regime)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fashion():
    return data_module.load_dataset("fashion-mnist")


def _device_data(config, fashion):
    return DeviceData.from_dataset(config, fashion, CPU)


def test_early_stopping_waits_for_every_exit():
    stopper = EarlyStopping(num_exits=2, patience=2)
    assert stopper.update([0.5, 0.5])          # first check always improves
    assert stopper.update([0.6, 0.4])          # exit 0 improved; exit 1 one check without
    assert not stopper.update([0.6, 0.45])     # exit 1: 2 without (0.45 < 0.5); exit 0: 1 without
    assert not stopper.should_stop
    assert not stopper.update([0.55, 0.3])     # now both have gone 2 checks without improving
    assert stopper.should_stop
    restored = EarlyStopping(2, 2)
    restored.load_state_dict(stopper.state_dict())
    assert restored.should_stop and restored.best == [0.6, 0.5]
    assert not EarlyStopping(1, None).should_stop


def test_phase_ends_on_the_best_checkpoint(fashion):
    config = make_config("smoke", regime="joint", epochs=3, patience=1, train_size=500)
    data = _device_data(config, fashion)
    model, (result,) = train_regime(config, data, CPU, progress=False)
    history = result.history
    best = result.best_epoch
    # Early stopping: the last epoch run is `patience` epochs after the last improvement.
    accs = [row["val_acc"] for row in history]
    improved = [e for e in range(len(accs))
                if e == 0 or any(a > max(prev[i] for prev in accs[:e]) for i, a in enumerate(accs[e]))]
    assert best == improved[-1]
    assert len(history) == 3 or len(history) - 1 - best == 1
    # The model is at the best epoch: its validation accuracy is the one recorded there.
    val_logits, val_labels = exit_logits(model, data.eval_loader("val"))
    recomputed = (val_logits.argmax(-1) == val_labels).double().mean(1).tolist()
    assert recomputed == pytest.approx(history[best]["val_acc"], abs=1e-12)


def test_same_configuration_and_seed_give_identical_logits(fashion):
    config = make_config("smoke", regime="mixed", train_size=400)
    outputs = []
    for _ in range(2):
        data = _device_data(config, fashion)
        backbone, _ = train_backbone(config, data, CPU, progress=False)
        model, _ = train_regime(config, data, CPU, backbone.backbone.state_dict(), progress=False)
        outputs.append(exit_logits(model, data.eval_loader("test"))[0])
    assert torch.equal(outputs[0], outputs[1])
    other = make_config("smoke", regime="joint", train_size=400, seed=1)
    model, _ = train_regime(other, _device_data(other, fashion), CPU, progress=False)
    assert not torch.equal(exit_logits(model, _device_data(other, fashion).eval_loader("test"))[0][-1],
                           outputs[0][-1])


def test_every_regime_starts_from_the_same_initialisation():
    config = make_config("smoke")
    a, b = build_model(config), build_model(config.with_regime("joint"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    changed = build_model(make_config("smoke", exit_after_blocks=(1,)))
    # The backbone's initialisation does not depend on the heads.
    assert all(torch.equal(x, y) for x, y in zip(a.backbone.state_dict().values(),
                                                 changed.backbone.state_dict().values()))


def test_nan_loss_stops_with_phase_epoch_and_exit(fashion):
    config = make_config("smoke", regime="joint", lr=1e12, train_size=500)
    with pytest.raises(TrainingDiverged, match=r"phase 'joint', epoch 0: the loss of (exit \d|the final exit) is (nan|inf)"):
        train_regime(config, _device_data(config, fashion), CPU, progress=False)


class _RuinedStatistics:
    """A recorder (the trainer's hook into every step) that sets a BatchNorm layer's running
    variance to NaN: training, on batch statistics, stays finite; the model on held-out data,
    on the running ones, does not."""

    def on_step(self, model, phase, epoch, step, exit_losses):
        pass

    def on_epoch_end(self, model, phase, epoch):  # after epoch 0's validation: epoch 1's sees it
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_var.fill_(float("nan"))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_nan_validation_logits_stop_the_phase_by_name(fashion):
    config = make_config("smoke", regime="joint", train_size=500)
    with pytest.raises(TrainingDiverged, match=r"phase 'joint', epoch 1: the validation loss of (exit \d|the final exit) is nan"):
        train_regime(config, _device_data(config, fashion), CPU, progress=False, recorder=_RuinedStatistics())


def test_a_diverging_ztw_ensemble_stops_by_name(fashion):
    from mexlib.methods.ztw import EnsembleStage

    config = make_config("smoke", regime="joint", method="ztw", train_size=500)
    model = build_model(config)
    with torch.no_grad():  # the first head's outputs ruined: what its ensemble is trained on
        for parameter in model.heads[0].parameters():
            parameter.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"stage 'ensembles', epoch 0: the ensemble loss of exit 0 is nan"):
        EnsembleStage(epochs=3).run(model, _device_data(config, fashion), CPU, progress=False)


RESUME_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(int(sys.argv[3]))  # the parent's count: results depend on it
    from mexlib.config import make_config
    from mexlib.store import RunStore
    config = make_config("smoke", **json.loads(sys.argv[2]))
    RunStore(sys.argv[1], device="cpu", progress=False).get_or_run(config)
""")

#: Models and methods whose resume must be bit-identical: the ResNet (no dropout), the text
#: encoder (dropout draws from torch's global generator), the ViT (its own layout), and the
#: methods with training of their own after the phases (ZTW's ensembles) or inside them (L2W's
#: weighting network).
RESUMED = {
    "resnet": dict(regime="joint", epochs=5, train_size=1200),
    "text-dropout": dict(dataset="wordnet-supersenses", regime="joint", epochs=6),
    "vit": dict(arch="vit-smoke", regime="joint", epochs=5, train_size=1000),
    "ztw": dict(method="ztw", regime="joint", epochs=5, train_size=1000),
    "l2w": dict(method="l2w", regime="joint", epochs=5, train_size=600),
}


@pytest.mark.parametrize("case", list(RESUMED))
def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path, monkeypatch, case):
    import json

    overrides = RESUMED[case]
    config = make_config("smoke", **overrides)
    epochs = overrides["epochs"]
    killed_root = tmp_path / "killed"
    checkpoint = killed_root / "work" / run_key(config) / "joint.ckpt"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(killed_root), json.dumps(overrides),
                                str(torch.get_num_threads())],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    reached = -1
    while time.time() < deadline and process.poll() is None:
        if checkpoint.is_file():
            reached = checkpoint_epoch(checkpoint)
            if reached >= 1:
                break
        time.sleep(0.02)
    assert process.poll() is None, f"training ended before it could be killed: {process.stderr.read()}"
    process.send_signal(signal.SIGKILL)  # a real kill: nothing of the process's state survives
    process.wait()
    reached = checkpoint_epoch(checkpoint)
    assert 1 <= reached < epochs - 1
    assert not any(p.name.startswith("run-") for p in killed_root.iterdir())

    epochs_trained = []
    original = BatchLoader.set_epoch
    monkeypatch.setattr(BatchLoader, "set_epoch",
                        lambda self, e: (epochs_trained.append(e), original(self, e))[1])
    resumed = RunStore(killed_root, device="cpu", progress=False).get_or_run(config)
    assert epochs_trained[0] == reached + 1  # continued after the last checkpoint, not from scratch
    monkeypatch.setattr(BatchLoader, "set_epoch", original)

    straight = RunStore(tmp_path / "straight", device="cpu", progress=False).get_or_run(config)
    for split in ("val", "test"):
        assert torch.equal(resumed.logits(split)[0], straight.logits(split)[0])
    resumed_weights, straight_weights = resumed.state_dict(), straight.state_dict()
    assert resumed_weights.keys() == straight_weights.keys()
    assert all(torch.equal(resumed_weights[k], straight_weights[k]) for k in resumed_weights)
    strip = [{k: v for k, v in phase.items() if k != "wall_time"} for phase in resumed.history]
    rows = [[{k: v for k, v in row.items() if k != "seconds"} for row in phase["history"]] for phase in strip]
    straight_rows = [[{k: v for k, v in row.items() if k != "seconds"} for row in phase["history"]]
                     for phase in straight.history]
    assert rows == straight_rows  # every epoch's losses and accuracies, before and after the kill
    assert not checkpoint.parent.exists()  # the work folder is cleaned up once the run is stored


def test_a_damaged_checkpoint_restarts_its_phase_by_name(tmp_path, monkeypatch, fashion):
    """A bit flipped inside a checkpoint's tensors is caught by its checksum: the phase starts
    again (ending as an uninterrupted run does) with a warning that names the file."""
    from mexlib.checkpoints import DamagedCheckpointWarning, read_checkpoint

    config = make_config("smoke", regime="joint", epochs=3, train_size=400)
    data = _device_data(config, fashion)
    train_until(2, config, data, CPU, tmp_path, monkeypatch)
    original = BatchLoader.set_epoch
    checkpoint = tmp_path / "joint.ckpt"
    assert read_checkpoint(checkpoint)["epoch"] == 1
    damaged = bytearray(checkpoint.read_bytes())
    damaged[-2000] ^= 0x01  # one bit of a tensor near the end of the payload
    checkpoint.write_bytes(bytes(damaged))
    epochs_trained = []
    monkeypatch.setattr(BatchLoader, "set_epoch", lambda self, e: (epochs_trained.append(e), original(self, e))[1])
    with pytest.warns(UserWarning, match=f"cannot resume from the checkpoint {checkpoint}.*does not match its checksum") as caught:
        resumed, _ = train_regime(config, data, CPU, workdir=tmp_path, progress=False)
    assert any(issubclass(w.category, DamagedCheckpointWarning) for w in caught)
    assert epochs_trained[0] == 0  # the phase started again
    monkeypatch.setattr(BatchLoader, "set_epoch", original)
    straight, _ = train_regime(config, data, CPU, progress=False)
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, straight.state_dict()[name]), name


def test_a_checkpoint_that_cannot_be_written_names_the_phase_and_the_file(tmp_path, fashion):
    config = make_config("smoke", regime="joint", epochs=1, train_size=300)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "joint.ckpt").mkdir()  # the checkpoint's name is taken by a folder: the write fails
    with pytest.raises(OSError, match=rf"could not write the checkpoint of seed 0 joint joint, epoch 0 to "
                                      rf"{workdir / 'joint.ckpt'}: ") as info:
        train_regime(config, _device_data(config, fashion), CPU, workdir=workdir, progress=False)
    from mexlib.checkpoints import CheckpointWriteError
    assert isinstance(info.value, CheckpointWriteError)
