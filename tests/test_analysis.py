"""The training-dynamics estimators against answers known in advance."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd

import pytest
import torch
from torch import nn

from mexlib.analysis import (barrier, block_features, exit_losses, filter_normalized_direction,
                             gaussian_mixture_information, interpolate, loss_surface, mutual_information,
                             numerical_rank, rank_profile, recompute_batchnorm)
from mexlib.config import make_config
from mexlib.train import build_model


def _model(seed=0):
    return build_model(make_config("smoke", seed=seed))


def _batches(count=3, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 28, 28, generator=generator), torch.randint(0, 10, (size,), generator=generator))
            for _ in range(count)]


def test_directions_are_filter_normalised_and_respect_the_scope():
    model = _model()
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for name, param in model.named_parameters():
        d = direction[name]
        if param.dim() <= 1:
            assert not d.any(), f"{name}: biases and normalisation parameters do not move"
        else:
            torch.testing.assert_close(d.flatten(1).norm(dim=1), param.detach().flatten(1).norm(dim=1))
    backbone_only = filter_normalized_direction(model, torch.Generator().manual_seed(0), scope="backbone")
    assert all(not backbone_only[n].any() for n in backbone_only if n.startswith("heads."))
    assert any(backbone_only[n].any() for n in backbone_only if n.startswith("backbone."))
    with pytest.raises(ValueError, match="valid scopes: all, backbone, heads"):
        filter_normalized_direction(model, torch.Generator(), scope="stem")


def test_batchnorm_statistics_are_recomputed_as_the_mean_over_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    batches = _batches(4)
    recompute_batchnorm(model, batches)
    with torch.no_grad():
        activations = torch.cat([model[0](x) for x, _ in batches])
    torch.testing.assert_close(model[1].running_mean, activations.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1 and not model.training


def test_interpolation_ends_and_barrier():
    a, b = _model(0), _model(1)
    bn = _batches(2, seed=1)
    batch = _batches(1, 64, seed=2)[0]
    path = interpolate(a, b, batch, bn, steps=5)
    assert path["alpha"].tolist() == [0, 0.25, 0.5, 0.75, 1]
    for end, alpha in ((a, 0.0), (b, 1.0)):
        losses, accuracy = exit_losses(recompute_batchnorm(end, bn), *batch)
        row = path[path["alpha"] == alpha].iloc[0]
        assert row["total"] == pytest.approx(float(losses.mean()), rel=1e-5)
        assert row[f"accuracy {len(losses) - 1}"] == pytest.approx(float(accuracy[-1]))
    flat = interpolate(a, a, batch, bn, steps=3)
    assert barrier(flat) == pytest.approx(0.0, abs=1e-5)
    line = path["total"].iloc[0] + path["alpha"] * (path["total"].iloc[-1] - path["total"].iloc[0])
    assert barrier(path) == pytest.approx((path["total"] - line).max())
    # a path that only climbs from one end to the other, straight: no barrier, whatever its ends
    ramp = pd.DataFrame({"alpha": np.linspace(0, 1, 11), "total": np.linspace(0.2, 1.4, 11)})
    assert barrier(ramp) == pytest.approx(0.0, abs=1e-12)
    bump = ramp.assign(total=ramp["total"] + 0.3 * np.sin(np.pi * ramp["alpha"]))
    assert barrier(bump) == pytest.approx(0.3)
    other = build_model(make_config("smoke", exit_after_blocks=(2,)))
    with pytest.raises(ValueError, match="one architecture"):
        interpolate(a, other, batch, bn)


def test_loss_surface_centre_is_the_model():
    model = _model()
    bn = _batches(2, seed=1)
    batch = _batches(1, 64, seed=2)[0]
    surface = loss_surface(model, batch, bn, steps=3, span=0.5)
    assert len(surface) == 9 and {"a", "b", "total", "exit 0"} <= set(surface.columns)
    centre = surface[(surface["a"] == 0) & (surface["b"] == 0)].iloc[0]
    losses, _ = exit_losses(recompute_batchnorm(model, bn), *batch)
    assert centre["total"] == pytest.approx(float(losses.mean()), rel=1e-5)
    heads_only = loss_surface(model, batch, bn, steps=3, span=0.5, scope="heads")
    last = f"exit {len(losses) - 1}"  # the backbone's own classifier does not move with the heads
    assert heads_only[last].max() - heads_only[last].min() == pytest.approx(0.0, abs=1e-5)


def test_numerical_rank_finds_a_planted_rank():
    generator = torch.Generator().manual_seed(0)
    low = torch.randn(300, 7, generator=generator, dtype=torch.float64) @ torch.randn(
        7, 40, generator=generator, dtype=torch.float64)
    noisy = low + 1e-7 * torch.randn(300, 40, generator=generator, dtype=torch.float64)
    assert numerical_rank(low) == 7 and numerical_rank(noisy, rel_tol=1e-4) == 7
    assert numerical_rank(noisy, rel_tol=1e-12) == 40  # a tolerance below the noise sees it all
    profile = rank_profile({1: noisy}, tolerances=(1e-4, 1e-12))
    assert profile["rank"].tolist() == [7, 40] and profile["bound"].tolist() == [40, 40]
    with pytest.raises(ValueError, match="rel_tol"):
        numerical_rank(low, rel_tol=2)


@pytest.mark.parametrize("shape", [(60, 200), (200, 60)], ids=["wide", "tall"])
def test_singular_values_from_the_gram_matrix_match_the_svd(shape):
    from mexlib.analysis import singular_values
    generator = torch.Generator().manual_seed(1)
    # a spread spectrum: singular values planted from 1 down to 1e-5, on centred columns
    n, d = shape
    r = min(n, d) - 1  # centring removes one dimension
    u = torch.randn(n, r, generator=generator, dtype=torch.float64)
    u, _ = torch.linalg.qr(u - u.mean(0, keepdim=True))
    v, _ = torch.linalg.qr(torch.randn(d, r, generator=generator, dtype=torch.float64))
    matrix = u @ torch.diag(torch.logspace(0, -5, r, dtype=torch.float64)) @ v.T
    exact = singular_values(matrix, exact=True)
    fast = singular_values(matrix)
    assert fast.shape == exact.shape
    torch.testing.assert_close(exact[:r], torch.logspace(0, -5, r, dtype=torch.float64))  # as planted
    torch.testing.assert_close(fast[:r], exact[:r], rtol=1e-6, atol=1e-8 * float(exact[0]))
    for tol in (1e-1, 1e-2, 1e-3, 1e-4):
        assert int((fast > tol * fast[0]).sum()) == int((exact > tol * exact[0]).sum())


@pytest.mark.parametrize("separation", [0.0, 1.0, 2.0, 20.0])
def test_mutual_information_matches_the_exact_value_of_a_gaussian_mixture(separation):
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (4000,), generator=generator)
    t = (labels.double() - 0.5) * separation + torch.randn(4000, generator=generator, dtype=torch.float64)
    exact = gaussian_mixture_information(separation)
    if separation == 20.0:
        assert exact == pytest.approx(math.log(2), abs=1e-6)
    if separation == 0.0:
        assert exact == pytest.approx(0.0, abs=1e-6)
    estimate = mutual_information(t[:, None], labels, k=3, dims=None)
    assert estimate == pytest.approx(exact, abs=0.03)


def test_mutual_information_of_projected_features_keeps_the_label_signal():
    """A label signal in 1 of 50 dimensions, the rest independent noise of smaller variance:
    the leading principal components keep it."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (3000,), generator=generator)
    signal = (labels.double() - 0.5) * 6 + torch.randn(3000, generator=generator, dtype=torch.float64)
    features = torch.cat([signal[:, None], 0.3 * torch.randn(3000, 49, generator=generator, dtype=torch.float64)], 1)
    estimate = mutual_information(features, labels, dims=3)
    assert estimate == pytest.approx(gaussian_mixture_information(6.0), abs=0.05)
    shuffled = mutual_information(features, labels[torch.randperm(3000, generator=generator)], dims=3)
    assert abs(shuffled) < 0.03


