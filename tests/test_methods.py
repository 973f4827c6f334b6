"""Early-exit methods: every method's heads, loss and step in every regime; each method's
defining property (ZTW's ensemble and cascade, GPF's gate and imitation, L2W's weights and meta
step); the plug-in interface with a method defined here."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mexlib.train
from mexlib import data as data_module
from mexlib import evaluate
from mexlib.config import REGIMES, make_config
from mexlib.methods import METHODS, Method, get_method, register, training_method
from mexlib.methods.gpf import imitation_loss
from mexlib.methods.weighting import depth_weights as get_depth_weights
from mexlib.methods.l2w import L2WStep, WeightPredictor, allocate_to_exits, target_exit_distribution
from mexlib.models import ExitContext
from mexlib.store import RunStore, run_key
from mexlib.checkpoints import read_checkpoint
from interrupted import train_until
from mexlib.train import DeviceData, build_model, step_rule, train_regime

CPU = torch.device("cpu")
TRAINED = [name for name, m in METHODS.items() if m.trains_as is None]
NO_AUTOCAST = torch.autocast("cpu", enabled=False)


@pytest.fixture(scope="module")
def fashion():
    return data_module.load_dataset("fashion-mnist")


@pytest.fixture(scope="module")
def batch(fashion):
    config = make_config("smoke")
    data = DeviceData.from_dataset(config, fashion, CPU)
    return next(iter(data.eval_loader("val")))[0][:64], data.val_labels[:64]


def _model(method: str, seed: int = 0, **overrides):
    return build_model(make_config("smoke", method=method, seed=seed, **overrides))


@pytest.mark.parametrize("method", list(METHODS))
def test_every_exit_outputs_batch_by_classes(method, batch):
    x, _ = batch
    model = _model(method).eval()
    context = model.forward_context(x)
    assert len(context.logits) == len(context.outputs) == model.num_exits == 3
    for out in context.logits + context.outputs:
        assert out.shape == (len(x), 10) and torch.isfinite(out).all()
    for k in range(model.num_exits):  # a truncated pass gives the same outputs as the full one
        for part, full in zip(model.forward_until(x, k), context.outputs):
            torch.testing.assert_close(part, full)


@pytest.mark.parametrize("method", TRAINED)
@pytest.mark.parametrize("phase", ["joint", "heads"])
def test_loss_is_finite_and_decreases_on_a_fixed_batch(method, phase, batch):
    x, y = batch
    torch.manual_seed(0)
    model = _model(method).set_freeze_mode({"joint": "all", "heads": "heads"}[phase]).train()
    # 40 steps as 4 epochs of 10, so that a rule that ramps over epochs (sdn-depth) ramps
    rule = step_rule(model, phase, get_method(method), steps_per_epoch=10, epochs=4)
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.05, momentum=0.9)
    losses, trained = [], []
    trained_exits = slice(None) if phase == "joint" else slice(0, -1)  # phase 3 freezes the last
    for _ in range(40):
        loss, exit_losses = rule.loss(model, x, y, NO_AUTOCAST, 0.05)
        assert torch.isfinite(loss) and exit_losses.shape == (model.num_exits,)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        trained.append(exit_losses[trained_exits].mean().item())
    assert losses[-1] < losses[0], losses
    assert trained[-1] < 0.75 * trained[0], trained


@pytest.mark.parametrize("method", TRAINED)
@pytest.mark.parametrize("regime", list(REGIMES))
def test_one_epoch_in_every_regime(method, regime, fashion):
    config = make_config("smoke", method=method, regime=regime, epochs=1, train_size=256)
    data = DeviceData.from_dataset(config, fashion, CPU)
    backbone = None
    if "backbone" in config.phases:
        backbone, _ = mexlib.train.train_backbone(config, data, CPU, progress=False)
        backbone = backbone.backbone.state_dict()
    before = build_model(config).state_dict()
    model, results = train_regime(config, data, CPU, backbone, progress=False)
    stages = [s.name for s in get_method(method).stages()]
    assert [r.phase for r in results] == [p for p in config.phases if p != "backbone"] + stages
    changed = {name for name, value in model.heads.state_dict().items()
               if not torch.equal(value, before["heads." + name])}
    assert changed, "the heads did not train"
    backbone_changed = any(not torch.equal(v, before["backbone." + k]) for k, v in model.backbone.state_dict().items())
    assert backbone_changed  # trained in phase 1 or jointly
    if regime == "disjoint":  # phase 3 leaves the phase-1 backbone exactly as it was
        assert all(torch.equal(v, backbone[k]) for k, v in model.backbone.state_dict().items())


def test_unknown_method_raises_with_the_valid_ones():
    with pytest.raises(ValueError, match="valid methods: sdn, pbee, gpf, ztw, l2w"):
        get_method("msdnet")
    with pytest.raises(ValueError, match="valid methods: .*l2w"):
        make_config("smoke", method="sdn2")


def test_pbee_reads_sdns_runs(tmp_path):
    store = RunStore(tmp_path, device="cpu", progress=False)
    pbee = make_config("smoke", method="pbee")
    assert training_method("pbee") == "sdn" and get_method("pbee").policy == "patience"
    # as SDN's run trains here (resolve also fixes what compile="auto" means on this device)
    assert store.resolve(pbee) == store.resolve(make_config("smoke", method="sdn"))
    assert store.resolve(pbee).method == "sdn" and run_key(store.resolve(pbee)) == run_key(make_config("smoke"))


def test_phase_one_key_holds_no_method():
    configs = [make_config("cpu", method=m, regime="mixed") for m in METHODS]
    assert all("method" not in c.backbone_config() for c in configs)
    assert len({str(sorted(c.backbone_config().items())) for c in configs}) == 1


def test_trainer_has_no_method_specific_branches():
    source = Path(inspect.getsourcefile(mexlib.train)).read_text().lower()
    for name in METHODS:
        assert f'"{name}"' not in source and f"'{name}'" not in source and f"{name}." not in source


# --- ZTW -------------------------------------------------------------------------------------

def test_ztw_ensemble_at_exit_0_predicts_as_head_0_at_initialisation(batch):
    x, _ = batch
    model = _model("ztw").eval()
    ensemble = model.heads[0].ensemble
    assert torch.all(ensemble.bias == 0) and ensemble.log_weights.abs().max() < 0.1
    context = model.forward_context(x)
    assert torch.equal(context.outputs[0].argmax(1), context.logits[0].argmax(1))
    # exit 1's ensemble really combines two heads: its output is not head 1's alone
    assert not torch.allclose(F.log_softmax(context.outputs[1], 1), F.log_softmax(context.logits[1], 1))


def test_ztw_cascade_carries_no_gradient_into_the_previous_head(batch):
    x, y = batch
    model = _model("ztw").train()
    context = model.forward_context(x)
    F.cross_entropy(context.logits[1], y).backward()
    assert all(p.grad is None for p in model.heads[0].parameters())
    cascade = model.heads[1].cascade[1].weight
    assert cascade.grad is not None and cascade.grad.abs().sum() > 0  # the cascade input is used


def test_ztw_ensemble_stage_trains_the_ensembles_only(fashion):
    config = make_config("smoke", method="ztw", regime="joint", epochs=1, train_size=256)
    data = DeviceData.from_dataset(config, fashion, CPU)
    model, _ = train_regime(config, data, CPU, progress=False)
    trained = copy.deepcopy(model.state_dict())
    stage = get_method("ztw").stages()[0]
    stage.epochs = 3
    stage.run(model, data, CPU, progress=False)
    for name, value in model.state_dict().items():
        if ".ensemble." in name:
            assert not torch.equal(value, trained[name]), name
        else:
            assert torch.equal(value, trained[name]), name




# --- GPF -------------------------------------------------------------------------------------

def test_gpf_gate_lies_in_zero_one(batch):
    x, _ = batch
    model = _model("gpf")
    context = model.forward_context(x)
    heads = model.heads
    for i in range(len(heads)):
        past = [s.detach() for s in context.states[:i + 1]]
        gate = heads[i].balance_gate(past, heads)
        assert gate.shape == (len(x), 10) and (gate > 0).all() and (gate < 1).all()


def test_gpf_imitation_loss_is_zero_when_the_imitation_is_exact(batch):
    x, _ = batch
    context = _model("gpf").forward_context(x)
    assert imitation_loss(context) > 0.01
    exact = ExitContext(context.heads, context.logits, context.outputs, context.states,
                        {"imitations": [{j: context.states[j].clone() for j in future}
                                        for future in context.extras["imitations"]]})
    assert imitation_loss(exact).abs() < 1e-6


def test_gpf_loss_weights_exits_by_depth_and_adds_the_imitation(batch):
    x, y = batch
    method = get_method("gpf")
    context = _model("gpf").forward_context(x)
    exit_losses = method.exit_losses(context, y)
    expected = (exit_losses * torch.tensor([1.0, 2.0, 3.0])).sum() / 6 + imitation_loss(context)
    torch.testing.assert_close(method.combine(exit_losses, context), expected)


def test_gpf_past_states_reach_later_heads_detached(batch):
    x, y = batch
    model = _model("gpf")
    context = model.forward_context(x)
    F.cross_entropy(context.logits[1], y).backward()
    # head 1's loss trains head 0's reduction (applied to head 0's detached state) but not the
    # layers that compute head 0's state
    assert model.heads[0].reduce.weight.grad is not None
    assert all(p.grad is None for p in model.heads[0].state.parameters())


# --- L2W -------------------------------------------------------------------------------------

def test_l2w_weights_are_positive_and_average_one():
    torch.manual_seed(0)
    wpn = WeightPredictor(num_exits=4, epsilon=0.3)
    losses = torch.rand(128, 4) * 5
    weights = wpn(losses)
    assert weights.shape == (128, 4)
    assert (weights > 0).all() and (weights >= 1 - 2 * 0.3).all() and (weights <= 1 + 2 * 0.3).all()
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))
    assert weights.std() > 0  # not the constant 1


def test_l2w_target_distribution_and_allocation():
    q = target_exit_distribution(4, p=0.75)
    assert abs(q.sum().item() - 1) < 1e-12 and all(q[k] > q[k + 1] for k in range(3))
    torch.manual_seed(1)
    confidence = torch.rand(4, 50)
    groups = allocate_to_exits(confidence, q)
    everything = torch.cat(groups)
    assert sorted(everything.tolist()) == list(range(50))  # each sample in exactly one group
    for k in range(3):
        assert len(groups[k]) == int(50 * q[k])
        taken_before = torch.cat(groups[:k]) if k else torch.tensor([], dtype=torch.long)
        free = sorted(set(range(50)) - set(taken_before.tolist()))
        best = sorted(free, key=lambda n: -confidence[k, n].item())[:len(groups[k])]
        assert sorted(groups[k].tolist()) == sorted(best)


def test_l2w_meta_step_changes_the_wpn_and_leaves_the_model_as_the_regular_step(batch):
    x, y = batch
    model = _model("l2w").train()
    twin = copy.deepcopy(model)
    rule = step_rule(model, "joint", get_method("l2w"), 4000, 1)
    assert isinstance(rule, L2WStep) and rule.step == 0 and rule.interval == 20
    wpn_before = copy.deepcopy(rule.wpn.state_dict())
    buffers_before = {n: b.clone() for n, b in model.named_buffers()}
    rule.meta_step(model, x, y, NO_AUTOCAST, lr=0.05)
    assert any(not torch.equal(v, wpn_before[k]) for k, v in rule.wpn.state_dict().items())
    for name, value in model.state_dict().items():  # weights and BatchNorm statistics untouched
        assert torch.equal(value, twin.state_dict()[name]), name
    assert all(torch.equal(b, buffers_before[n]) for n, b in model.named_buffers())

    # the full step (meta, then regular) equals a regular step with the updated WPN
    model = copy.deepcopy(twin)
    rule = step_rule(model, "joint", get_method("l2w"), 4000, 1)
    rule.wpn.load_state_dict(wpn_before)
    regular = step_rule(twin, "joint", get_method("l2w"), 4000, 1)
    optimizers = [torch.optim.SGD(m.trainable_parameters(), lr=0.05) for m in (model, twin)]
    loss, _ = rule.loss(model, x, y, NO_AUTOCAST, 0.05)  # step 0: meta step first
    regular.wpn.load_state_dict(rule.wpn.state_dict())
    regular.step = 1  # not a meta step
    twin_loss, _ = regular.loss(twin, x, y, NO_AUTOCAST, 0.05)
    torch.testing.assert_close(loss, twin_loss)
    for m, opt, value in ((model, optimizers[0], loss), (twin, optimizers[1], twin_loss)):
        opt.zero_grad()
        value.backward()
        opt.step()
    for name, value in model.state_dict().items():
        assert torch.equal(value, twin.state_dict()[name]), name


def test_l2w_phase_resumes_exactly_after_an_interruption(tmp_path, fashion, monkeypatch):
    config = make_config("smoke", method="l2w", regime="joint", epochs=3, train_size=256)
    data = DeviceData.from_dataset(config, fashion, CPU)
    train_until(2, config, data, CPU, tmp_path, monkeypatch)
    state = read_checkpoint(tmp_path / "joint.ckpt")
    assert state["epoch"] == 1 and state["step_rule"]["step"] == 2 * len(data.train_loader("joint", 64))
    resumed, _ = train_regime(config, data, CPU, workdir=tmp_path, progress=False)
    straight, _ = train_regime(config, data, CPU, progress=False)
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, straight.state_dict()[name]), name


# --- the interface ---------------------------------------------------------------------------

class ScaledHead(nn.Module):
    """A toy head: a linear layer on the globally pooled features, times a learned scale."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.scale * self.fc(x.mean((2, 3)))


