"""Optimiser parameter groups: no decay on norms and biases, discriminative learning rates."""

from __future__ import annotations

import pytest
import torch

from prep.engine.optim import OPTIMIZERS, build_optimizer, parameter_groups
from prep.errors import UsageError


def model_with_head():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    head = torch.nn.Linear(8, 2)
    return torch.nn.Sequential(backbone, head), head


def test_norms_and_biases_get_no_weight_decay_and_the_head_a_higher_lr():
    model, head = model_with_head()
    groups = {g["name"]: g for g in parameter_groups(model, lr=0.01, weight_decay=0.05, head=head, backbone_lr_scale=0.1)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert [p.shape for p in groups["backbone"]["params"]] == [torch.Size([8, 3, 3, 3])]
    assert len(groups["backbone_no_decay"]["params"]) == 3  # conv bias, bn weight, bn bias
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.05
    assert groups["head"]["lr"] == 0.01 and groups["backbone"]["lr"] == pytest.approx(0.001)
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_frozen_parameters_are_left_out_and_no_head_means_one_lr():
    model, head = model_with_head()
    for p in model[0].parameters():
        p.requires_grad = False
    groups = parameter_groups(model, lr=0.1, weight_decay=0.0)
    assert {g["name"] for g in groups} == {"head", "head_no_decay"}
    assert all(g["lr"] == 0.1 for g in groups)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps_with_its_groups(name):
    model, head = model_with_head()
    optimizer = build_optimizer(name, parameter_groups(model, lr=0.01, weight_decay=0.01, head=head, backbone_lr_scale=0.5), lr=0.01)
    before = head.weight.detach().clone()
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    optimizer.step()
    assert not torch.equal(before, head.weight)
    assert sorted(g["lr"] for g in optimizer.param_groups) == [0.005, 0.005, 0.01, 0.01]


def test_unknown_optimizer_is_a_usage_error():
    model, _ = model_with_head()
    with pytest.raises(UsageError, match="--optimizer"):
        build_optimizer("lion", parameter_groups(model, lr=0.1, weight_decay=0.0), lr=0.1)