def _gaussian_classes_information(means: np.ndarray, samples: int = 400_000, seed: int = 1) -> float:
    """I(T;Y) in nats of T = means[Y] + N(0, I) with Y uniform over the classes, by Monte Carlo:
    ln C − E[H(Y | T)], the posterior computed exactly at each of ``samples`` draws (standard
    error about 0.001 nats at 400,000)."""
    rng = np.random.default_rng(seed)
    classes, dims = means.shape
    labels = rng.integers(0, classes, samples)
    t = means[labels] + rng.standard_normal((samples, dims))
    log_posterior = -0.5 * ((t[:, None, :] - means[None]) ** 2).sum(-1)
    log_posterior -= log_posterior.max(1, keepdims=True)
    posterior = np.exp(log_posterior)
    posterior /= posterior.sum(1, keepdims=True)
    entropy = -(posterior * np.log(np.clip(posterior, 1e-300, None))).sum(1).mean()
    return math.log(classes) - float(entropy)


def test_mutual_information_at_the_scale_it_is_used_has_a_small_bias():
    """Where the representations chapter uses it: 10 classes, 10 dimensions (its 10 principal
    components), about 2 nats, 2048 samples. Ten unit-variance Gaussian classes 3 apart along
    the axes carry 2.01 nats (computed below); the estimate over 4 draws is within 0.05 nats of
    it (measured on 2026-12-04: 0.02 below), far less than the differences between blocks that
    the chapter reports (0.1-0.3 nats)."""
    means = 3.0 * np.eye(10)
    exact = _gaussian_classes_information(means)
    assert 1.9 < exact < 2.1  # the regime of use: about 2 of ln 10 = 2.30 nats
    estimates = []
    for draw in range(4):
        rng = np.random.default_rng(100 + draw)
        labels = rng.integers(0, 10, 2048)
        features = means[labels] + rng.standard_normal((2048, 10))
        estimates.append(mutual_information(torch.from_numpy(features), torch.from_numpy(labels), k=3, dims=None))
    assert np.mean(estimates) == pytest.approx(exact, abs=0.05)
    assert np.std(estimates) < 0.03  # and steady from one sample of 2048 to another
    # through the 10 leading principal components of 64 dimensions (54 of them noise of lower
    # variance), as the chapter projects a block's features: the same answer
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 2048)
    signal = means[labels] + rng.standard_normal((2048, 10))
    features = np.concatenate([signal, 0.3 * rng.standard_normal((2048, 54))], 1)
    projected = mutual_information(torch.from_numpy(features), torch.from_numpy(labels), k=3, dims=10)
    assert projected == pytest.approx(exact, abs=0.07)