class Toy(Method):
    name = "toy"
    description = "a method defined in a test"
    policy = "entropy"

    def build_heads(self, features, head_kind, num_classes):
        return nn.ModuleList(ScaledHead(f.channels, num_classes) for f in features)

    def combine(self, exit_losses, context):
        return exit_losses[-1] + 0.5 * exit_losses[:-1].sum()  # final exit counts double


def test_a_method_defined_outside_the_package_plugs_in(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "toy", Toy())
    config = make_config("smoke", method="toy", regime="mixed", epochs=1, train_size=256)
    store = RunStore(tmp_path, device="cpu", progress=False)
    run = store.get_or_run(config)
    model = run.model()
    assert all(isinstance(h, ScaledHead) for h in model.heads)
    assert any(h.scale.item() != 2.0 for h in model.heads)  # trained through the toy loss
    logits, labels = run.logits("test")
    assert logits.shape == (3, len(labels), 10)
    costs = evaluate.exit_costs(model, (1, 28, 28))
    assert costs.relative[0] < costs.relative[1] < costs.relative[2]
    # phase 1 is shared with every other method of the seed
    assert store.find_backbone(make_config("smoke", method="sdn", regime="mixed", epochs=1,
                                           train_size=256)) is not None


def test_register_rejects_a_nameless_method():
    with pytest.raises(ValueError, match="needs a name"):
        register(Method())


