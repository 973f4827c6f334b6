"""The paper's Table 1 settings: each runnable one builds, counts its FLOPs per exit and takes
one step of each phase on the CPU; the paper's numbers are found for its configurations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mexlib import evaluate
from mexlib.config import make_config
from mexlib.data import dataset_spec
from mexlib.methods import get_method
from mexlib.settings import SETTINGS, get_setting, setting_for, setting_config
from mexlib.train import build_model, step_rule

def test_every_table_1_row_is_a_setting_with_the_papers_numbers():
    assert len(SETTINGS) == 7 and {"resnet34-cifar100", "resnet50-tiny-imagenet", "vit-s-imagenet",
                                   "bert-base-20newsgroups"} <= set(SETTINGS)
    for setting in SETTINGS.values():
        assert set(setting.paper) == {"disjoint", "joint", "mixed"}
        assert all(50 < v < 100 for v in setting.paper.values())
    with pytest.raises(ValueError, match="valid settings: resnet34-cifar100"):
        get_setting("resnet18-mnist")
    assert setting_config("vit-s-imagenet").dataset == "imagenet"


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_setting_builds_counts_its_exits_and_trains_each_phase(name):
    # BERT-Base comes from the Hugging Face hub, out of reach offline: its setting runs here with the
    # smoke encoder in its place (the same family and code; tests/test_encoders.py checks the split)
    text = dataset_spec(get_setting(name).overrides["dataset"]).modality == "text"
    config = setting_config(name, seed=0, **({"arch": "bert-smoke"} if text else {}))
    spec = dataset_spec(config.dataset)
    model = build_model(config)
    costs = evaluate.exit_costs(model, spec.input_shape)
    assert len(costs.flops_per_exit) == len(config.exit_after_blocks) + 1
    assert all(a < b for a, b in zip(costs.flops_per_exit, costs.flops_per_exit[1:]))
    x = model.backbone.example_input(spec.input_shape, 2, random=True)
    y = torch.tensor([0, spec.num_classes - 1])
    method = get_method(config.method)
    for phase, mode in (("backbone", "backbone"), ("joint", "all"), ("heads", "heads")):
        model.set_freeze_mode(mode).train()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.01)
        if phase == "backbone":
            loss = F.cross_entropy(model.backbone_only(x), y)
        else:
            loss, _ = step_rule(model, phase, method, 1, 1).loss(model, x, y, torch.autocast("cpu", enabled=False), 0.01)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert any(n.startswith("backbone.") for n in moved) == (phase != "heads"), phase
        assert any(n.startswith("heads.") for n in moved) == (phase != "backbone"), phase


def test_the_setting_of_a_configuration_is_found_in_the_paper_profile_only():
    assert setting_for(setting_config("vit-t-cifar100")).name == "vit-t-cifar100"
    assert setting_for(setting_config("vit-s-imagenet")).name == "vit-s-imagenet"
    assert setting_for(make_config("paper")).name == "resnet34-cifar100"  # the profile's default
    assert setting_for(make_config("cpu")) is None
    assert setting_for(make_config("paper", arch="resnet18")) is None