def test_block_features_are_each_blocks_flattened_output():
    model = _model()
    batches = _batches(2, 16)
    features = block_features(model, batches)
    assert sorted(features) == list(range(1, model.backbone.num_blocks + 1))
    for block, matrix in features.items():
        info = model.backbone.feature_info[block - 1]
        assert matrix.shape[0] == 32 and matrix.shape[1] % info.channels == 0
    first = block_features(model, batches, blocks=[1])
    torch.testing.assert_close(first[1], features[1])


def test_block_features_of_a_multiscale_block_hold_every_scale():
    model = build_model(make_config("smoke", arch="msdnet-smoke")).eval()
    x, _ = _batches(1, 4)[0]
    features = block_features(model, [(x, None)], blocks=[2])
    with torch.no_grad():
        h = model.backbone.stem(x)
        for block in model.backbone.blocks[:2]:
            h = block(h)
    assert isinstance(h, list) and len(h) > 1
    torch.testing.assert_close(features[2], torch.cat([t.flatten(1) for t in h], 1))


def _smoke_data(config):
    from mexlib.data import load_dataset
    from mexlib.train import DeviceData
    return DeviceData.from_dataset(config, load_dataset(config.dataset), torch.device("cpu"))


def test_recording_gradients_and_snapshots_leaves_the_run_unchanged():
    from mexlib.analysis import GradientRecorder, SnapshotRecorder
    from mexlib.train import train_regime

    config = make_config("smoke", regime="joint", epochs=1, train_size=256)
    data = _smoke_data(config)
    plain, _ = train_regime(config, data, torch.device("cpu"), progress=False)
    gradients = GradientRecorder(every=1)
    recorded_model, _ = train_regime(config, data, torch.device("cpu"), progress=False, recorder=gradients)
    for name, value in plain.state_dict().items():
        assert torch.equal(value, recorded_model.state_dict()[name]), name
    rows = gradients.records()
    steps = len(data.train_loader("joint", config.joint_phase.batch_size))
    assert rows["step"].nunique() == steps and set(rows["exit"]) == {0, 1, 2}
    blocks = set(rows["block"])
    assert {"0 stem", "1 block", "2 block", "3 block", "heads"} == blocks
    # exit 0 sits after block 1: its loss sends nothing to blocks 2 and 3
    first = rows[rows["exit"] == 0].set_index("block")["norm"].groupby(level=0).max()
    assert first["2 block"] == 0 and first["3 block"] == 0 and first["1 block"] > 0
    snapshots = SnapshotRecorder()
    again, _ = train_regime(config, data, torch.device("cpu"), progress=False, recorder=snapshots)
    assert len(snapshots.records()) == config.joint_phase.epochs
    # one epoch: its snapshot is the phase's best (and only) state, which the model ends in
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in snapshots.records()[-1]["state"].items())