@pytest.mark.parametrize("method", ["gpf", "ztw"])
def test_method_extras_count_in_the_exit_costs(method):
    sdn = evaluate.exit_costs(_model("sdn"), (1, 28, 28))
    other = evaluate.exit_costs(_model(method), (1, 28, 28))
    assert other.backbone_flops == sdn.backbone_flops
    assert all(o >= s for o, s in zip(other.flops_per_exit, sdn.flops_per_exit))
    assert other.flops_per_exit[-2] > sdn.flops_per_exit[-2]  # the cascade / imitators cost
    assert list(other.relative) == sorted(other.relative)


def test_l2w_meta_step_runs_through_attention(batch):
    x, y = batch
    model = _model("l2w", arch="vit-smoke").train()
    rule = step_rule(model, "joint", get_method("l2w"), 10, 1)
    before = copy.deepcopy(rule.wpn.state_dict())
    loss, _ = rule.loss(model, x[:16], y[:16], NO_AUTOCAST, 1e-3)  # step 0: a meta step first
    assert torch.isfinite(loss)
    assert any(not torch.equal(v, before[k]) for k, v in rule.wpn.state_dict().items())


def test_l2w_meta_step_with_too_few_samples_for_any_trained_exit(batch):
    x, y = batch
    model = _model("l2w").set_freeze_mode("heads").train()
    rule = step_rule(model, "heads", get_method("l2w"), 10, 1)
    before = copy.deepcopy(rule.wpn.state_dict())
    # 2 meta samples: floor(2 q_k) = 0 for every head, so all go to the frozen final exit
    meta_loss = rule.meta_step(model, x[:4], y[:4], NO_AUTOCAST, lr=0.05)
    assert torch.isfinite(meta_loss)
    assert all(torch.equal(v, before[k]) for k, v in rule.wpn.state_dict().items())


