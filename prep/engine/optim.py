"""Optimisers with the parameter groups fine-tuning wants.

Weight decay is applied to weights only: biases and normalisation parameters (every
tensor of one dimension) are exempt, as decaying them only hurts. A ``head`` module gets
the base learning rate and everything else (the pretrained backbone) a fraction of it:
discriminative learning rates, as in fastai's fine-tuning.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from prep.errors import check_choice

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def parameter_groups(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float,
    head: torch.nn.Module | None = None,
    backbone_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Split trainable parameters into (backbone|head) x (decay|no decay) groups.

    Args:
        model: the whole model.
        lr: the head's learning rate (and everything's when there is no head).
        weight_decay: applied to parameters with two or more dimensions only.
        head: the freshly initialised part of the model, if any.
        backbone_lr_scale: the backbone's learning rate as a fraction of ``lr``.

    Returns:
        Non-empty groups, each with ``name``, ``params``, ``lr`` and ``weight_decay``.
    """
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    groups: dict[str, dict[str, Any]] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        part = "head" if id(param) in head_ids or head is None else "backbone"
        decay = param.ndim > 1
        name = f"{part}{'' if decay else '_no_decay'}"
        group = groups.setdefault(name, {
            "name": name, "params": [],
            "lr": lr if part == "head" else lr * backbone_lr_scale,
            "weight_decay": weight_decay if decay else 0.0,
        })
        group["params"].append(param)
    return list(groups.values())


def check_optimizer(name: str) -> str:
    """``name`` when it is one of ``OPTIMIZERS`` (else a ``UsageError``)."""
    return check_choice("--optimizer", name, OPTIMIZERS)


def build_optimizer(name: str, groups: Iterable[dict[str, Any]], *, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """One of ``sgd`` (with momentum), ``adam``, ``adamw``, ``rmsprop`` over ``groups``.

    Raises:
        UsageError: an unknown optimiser name.
    """
    groups = list(groups)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    check_optimizer(name)
    raise AssertionError(f"optimizer {name!r} is listed but not built")