def test_recorded_gradient_norms_are_each_exit_loss_alone():
    from mexlib.analysis import GradientRecorder
    from mexlib.methods import get_method
    from mexlib.train import step_rule

    model = _model().train()
    x, y = _batches(1, 32)[0]
    reference = copy.deepcopy(model)
    recorder = GradientRecorder(every=1)
    rule = step_rule(model, "joint", get_method("sdn"), 1, 1)
    _, exit_losses = rule.loss(model, x, y, torch.autocast("cpu", enabled=False), 0.1)
    recorder.on_step(model, "joint", 0, 0, exit_losses)
    rows = recorder.records().set_index(["exit", "block"])["norm"]
    for k in range(model.num_exits):
        copy_model = copy.deepcopy(reference)
        copy_rule = step_rule(copy_model, "joint", get_method("sdn"), 1, 1)
        _, losses = copy_rule.loss(copy_model, x, y, torch.autocast("cpu", enabled=False), 0.1)
        losses[k].backward()
        for i, block in enumerate(copy_model.backbone.blocks, start=1):
            expected = sum(float(p.grad.pow(2).sum()) for p in block.parameters() if p.grad is not None) ** 0.5
            assert rows[(k, f"{i} block")] == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_records_are_kept_beside_the_store_and_read_back(tmp_path, monkeypatch):
    import warnings

    from mexlib.analysis import GradientRecorder, SnapshotRecorder, recorded
    from mexlib.store import RunStore

    store = RunStore(tmp_path, device="cpu", progress=False)
    config = make_config("smoke", regime="mixed", epochs=2, train_size=256)
    store.get_or_run(config)  # stored first, so the retrained run is compared with it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the retrained run must equal the stored one
        gradients, snapshots = recorded(store, config, [GradientRecorder(every=2), SnapshotRecorder()])
    assert len(gradients) and set(gradients["phase"]) == {"joint"}
    assert list(tmp_path.glob("records-*-gradients-every2-joint/records.pt"))  # an entry of the store's
    # phase 1's snapshots, then phase 2's, each phase's epochs in order
    assert [(s["phase"], s["epoch"]) for s in snapshots] == [("backbone", 0), ("backbone", 1), ("joint", 0), ("joint", 1)]
    run = store.get_or_run(config)
    best = next(p["best_epoch"] for p in run.history if p["phase"] == "joint")  # where the stored run ends
    stored = run.state_dict()
    assert all(torch.equal(v, stored[k]) for k, v in snapshots[2 + best]["state"].items())
    monkeypatch.setattr("mexlib.analysis.recording.train_regime",
                        lambda *a, **k: pytest.fail("the records should have been read, not retrained"))
    monkeypatch.setattr("mexlib.analysis.recording.train_backbone",
                        lambda *a, **k: pytest.fail("phase 1's records should have been read, not retrained"))
    assert recorded(store, config, GradientRecorder(every=2)).equals(gradients)
    again = recorded(store, config, SnapshotRecorder())
    assert all(torch.equal(a["state"][k], b["state"][k]) for a, b in zip(again, snapshots) for k in a["state"])
    # the disjoint run of the seed shares phase 1: only its heads phase trains to be recorded
    monkeypatch.undo()
    monkeypatch.setattr("mexlib.analysis.recording.train_backbone",
                        lambda *a, **k: pytest.fail("phase 1 is shared with the mixed run's records"))
    disjoint = recorded(store, make_config("smoke", regime="disjoint", epochs=2, train_size=256), SnapshotRecorder())
    assert [s["phase"] for s in disjoint] == ["backbone", "backbone", "heads", "heads"]
    assert all(torch.equal(disjoint[0]["state"][k], snapshots[0]["state"][k]) for k in snapshots[0]["state"])
    with pytest.raises(ValueError, match="one key"):
        recorded(store, config, [SnapshotRecorder(), SnapshotRecorder()])