def test_l2w_meta_interval_follows_the_phase_length():
    l2w = get_method("l2w")
    assert l2w.interval_for(200 * 390) == 100  # a paper-length phase: the study's interval
    assert l2w.interval_for(2180) == 10  # a cpu-profile phase: about 200 meta steps
    assert l2w.interval_for(20) == 1


def test_training_forwards_skip_the_inference_outputs(batch):
    x, _ = batch
    model = _model("ztw").eval()
    full = model.forward_context(x)
    light = model.forward_context(x, outputs=False)
    assert light.outputs == [] and len(light.logits) == len(full.logits)
    for a, b in zip(light.logits, full.logits):
        torch.testing.assert_close(a, b)


def test_gpf_imitation_loss_on_a_truncated_forward(batch):
    x, _ = batch
    context = _model("gpf").forward_context(x, k=0)
    assert len(context.states) == 1 and imitation_loss(context) == 0


def test_depth_weights_ramp_to_depth_proportional_weights_summing_to_one():
    K, T = 6, 10
    end = [k / K for k in range(1, K + 1)]
    torch.testing.assert_close(get_depth_weights(K), torch.tensor(end) / sum(end))
    previous = None
    for epoch in range(1, T + 3):  # counted from 1: the last epoch, T, trains with C_k
        weights = get_depth_weights(K, epoch, T)
        heads = [min(c, 0.01 + epoch * c / T) for c in end[:-1]]
        torch.testing.assert_close(weights, torch.tensor(heads + [1.0]) / sum(end))
        if previous is not None:
            assert (weights >= previous).all()
        previous = weights
    assert previous.sum().item() == pytest.approx(1.0)  # the ramp has ended


