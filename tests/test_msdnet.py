"""MSDNet (mexlib.models.msdnet): shapes of every block and exit, the training phases, FLOPs
per exit, gradient scaling on lists of scales, and the configuration's head validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mexlib.config import make_config
from mexlib.evaluate import exit_costs
from mexlib.kernel_check import synthetic_data
from mexlib.methods import METHODS, get_method
from mexlib.models import HEAD_KINDS, MultiExitModel, arch_spec, default_head_kind
from mexlib.models.msdnet import MSDClassifier, MSDNet, scale_schedule
from mexlib.models.multi_exit import scale_gradient
from mexlib.train import DeviceData, build_model, train_phase

CPU = torch.device("cpu")
# (architecture, input channels, image size, classes): the cpu profile's Fashion-MNIST and
# the paper profile's CIFAR-100
CASES = [("msdnet-smoke", 1, 28, 10), ("msdnet-cpu", 1, 28, 10), ("msdnet-cifar", 3, 32, 100)]


def _model(arch, channels=1, size=28, classes=10):
    backbone = arch_spec(arch).build(classes, channels, size)
    return MultiExitModel(backbone, tuple(range(1, backbone.num_blocks)), "msd", classes)


def _check_scales(scales, size, width_factors, batch):
    """A list of maps, finest first, of the coarsest ``len(scales)`` scales: each half the
    size of the one before (rounded up, as strided convs do) and as wide as its width factor
    says relative to the others."""
    first = len(width_factors) - len(scales)
    base = scales[-1].shape[1] // width_factors[-1]
    for s, x in enumerate(scales, start=first):
        side = size
        for _ in range(s):
            side = math.ceil(side / 2)
        assert x.shape == (batch, base * width_factors[s], side, side)


@pytest.mark.parametrize("arch,channels,size,classes", CASES)
def test_every_block_and_exit_has_the_described_shape(arch, channels, size, classes):
    model = _model(arch, channels, size, classes).eval()
    backbone, settings = model.backbone, arch_spec(arch).settings
    factors = settings["width_factors"]
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        h = backbone.stem(x)
        assert len(h) == len(factors)
        _check_scales(h, size, factors, 2)
        for block, info in zip(backbone.blocks, backbone.feature_info):
            previous = len(h)
            h = block(h)
            assert isinstance(h, list) and 1 <= len(h) <= previous  # scales are only ever dropped
            _check_scales(h, size, factors, 2)
            assert info.layout == "multiscale" and info.head_width == settings["classifier_width"]
            assert h[-1].shape[1] == info.channels  # feature_info describes the coarsest scale
            assert h[-1].shape[-1] == math.ceil(size / info.reduction)
        outputs = model(x)
        final = model.backbone_only(x)
    assert len(outputs) == model.num_exits == backbone.num_blocks == arch_spec(arch).num_blocks
    assert all(out.shape == (2, classes) for out in outputs)
    torch.testing.assert_close(outputs[-1], final)
    for head in list(model.heads) + [backbone.classifier]:
        assert isinstance(head, MSDClassifier) and head.fc.in_features == settings["classifier_width"]


def test_the_scale_schedule_drops_the_finest_scale_once_per_run_of_layers():
    for layers, scales in [(16, 3), (6, 3), (4, 3), (2, 3), (7, 4)]:
        schedule = scale_schedule(layers, scales)
        run = math.ceil(layers / scales)
        assert schedule[0][0] == scales
        assert all(schedule[n][0] == schedule[n - 1][1] for n in range(1, layers))
        drops = [n for n, (a, b) in enumerate(schedule, start=1) if b < a]
        assert drops == [n for n in range(1, layers + 1) if n > run and (n - 1) % run == 0]
        assert all(a - b in (0, 1) and b >= 1 for a, b in schedule)


def test_the_paper_variant_has_msdnets_cifar_structure():
    """MSDNet's CIFAR-100 anytime setting: 3 scales, 4 + 2·6 layers, the finest scale dropped
    after each third of the layers with a compressing transition, classifiers of width 128."""
    spec = arch_spec("msdnet-cifar")
    backbone = spec.build(100, 3, 32)
    layers = sum(spec.settings["layers_per_block"])
    kinds = [type(m).__name__ for block in backbone.blocks for m in block]
    assert kinds.count("MSDLayer") == layers
    drops = sum(b < a for a, b in scale_schedule(layers, len(spec.settings["width_factors"])))
    assert kinds.count("Transition") == drops == len(spec.settings["width_factors"]) - 1
    assert backbone.scales_after_block[-1] == 1


@pytest.mark.parametrize("layers", [(1, 1, 1, 1), (2, 1, 1, 1), (4, 2, 2)])
def test_every_backbone_parameter_learns_from_the_final_exit(layers):
    """No layer computes what no classifier reads (the last layer keeps only the coarsest
    scale, whatever the schedule), so every weight gets a gradient."""
    backbone = MSDNet(layers, 4, 4, 10, in_channels=1, classifier_width=8)
    backbone(torch.randn(2, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None for p in backbone.parameters())


# --- training phases -------------------------------------------------------------------------

def _config(**overrides):
    return make_config("smoke", arch="msdnet-smoke", train_size=32, val_size=10, test_size=10,
                       batch_size=32, epochs=1, **overrides)


@pytest.fixture(scope="module")
def data():
    return DeviceData.from_dataset(_config(), synthetic_data("fashion-mnist"), CPU)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, after, prefix=""):
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_each_phase_takes_a_step_and_trains_only_its_parameters(data):
    config = _config(regime="disjoint")
    method = get_method(config.method)
    model = build_model(config)
    head_calls = []
    for head in model.heads:
        head.register_forward_hook(lambda *_: head_calls.append(1))
    states = [_snapshot(model)]
    for phase in ("backbone", "heads", "joint"):
        result = train_phase(model, phase, config.phase(phase), data, method, CPU, progress=False)
        assert len(result.history) == 1 and all(math.isfinite(v) for v in result.history[0]["train_loss"])
        states.append(_snapshot(model))
        if phase == "backbone":
            # phase 1: the backbone with its final classifier; the heads are never run
            assert not head_calls
    (start, after_backbone, after_heads, after_joint) = states
    assert _changed(start, after_backbone, "backbone.classifier.")
    assert _changed(start, after_backbone) == _changed(start, after_backbone, "backbone.")
    # the heads phase leaves every backbone parameter and BatchNorm buffer as it was
    assert not _changed(after_backbone, after_heads, "backbone.")
    heads_changed = _changed(after_backbone, after_heads, "heads.")
    assert any(k.endswith("weight") for k in heads_changed)
    assert any(k.endswith("running_mean") for k in heads_changed)  # the heads' own BN learns
    assert _changed(after_heads, after_joint, "backbone.") and _changed(after_heads, after_joint, "heads.")


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_takes_a_joint_step_on_msdnet(method, data):
    config = _config(method=method, regime="joint")
    model = build_model(config)
    before = _snapshot(model)
    result = train_phase(model, "joint", config.joint_phase, data, get_method(method), CPU, progress=False)
    assert all(math.isfinite(v) for v in result.history[0]["train_loss"])
    assert _changed(before, _snapshot(model), "backbone.blocks.")


# --- gradient scaling ------------------------------------------------------------------------

def test_scale_gradient_scales_every_tensor_of_a_list():
    xs = [torch.randn(2, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    scaled = scale_gradient(xs, 0.25)
    assert isinstance(scaled, list) and all(torch.equal(a, b) for a, b in zip(scaled, xs))
    sum(t.sum() for t in scaled).backward()
    assert all(torch.equal(x.grad, torch.full_like(x, 0.25)) for x in xs)
    assert scale_gradient(xs, 1) is xs


def _stem_gradients(model, x, y, exits):
    """The stem's gradients of the sum of the cross-entropies of ``exits``."""
    model.zero_grad(set_to_none=True)
    logits = model.forward_context(x, outputs=False).logits
    sum(F.cross_entropy(logits[k], y) for k in exits).backward()
    return [p.grad.clone() for p in model.backbone.stem.parameters()]