def test_batchnorm_is_recomputed_even_when_the_model_pins_its_backbone_to_eval():
    model = _model().set_freeze_mode("heads")  # heads-only mode keeps the backbone in eval
    batches = _batches(2)
    recompute_batchnorm(model, batches)
    norm = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(norm.num_batches_tracked) == 2 and not torch.equal(norm.running_var, torch.ones_like(norm.running_var))


def test_fixed_samples_are_the_same_images_for_every_run_and_normalised():
    from mexlib.analysis import fixed_sample, joined
    config = make_config("smoke")
    data = _smoke_data(config)
    batches = fixed_sample(data, "test", 100, seed=3, batch_size=32)
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    x, y = joined(batches)
    again, labels = joined(fixed_sample(data, "test", 100, seed=3, batch_size=100))
    assert torch.equal(x, again) and torch.equal(y, labels)
    other = joined(fixed_sample(data, "test", 100, seed=4))[1]
    assert not torch.equal(other, y), "another seed draws other images"
    # the images are the split's own, normalised as the run saw them
    normalised = data.normalize(data.test_images)
    rows = [i for i in range(len(data.test_labels)) if torch.equal(normalised[i], x[0])]
    assert rows and int(data.test_labels[rows[0]]) == int(y[0])
    everything = joined(fixed_sample(data, "val", 10 ** 9))[1]
    assert len(everything) == len(data.val_labels)
    with pytest.raises(ValueError, match="valid splits: train, val, test"):
        fixed_sample(data, "holdout", 10)


def test_cached_results_are_read_back_for_the_same_inputs_only(tmp_path):
    from mexlib.analysis import cached
    from mexlib.store import RunStore

    store = RunStore(tmp_path, device="cpu", progress=False)
    calls = []

    def compute(value):
        calls.append(value)
        return {"value": value, "tensor": torch.arange(value)}

    first = cached(store, "plane", {"run": "abc", "steps": 5}, lambda: compute(5))
    again = cached(store, "plane", {"steps": 5, "run": "abc"}, lambda: compute(99))  # same inputs, any order
    assert calls == [5] and torch.equal(again["tensor"], first["tensor"])
    cached(store, "plane", {"run": "abc", "steps": 7}, lambda: compute(7))
    assert calls == [5, 7] and len(list(tmp_path.glob("result-plane-*/result.pt"))) == 2
    with pytest.raises(ValueError, match="letters, digits"):
        cached(store, "../plane", {}, lambda: 0)


