"""``--tta flip``: a model's outputs averaged with those for the mirror images.

``FlipAveraged`` wraps any model of prep's tasks, so that evaluation and prediction need
no change: probabilities are averaged (softmax over classes, or the sigmoid of a single
logit; the sigmoid of each output for a task whose ``scores`` are ``"sigmoid"``, multi-label),
spatial outputs are mirrored back first, and the average is returned as logits again (its
logarithm, or the logit of sigmoid probabilities), which losses, metrics and argmax take as
they take the model's.
"""

from __future__ import annotations

from typing import Any

import torch

TTA_MODES = ("none", "flip")


def check_tta(mode: str) -> str:
    """``mode`` when it is one of ``TTA_MODES`` (else a ``UsageError``)."""
    from prep.errors import check_choice

    return check_choice("--tta", mode, TTA_MODES)


class FlipAveraged(torch.nn.Module):
    """``model`` whose outputs are averaged with those for the horizontally mirrored input
    (each output's sigmoid with ``sigmoid``, else their softmax)."""

    def __init__(self, model: torch.nn.Module, sigmoid: bool = False) -> None:
        super().__init__()
        self.model, self.sigmoid = model, sigmoid

    def forward(self, images: torch.Tensor) -> Any:
        return _average(self.model(images), self.model(images.flip(-1)), self.sigmoid)


def with_tta(model: torch.nn.Module, mode: str, scores: str = "softmax") -> torch.nn.Module:
    """``model``, wrapped for ``mode`` (``none`` leaves it as it is); ``scores`` is the task's
    (``softmax`` or ``sigmoid``, see ``prep.engine.task.Task``)."""
    return FlipAveraged(model, sigmoid=scores == "sigmoid") if check_tta(mode) == "flip" else model


def _average(plain: Any, mirrored: Any, sigmoid: bool = False) -> Any:
    if isinstance(plain, dict):  # torchvision's segmentation models: {"out": ..., "aux": ...}
        return {key: _average(plain[key], mirrored[key], sigmoid) for key in plain}
    plain, mirrored = plain.float(), mirrored.float()
    if plain.ndim == 4:  # N x K x H x W: mirror the map back onto the image
        mirrored = mirrored.flip(-1)
    if sigmoid or plain.shape[1] == 1:  # independent outputs (or one logit: the foreground's probability)
        p = (torch.sigmoid(plain) + torch.sigmoid(mirrored)) / 2
        return torch.logit(p, eps=1e-7)
    p = (plain.softmax(dim=1) + mirrored.softmax(dim=1)) / 2
    return p.clamp_min(1e-12).log()
