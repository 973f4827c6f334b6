"""Backbones from torchvision behind our Backbone interface: split faithfully, stopping at the
exit, fitted to the data, frozen exactly, with torchvision's own weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mexlib.config import make_config
from mexlib.models import arch_spec
from mexlib.models.library import (FAMILIES, TorchvisionBackbone, build_torchvision, family_of,
                                   fit_input_and_output)
from mexlib.train import build_model

torchvision = pytest.importorskip("torchvision")

#: One small model of every family the split supports (ResNeXt and Wide ResNet share the ResNet code).
BUILDERS = ["resnet18", "regnet_x_400mf", "vgg11", "mobilenet_v2", "mobilenet_v3_small",
            "efficientnet_b0", "convnext_tiny"]


@pytest.mark.parametrize("builder", BUILDERS)
def test_the_split_computes_what_the_model_computes(builder):
    torch.manual_seed(0)
    model = fit_input_and_output(torchvision.models.get_model(builder, weights=None), 1, 10).eval()
    backbone = TorchvisionBackbone(model, family_of(builder), 1, 64).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x), model(x), atol=1e-5, rtol=1e-4)
    assert backbone.num_blocks == len(backbone.feature_info) >= 4
    assert all(info.layout == "conv" for info in backbone.feature_info)
    assert backbone.feature_info[-1].reduction >= backbone.feature_info[0].reduction


def test_a_vision_transformer_splits_into_its_encoder_layers_with_the_class_token_first():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()
    backbone = TorchvisionBackbone(model, "vit", 3, 32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(x), model(x), atol=1e-5)
    assert [(i.channels, i.reduction, i.layout) for i in backbone.feature_info] == [(32, 8, "tokens")] * 3
    assert arch_spec("torchvision:vit_b_16").layout == "tokens"


def test_inference_stops_at_the_exit():
    config = make_config("smoke", arch="torchvision:resnet18", exit_after_blocks=(2, 5))
    model = build_model(config).eval()
    ran = []
    for k, block in enumerate(model.backbone.blocks, start=1):
        block.register_forward_hook(lambda module, args, out, k=k: ran.append(k))
    with torch.no_grad():
        outputs = model.forward_until(torch.randn(2, 1, 28, 28), 0)
    assert ran == [1, 2] and len(outputs) == 1  # the first exit sits after block 2: blocks 3-8 never ran
    ran.clear()
    with torch.no_grad():
        model(torch.randn(2, 1, 28, 28))
    assert ran == list(range(1, 9))


def test_models_that_cannot_be_split_and_bad_names_are_refused_by_name():
    for builder in ("googlenet", "densenet121", "swin_t", "inception_v3"):
        with pytest.raises(ValueError, match="supported families") as error:
            arch_spec(f"torchvision:{builder}")
        assert all(family in str(error.value) for family in FAMILIES)
    with pytest.raises(ValueError, match="torchvision:<builder>"):
        arch_spec("torchvision:ResNet 18")
    with pytest.raises(ValueError, match="torchvision has no classification model 'resnet7'"):
        build_torchvision("resnet7", None, 10, 1, 28)


def test_input_channels_and_classes_are_fitted_keeping_pretrained_filters():
    model = torchvision.models.get_model("resnet18", weights=None)
    rgb = model.conv1.weight.detach().clone()
    fitted = fit_input_and_output(model, 1, 7)
    assert torch.equal(fitted.conv1.weight, rgb.sum(1, keepdim=True))
    assert fitted.fc.out_features == 7
    model = torchvision.models.get_model("resnet18", weights=None)
    rgb = model.conv1.weight.detach().clone()
    four = fit_input_and_output(model, 4, 1000)
    assert four.fc.out_features == 1000  # the count it had: the pretrained classifier is kept
    # channel k takes colour k mod 3, scaled by 3/4: the filters' total weight stays about the same
    assert torch.allclose(four.conv1.weight, torch.cat([rgb, rgb[:, :1]], 1) * 3 / 4)


def test_disjoint_training_leaves_the_pretrained_weights_and_statistics_exactly_as_loaded():
    config = make_config("smoke", arch="torchvision:mobilenet_v3_small")
    model = build_model(config)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.set_freeze_mode("heads")
    model.train()
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    for _ in range(3):
        loss = sum(nn.functional.cross_entropy(o, torch.randint(0, 10, (8,))) for o in
                   model(torch.randn(8, 1, 28, 28))[:-1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.backbone.state_dict()
    assert any(k.endswith("running_mean") for k in before)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_weights_load_through_torchvisions_own_code_from_its_cache(tmp_path, monkeypatch):
    """``torchvision:resnet18:IMAGENET1K_V1`` reads the weights file torchvision would have
    downloaded, from its cache (written here: no network)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(1)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(saved, cache / weights.url.rsplit("/", 1)[1])
    backbone = arch_spec("torchvision:resnet18:IMAGENET1K_V1").build(10, 1, 28)
    assert torch.equal(backbone.stem[0].weight, saved["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(backbone.blocks[3].conv1.weight, saved["layer2.1.conv1.weight"])


def test_flops_per_exit_are_the_blocks_run_and_the_heads_counted_by_torch():
    """Exit k costs the stem, the blocks up to it and every head on the way, as torch's counter
    counts each module alone; the split backbone costs what torchvision's whole model does."""
    from torch.utils.flop_counter import FlopCounterMode

    from mexlib import evaluate

    def count(run) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run()
        return counter.get_total_flops()

    torch.manual_seed(0)
    model = build_model(make_config("smoke", arch="torchvision:resnet18", exit_after_blocks=(2, 4, 6))).eval()
    costs = evaluate.exit_costs(model, (1, 28, 28))
    x = torch.zeros(1, 1, 28, 28)
    original = fit_input_and_output(torchvision.models.resnet18(weights=None), 1, 10).eval()
    assert costs.backbone_flops == count(lambda: original(x)) > 0
    with torch.no_grad():
        state, total, expected = model.backbone.stem(x), count(lambda: model.backbone.stem(x)), []
        for number, block in enumerate(model.backbone.blocks, start=1):
            total += count(lambda: block(state))
            state = block(state)
            if number in model.exit_after_blocks:
                head = model.heads[model.exit_after_blocks.index(number)]
                total += count(lambda: head(state))
                expected.append(total)
        expected.append(total + count(lambda: model.backbone.classifier(state)))
    assert costs.flops_per_exit == expected