def test_model_at_a_snapshot_is_the_model_with_those_weights():
    from mexlib.analysis import model_at
    config = make_config("smoke")
    trained = _model(seed=3)
    model = model_at(config.to_dict(), trained.state_dict())
    assert not model.training
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())


def test_effective_rank_is_the_exponential_of_the_singular_values_entropy():
    from mexlib.analysis import effective_rank, effective_rank_interval

    generator = torch.Generator().manual_seed(3)
    u, _ = torch.linalg.qr(torch.randn(400, 40, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(60, 40, generator=generator, dtype=torch.float64))
    u = u - u.mean(0, keepdim=True)  # centred columns: centring leaves the planted spectrum
    u, _ = torch.linalg.qr(u)
    for planted in (torch.ones(7), torch.logspace(0, -3, 40, dtype=torch.float64), torch.tensor([5.0, 1.0, 0.1])):
        k = len(planted)
        matrix = u[:, :k] @ torch.diag(planted.double()) @ v[:, :k].T
        p = planted.double() / planted.double().sum()
        expected = math.exp(-float((p * p.log()).sum()))
        assert effective_rank(matrix) == pytest.approx(expected, rel=1e-6)
    assert effective_rank(u[:, :7] @ v[:, :7].T) == pytest.approx(7.0, rel=1e-6)  # k equal values give k
    value, low, high = effective_rank_interval(u[:, :10] @ torch.diag(torch.logspace(0, -1, 10, dtype=torch.float64))
                                               @ v[:, :10].T, resamples=50)
    assert low <= high and low < value * 1.05 and high > value * 0.8
    with pytest.raises(ValueError, match="at least 2"):
        effective_rank_interval(u, resamples=1)


def test_the_effective_rank_from_the_gram_matrix_is_the_svds_and_a_resample_is_its_rows():
    """The Gram route against the SVD on a matrix of many features (the case it is for), and a
    bootstrap resample's value against the SVD of the resampled rows themselves."""
    from mexlib.analysis import effective_rank, effective_rank_interval

    generator = torch.Generator().manual_seed(5)
    features = torch.randn(300, 40, generator=generator, dtype=torch.float64) @ \
        torch.randn(40, 900, generator=generator, dtype=torch.float64)  # rank 40 of 299 possible
    centred = features - features.mean(0, keepdim=True)
    values = torch.linalg.svdvals(centred)
    p = values[values > 1e-9 * values[0]] / values[values > 1e-9 * values[0]].sum()
    assert effective_rank(features) == pytest.approx(math.exp(-float((p * p.log()).sum())), rel=1e-6)
    from mexlib.analysis.representations import _centred_values

    rows = torch.randint(0, 300, (300,), generator=torch.Generator().manual_seed(1))  # with repeats
    resampled = features[rows] - features[rows].mean(0, keepdim=True)
    gram = features @ features.T
    assert _centred_values(gram[rows][:, rows])[:40] == pytest.approx(torch.linalg.svdvals(resampled)[:40], rel=1e-6)
    value, low, high = effective_rank_interval(features, resamples=20, seed=1)
    assert value == effective_rank(features) and low < value < high


def test_a_bootstrap_interval_of_the_effective_rank_narrows_with_more_samples():
    from mexlib.analysis import effective_rank_interval

    generator = torch.Generator().manual_seed(6)
    mixing = torch.randn(30, 200, generator=generator, dtype=torch.float64) * torch.logspace(0, -1, 30)[:, None]
    widths = []
    for n in (100, 800):
        features = torch.randn(n, 30, generator=generator, dtype=torch.float64) @ mixing
        value, low, high = effective_rank_interval(features, resamples=40)
        assert low < value < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # about 1/√8 of it: sampling error shrinks as 1/√n