def test_depth_weighted_step_ramps_by_epoch_and_resumes(batch):
    x, y = batch
    model = _model("sdn-depth").train()
    method = get_method("sdn-depth")
    rule = step_rule(model, "joint", method, steps_per_epoch=2, epochs=4)
    for step in range(5):
        torch.manual_seed(step)
        loss, exit_losses = rule.loss(model, x, y, NO_AUTOCAST, 0.05)
        expected = (get_depth_weights(model.num_exits, step // 2 + 1, 4) * exit_losses).sum()
        torch.testing.assert_close(loss, expected)
    resumed = step_rule(model, "joint", method, steps_per_epoch=2, epochs=4)
    resumed.load_state_dict(rule.state_dict())
    assert resumed.epoch == rule.epoch == 3
    # with the backbone frozen it trains as SDN: the plain mean
    heads_rule = step_rule(model, "heads", method, steps_per_epoch=2, epochs=4)
    loss, exit_losses = heads_rule.loss(model, x, y, NO_AUTOCAST, 0.05)
    torch.testing.assert_close(loss, exit_losses.mean())


def test_gradient_equilibrium_averages_the_gradients_behind_each_block(batch):
    x, y = batch
    plain, balanced = _model("sdn").train(), _model("sdn-ge").train()
    assert plain.exit_after_blocks == (1, 2) and plain.backbone.num_blocks == 3  # a head after every block
    balanced.load_state_dict(plain.state_dict())
    outputs = {}
    for name, model in (("plain", plain), ("balanced", balanced)):
        context = model.forward_context(x)
        outputs[name] = context.logits
        sum(F.cross_entropy(out, y) for out in context.logits).backward()
    for a, b in zip(outputs["plain"], outputs["balanced"]):
        torch.testing.assert_close(a, b)  # the forward pass is unchanged
    K = plain.num_exits
    expected = {"stem": 1 / K, "blocks.0": 1 / K, "blocks.1": 1 / (K - 1), "blocks.2": 1.0, "classifier": 1.0}
    grads = dict(plain.named_parameters())
    checked = set()
    for name, param in balanced.named_parameters():
        if name.startswith("heads."):
            scale = 1.0  # a head's own parameters get its loss's full gradient
        else:
            part = next(p for p in expected if name.startswith("backbone." + p))
            scale = expected[part]
            checked.add(part)
        want = grads[name].grad * scale  # up to float rounding (the scale applies mid-graph)
        assert (param.grad - want).norm() <= 1e-4 * want.norm() + 1e-9, name
    assert checked == set(expected)
    # the loss is SDN's mean over exits (Li et al.'s sum diverged at the profile's learning rate)
    losses = torch.tensor([1.0, 2.0, 6.0])
    assert get_method("sdn-ge").combine(losses, None).item() == 3.0