@pytest.mark.parametrize("to_head,to_trunk", [(1.0, 0.0), (0.0, 1.0)])
def test_branch_points_rescale_the_gradient_of_every_scale(to_head, to_trunk):
    """With the later blocks' gradient cut at every branch point (1, 0), the stem learns from
    the first head alone; with the heads' cut (0, 1), from the final exit alone. Either fails
    if any scale of the list bypasses the rescaling."""
    torch.manual_seed(0)
    plain = _model("msdnet-smoke").train()
    scaled = copy.deepcopy(plain)
    scaled.gradient_scales = [(to_head, to_trunk)] * len(scaled.heads)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    got = _stem_gradients(scaled, x, y, range(scaled.num_exits))
    alone = [0] if to_trunk == 0 else [plain.num_exits - 1]
    expected = _stem_gradients(plain, x, y, alone)
    everything = _stem_gradients(plain, x, y, range(plain.num_exits))
    for g, e, a in zip(got, expected, everything):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(e, a, rtol=1e-3, atol=1e-6) for e, a in zip(expected, everything))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in scaled.heads[0].parameters())


def test_gradient_equilibrium_trains_msdnet(data):
    config = _config(method="sdn-ge", regime="joint")
    model = build_model(config)
    assert model.gradient_scales == get_method("sdn-ge").gradient_scales(model.num_exits)
    before = _snapshot(model)
    result = train_phase(model, "joint", config.joint_phase, data, get_method("sdn-ge"), CPU, progress=False)
    assert all(math.isfinite(v) for v in result.history[0]["train_loss"])
    assert _changed(before, _snapshot(model), "backbone.stem.")


