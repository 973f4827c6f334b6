"""Backbones, heads and the multi-exit wrapper."""

from __future__ import annotations

import pytest
import torch

from mexlib.config import make_config
from mexlib.models import ARCHITECTURES, MultiExitModel, arch_spec, build_head
from mexlib.models.backbones import FeatureInfo
from mexlib.train import build_model


def _model(arch="resnet-smoke", exits=(1, 2), head="pool", classes=10, channels=1, size=28):
    backbone = arch_spec(arch).build(classes, channels, size)
    return MultiExitModel(backbone, exits, head, classes)


@pytest.mark.parametrize("arch", ["resnet-smoke", "resnet-cpu", "vit-smoke"])
def test_feature_info_describes_block_outputs(arch):
    backbone = arch_spec(arch).build(10, 1, 28)
    x = torch.randn(2, 1, 28, 28)
    h = backbone.stem(x)
    for block, info in zip(backbone.blocks, backbone.feature_info):
        h = block(h)
        if info.layout == "conv":
            assert h.shape[1] == info.channels
            assert h.shape[-1] == -(-28 // info.reduction)
        else:
            assert h.shape[-1] == info.channels
            assert h.shape[1] == 1 + (28 // info.reduction) ** 2


@pytest.mark.parametrize("arch,head", [("resnet-cpu", "pool"), ("resnet-cpu", "conv1"),
                                       ("resnet-cpu", "conv2"), ("vit-smoke", "token")])
def test_forward_until_matches_full_forward_and_stops_early(arch, head):
    num_blocks = arch_spec(arch).num_blocks
    exits = tuple(range(1, num_blocks))
    model = _model(arch, exits, head).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        full = model(x)
    assert len(full) == model.num_exits == len(exits) + 1
    assert all(out.shape == (3, 10) for out in full)
    torch.testing.assert_close(full[-1], model.backbone_only(x))
    calls = []
    for number, block in enumerate(model.backbone.blocks, start=1):
        block.register_forward_hook(lambda *_, n=number: calls.append(n))
    for k in range(model.num_exits):
        calls.clear()
        with torch.no_grad():
            part = model.forward_until(x, k)
        assert len(part) == k + 1
        for a, b in zip(part, full):
            torch.testing.assert_close(a, b)
        last = exits[k] if k < len(exits) else num_blocks
        assert calls == list(range(1, last + 1))
    with pytest.raises(ValueError, match="exit index"):
        model.forward_until(x, model.num_exits)


def test_pooled_head_mixes_max_and_average_pooling():
    head = build_head("pool", FeatureInfo(2, 1, "conv"), 3)
    x = torch.randn(4, 2, 8, 8)
    with torch.no_grad():
        head.alpha.fill_(1.0)
        only_max = head(x)
        head.alpha.fill_(0.0)
        only_avg = head(x)
    torch.testing.assert_close(only_max, head.fc(torch.nn.functional.max_pool2d(x, 2).flatten(1)))
    torch.testing.assert_close(only_avg, head.fc(torch.nn.functional.avg_pool2d(x, 2).flatten(1)))
    assert head.alpha.requires_grad


def test_bad_placement_and_head_kind_raise():
    with pytest.raises(ValueError, match="1..2"):
        _model("resnet-smoke", (1, 3))
    with pytest.raises(ValueError, match="increasing"):
        _model("resnet-smoke", (2, 1))
    with pytest.raises(ValueError, match="valid heads here: token"):
        _model("vit-smoke", (1,), "pool")
    with pytest.raises(ValueError, match="valid heads: pool, conv1, conv2, token"):
        _model("resnet-smoke", (1,), "mlp")
    with pytest.raises(ValueError, match="valid architectures"):
        arch_spec("resnet1000")


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _one_step(model, x, y):
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    model.train()
    loss = sum(torch.nn.functional.cross_entropy(o, y) for o in model(x))
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_heads_mode_freezes_backbone_and_its_batchnorm_statistics():
    model = _model("resnet-smoke", (1, 2), "conv1")
    model.set_freeze_mode("heads")
    model.train()  # must not put the frozen backbone back into training mode
    assert not model.backbone.training and model.heads.training
    assert all(not p.requires_grad for p in model.backbone.parameters())
    backbone, heads = _snapshot(model.backbone), _snapshot(model.heads)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    _one_step(model, x, y)
    after = _snapshot(model.backbone)
    assert all(torch.equal(backbone[k], after[k]) for k in backbone)  # weights and BN buffers
    changed_heads = _snapshot(model.heads)
    assert any(not torch.equal(heads[k], changed_heads[k]) for k in heads)
    # The heads' own BatchNorm (conv1 head) still learns its statistics.
    assert not torch.equal(heads["0.convs.1.running_mean"], changed_heads["0.convs.1.running_mean"])
    model.set_freeze_mode("all")
    model.train()
    assert model.backbone.training and all(p.requires_grad for p in model.parameters())


def test_backbone_mode_trains_no_head():
    model = _model()
    model.set_freeze_mode("backbone")
    assert all(not p.requires_grad for p in model.heads.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())
    with pytest.raises(ValueError, match="valid modes: backbone, all, heads"):
        model.set_freeze_mode("ics")


@pytest.mark.parametrize("arch,exits", [("resnet34", (5, 7, 9, 11, 13, 15)),
                                        ("resnet50", (5, 7, 9, 11, 13, 15)),
                                        ("vit-t", (4, 6, 8, 10))])
def test_paper_models_build_and_take_a_training_step(arch, exits):
    config = make_config("paper", arch=arch)
    assert config.exit_after_blocks == exits and config.dataset == "cifar100"
    model = build_model(config)
    assert model.num_exits == len(exits) + 1
    x = torch.randn(2, 3, 32, 32)  # NCHW: the trainer's layout on the CPU (mexlib.hardware)
    y = torch.tensor([3, 97])
    before = _snapshot(model)
    _one_step(model, x, y)
    after = _snapshot(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(o.shape == (2, 100) for o in model(x))


def test_registry_depths_match_built_models():
    for name, spec in ARCHITECTURES.items():
        if name in ("vit-b", "resnet50", "resnet34", "vit-s"):
            continue  # large; their depth is checked by the paper-model test
        assert spec.build(10, 3, 32).num_blocks == spec.num_blocks
