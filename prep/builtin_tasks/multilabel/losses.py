"""The multi-label task's losses: each tag is a yes/no question of its own.

* ``--loss bce`` (the default): binary cross-entropy of each tag's logit, averaged over the
  tags and images (torch's ``BCEWithLogitsLoss``);
* ``--loss focal``: each term scaled by ``(1 - p_t)^2`` (Lin et al. 2017, gamma 2), where
  ``p_t`` is the probability given to the right answer, so the many easy "no"s of rare tags
  stop drowning out the rest;
* ``--loss asl``: asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label
  Classification", ICCV 2021) with its published defaults: the "yes" terms as BCE, the "no"
  terms focused with gamma 4 after shifting their probability down by 0.05 (``p_m = max(p -
  0.05, 0)``), which discards the easiest negatives altogether.

``--class-weights`` gives each tag a positive weight (torch's ``pos_weight``): its "yes"
terms count that many times; ``auto`` is ``sqrt(negatives / positives)`` of the training
split, between 1 and 10 (a tag of 1% of the images weighs 9.9). Label smoothing ``e``
moves each target toward 0.5: ``y (1 - e) + e / 2``. Logits are taken in float32, also under
mixed precision.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from prep.errors import UsageError

LOSSES = ("bce", "focal", "asl")
FOCAL_GAMMA = 2.0
ASL_GAMMA_NEGATIVE, ASL_CLIP = 4.0, 0.05
AUTO_WEIGHT_RANGE = (1.0, 10.0)


def check_loss(spec: str | None) -> str:
    """The loss ``--loss`` names (``bce`` when not given).

    Raises:
        UsageError: a name that is not a multi-label loss.
    """
    name = (spec or "bce").strip().lower()
    if name not in LOSSES:
        raise UsageError(f"--loss {spec!r} is not a multi-label loss; use bce (the default), focal or asl")
    return name


def auto_positive_weights(positives: Sequence[int], images: int) -> list[float]:
    """``sqrt(negatives / positives)`` per tag, kept within ``AUTO_WEIGHT_RANGE`` (1 for a
    tag without training images: it has nothing to weigh)."""
    low, high = AUTO_WEIGHT_RANGE
    return [min(max(math.sqrt((images - n) / n), low), high) if n else low for n in positives]


class MultiLabelLoss:
    """See the module docstring. A class, not a closure: DDP and pickling need a plain object."""

    def __init__(self, loss: str = "bce", label_smoothing: float = 0.0, positive_weights: Sequence[float] | None = None) -> None:
        self.loss, self.label_smoothing = loss, label_smoothing
        self.positive_weights = list(positive_weights) if positive_weights is not None else None

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = outputs.float()
        truth = targets.float()
        if self.label_smoothing:
            truth = truth * (1 - self.label_smoothing) + self.label_smoothing / 2
        weights = None
        if self.positive_weights is not None:
            weights = torch.tensor(self.positive_weights, device=logits.device, dtype=torch.float32)
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, truth, pos_weight=weights)
        p = logits.sigmoid()
        log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
        if self.loss == "focal":
            positive = truth * (1 - p).pow(FOCAL_GAMMA) * log_p
            negative = (1 - truth) * p.pow(FOCAL_GAMMA) * log_not_p
        else:  # asl
            shifted = (p - ASL_CLIP).clamp(min=0)
            positive = truth * log_p
            negative = (1 - truth) * shifted.pow(ASL_GAMMA_NEGATIVE) * torch.log((1 - shifted).clamp(min=1e-8))
        if weights is not None:
            positive = positive * weights
        return -(positive + negative).mean()
