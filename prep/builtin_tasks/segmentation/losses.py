"""Segmentation losses, and ``--loss`` specs that combine them.

A spec is a sum of terms, each with an optional weight: ``dice+bce``, ``0.5*dice+focal``,
``tversky``. The terms:

* ``ce`` (also written ``bce``): cross-entropy; binary cross-entropy on one logit for a
  binary model, softmax cross-entropy for a multiclass one; class weights weigh its pixels.
* ``dice``: 1 - soft Dice, over the whole batch; binary: of the foreground; multiclass:
  the mean over classes (weighted by the class weights).
* ``focal``: focal loss with gamma 2: cross-entropy scaled by (1 - p_true)^2, so that the
  many easy background pixels stop drowning out the rare hard ones.
* ``tversky``: 1 - Tversky index with alpha 0.3 (false positives) and beta 0.7 (false
  negatives): Dice that leans towards recall, for small classes.

Defaults: ``dice+bce`` for binary models, ``dice+ce`` for multiclass ones. Pixels marked
ignore (``IGNORE_INDEX``) count for nothing. Dice and Tversky add 1 to numerator and
denominator, so that an empty prediction on an empty mask is perfect (loss 0) instead of
0/0. Models that return a dict (torchvision's) are scored on ``out``, plus half the loss of
``aux`` when present. Logits are taken in float32, also under mixed precision.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from prep.errors import UsageError
from prep.masks.read import IGNORE_INDEX

TERMS = ("dice", "ce", "bce", "focal", "tversky")
DEFAULT_BINARY = "dice+bce"
DEFAULT_MULTICLASS = "dice+ce"
AUX_WEIGHT = 0.5
SMOOTH = 1.0
FOCAL_GAMMA = 2.0
TVERSKY_ALPHA, TVERSKY_BETA = 0.3, 0.7

_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z]+)\s*$")


def parse_loss(spec: str) -> list[tuple[float, str]]:
    """``"0.5*dice+bce"`` -> ``[(0.5, "dice"), (1.0, "ce")]``.

    Raises:
        UsageError: an unknown term or a malformed weight.
    """
    terms = []
    for part in spec.split("+"):
        match = _TERM.match(part.lower())
        if not match or match.group(2) not in TERMS:
            raise UsageError(
                f"--loss {spec!r}: {part.strip()!r} is not a loss term; use {', '.join(TERMS)}, "
                f"optionally weighted and summed, as in 0.5*dice+bce"
            )
        weight = float(match.group(1)) if match.group(1) else 1.0
        terms.append((weight, "ce" if match.group(2) == "bce" else match.group(2)))
    return terms


def _mean_over(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (values * valid).sum() / valid.sum().clamp(min=1)


class SegmentationLoss:
    """A weighted sum of terms (see the module docstring); a plain object, so that DDP and
    pickling take it.

    Args:
        spec: the ``--loss`` spec; ``None`` for the default of the model's output.
        class_weights: one weight per class, or ``None``.
    """

    def __init__(self, spec: str | None = None, class_weights: Sequence[float] | None = None) -> None:
        self.spec = spec
        self.terms = parse_loss(spec) if spec else None
        self.class_weights = list(class_weights) if class_weights else None

    def __call__(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, dict):
            loss = self.single(outputs["out"], targets)
            if outputs.get("aux") is not None:
                loss = loss + AUX_WEIGHT * self.single(outputs["aux"], targets)
            return loss
        return self.single(outputs, targets)

    def single(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[-2:] != targets.shape[-2:]:
            logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        binary = logits.shape[1] == 1
        terms = self.terms or parse_loss(DEFAULT_BINARY if binary else DEFAULT_MULTICLASS)
        weights = None
        if self.class_weights is not None:
            expected = 2 if binary else logits.shape[1]
            if len(self.class_weights) != expected:
                raise UsageError(f"--class-weights gives {len(self.class_weights)} weights for {expected} classes")
            weights = torch.tensor(self.class_weights, device=logits.device, dtype=torch.float32)
        valid = targets != IGNORE_INDEX
        safe = torch.where(valid, targets, torch.zeros_like(targets))
        parts = _binary_parts(logits[:, 0], safe, valid, weights) if binary else _multiclass_parts(logits, safe, valid, weights)
        return sum(weight * parts[name]() for weight, name in terms)


def _binary_parts(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None):
    truth = targets.float()
    mask = valid.float()
    probs = torch.sigmoid(logits) * mask

    def bce() -> torch.Tensor:
        per_pixel = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
        if weights is not None:
            per_pixel = per_pixel * weights[targets]
        return per_pixel

    def overlap() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = truth * mask
        tp = (probs * t).sum()
        return tp, probs.sum() - tp, t.sum() - tp

    def dice() -> torch.Tensor:
        tp, fp, fn = overlap()
        return 1 - (2 * tp + SMOOTH) / (2 * tp + fp + fn + SMOOTH)

    def tversky() -> torch.Tensor:
        tp, fp, fn = overlap()
        return 1 - (tp + SMOOTH) / (tp + TVERSKY_ALPHA * fp + TVERSKY_BETA * fn + SMOOTH)

    def focal() -> torch.Tensor:
        per_pixel = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
        p_true = torch.exp(-per_pixel)
        scaled = (1 - p_true) ** FOCAL_GAMMA * per_pixel
        if weights is not None:
            scaled = scaled * weights[targets]
        return _mean_over(scaled, mask)

    return {"ce": lambda: _mean_over(bce(), mask), "dice": dice, "tversky": tversky, "focal": focal}


def _multiclass_parts(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None):
    classes = logits.shape[1]
    mask = valid.float()

    def per_pixel_ce() -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction="none")

    def ce() -> torch.Tensor:
        per_pixel = per_pixel_ce()
        if weights is None:
            return _mean_over(per_pixel, mask)
        # As torch's weighted cross-entropy: a mean weighted by each pixel's class weight.
        pixel_weights = weights[targets] * mask
        return (per_pixel * pixel_weights).sum() / pixel_weights.sum().clamp(min=1e-12)

    def overlap() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probs = logits.softmax(dim=1) * mask.unsqueeze(1)
        truth = F.one_hot(targets, classes).permute(0, 3, 1, 2).float() * mask.unsqueeze(1)
        dims = (0, 2, 3)
        tp = (probs * truth).sum(dims)
        return tp, probs.sum(dims) - tp, truth.sum(dims) - tp

    def class_mean(scores: torch.Tensor) -> torch.Tensor:
        if weights is None:
            return scores.mean()
        return (scores * weights).sum() / weights.sum()

    def dice() -> torch.Tensor:
        tp, fp, fn = overlap()
        return 1 - class_mean((2 * tp + SMOOTH) / (2 * tp + fp + fn + SMOOTH))

    def tversky() -> torch.Tensor:
        tp, fp, fn = overlap()
        return 1 - class_mean((tp + SMOOTH) / (tp + TVERSKY_ALPHA * fp + TVERSKY_BETA * fn + SMOOTH))

    def focal() -> torch.Tensor:
        per_pixel = per_pixel_ce()
        scaled = (1 - torch.exp(-per_pixel)) ** FOCAL_GAMMA * per_pixel
        if weights is not None:
            scaled = scaled * weights[targets]
        return _mean_over(scaled, mask)

    return {"ce": ce, "dice": dice, "tversky": tversky, "focal": focal}