# --- FLOPs per exit --------------------------------------------------------------------------

def _count_by_shapes(model, run):
    """2 × the multiply-adds of every convolution and linear layer that runs, from the shapes
    of their weights and outputs, and the names of those layers: a count independent of
    torch.utils.flop_counter."""
    flops, ran = [0], set()
    names = {m: n for n, m in model.named_modules()}

    def hook(module, args, out):
        ran.add(names[module])
        if isinstance(module, nn.Conv2d):
            flops[0] += 2 * out.numel() * module.weight[0].numel()
        else:
            flops[0] += 2 * out.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return flops[0], ran


@pytest.mark.parametrize("arch", ["msdnet-smoke", "msdnet-cpu"])
def test_exit_costs_count_exactly_the_modules_each_exit_runs(arch):
    model = _model(arch).eval()
    costs = exit_costs(model, (1, 28, 28))
    x = torch.zeros(1, 1, 28, 28)
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for k in range(model.num_exits):
        last = k == model.num_exits - 1
        last_block = model.backbone.num_blocks if last else model.exit_after_blocks[k]
        parts = (["backbone.stem."] + [f"backbone.blocks.{b}." for b in range(last_block)]
                 + [f"heads.{j}." for j in range(min(k + 1, len(model.heads)))]
                 + (["backbone.classifier."] if last else []))
        flops, ran = _count_by_shapes(model, lambda: model.forward_until(x, k))
        assert ran == {n for n in layers if n.startswith(tuple(parts))}
        assert costs.flops_per_exit[k] == flops
    backbone, ran = _count_by_shapes(model, lambda: model.backbone_only(x))
    assert costs.backbone_flops == backbone and not any(n.startswith("heads.") for n in ran)
    heads = sum(_count_by_shapes(head, lambda h=head, b=b: h(_block_output(model, x, b)))[0]
                for head, b in zip(model.heads, model.exit_after_blocks))
    assert costs.flops_per_exit[-1] - heads == costs.backbone_flops
    assert costs.relative[-1] > 1 and bool((costs.relative[1:] > costs.relative[:-1]).all())


def _block_output(model, x, block):
    h = model.backbone.stem(x)
    for b in model.backbone.blocks[:block]:
        h = b(h)
    return h


# --- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["msdnet-smoke", "msdnet-cpu", "msdnet-cifar"])
def test_configuration_defaults_to_msdnet_classifiers_and_refuses_other_heads(arch):
    layout = arch_spec(arch).layout
    valid = [kind for kind, (needs, _) in HEAD_KINDS.items() if needs == layout]
    config = make_config("smoke", arch=arch)
    assert config.head == default_head_kind(layout) == "msd" and valid == ["msd"]
    assert config.exit_after_blocks == tuple(range(1, arch_spec(arch).num_blocks))
    for head in [kind for kind in HEAD_KINDS if kind not in valid]:
        with pytest.raises(ValueError, match=f"head '{head}' needs .* valid heads here: {', '.join(valid)}$"):
            make_config("smoke", arch=arch, head=head)
    with pytest.raises(ValueError, match="valid heads here: pool, conv1, conv2$"):
        make_config("smoke", arch="resnet-smoke", head="msd")


def test_paper_profile_puts_an_msdnet_classifier_after_every_block():
    config = make_config("paper", arch="msdnet-cifar")
    assert config.dataset == "cifar100" and config.head == "msd"
    assert config.exit_after_blocks == tuple(range(1, arch_spec("msdnet-cifar").num_blocks))
