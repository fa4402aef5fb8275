"""The classification task's losses: cross-entropy or focal loss, with label smoothing and
class weights, for class indices or class probabilities (mixup, cutmix).

``--loss ce`` (the default) or ``--loss focal`` (gamma 2, Lin et al. 2017: each image's
cross-entropy scaled by ``(1 - p)^2`` per class, so that the many easy images of a large
class stop drowning out the hard ones). With targets ``q`` (one-hot for class indices),
label smoothing ``e`` and ``C`` classes, an image's loss is::

    l_i = -sum_c s_c (1 - p_c)^gamma log p_c,   s = (1 - e) q + e / C,   gamma = 0 for ce

and with class weights ``w`` the batch's loss is the mean weighted by each image's weight
``w_i = sum_c q_c w_c`` (the weight of its class; a mix of two classes weighs their mix):
``sum_i w_i l_i / sum_i w_i``. That is torch's weighted cross-entropy for class indices
without smoothing, so a weight of 2 counts an image twice. Logits are taken in float32,
also under mixed precision.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from prep.errors import UsageError

LOSSES = ("ce", "focal")
FOCAL_GAMMA = 2.0


def check_loss(spec: str | None) -> str:
    """The loss ``--loss`` names (``ce`` when not given).

    Raises:
        UsageError: a name that is not a classification loss.
    """
    name = (spec or "ce").strip().lower()
    if name in ("cross-entropy", "crossentropy"):
        name = "ce"
    if name not in LOSSES:
        raise UsageError(f"--loss {spec!r} is not a classification loss; use ce (cross-entropy, the default) or focal")
    return name


class ClassificationLoss:
    """See the module docstring. A class, not a closure: DDP and pickling both need a plain
    object.

    Args:
        loss: ``ce`` or ``focal``.
        label_smoothing: the share of each target spread evenly over every class.
        class_weights: one weight per class, or None.
    """

    def __init__(self, loss: str = "ce", label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None) -> None:
        self.loss, self.label_smoothing = loss, label_smoothing
        self.gamma = FOCAL_GAMMA if loss == "focal" else 0.0
        self.class_weights = list(class_weights) if class_weights is not None else None

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = outputs.float()
        if self.gamma == 0 and self.class_weights is None:
            # torch's own, for indices and probabilities alike: the fastest, and what
            # runs before class weights existed computed.
            return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        classes = logits.shape[1]
        truth = targets.float() if targets.is_floating_point() else F.one_hot(targets, classes).float()
        smoothed = truth * (1 - self.label_smoothing) + self.label_smoothing / classes
        log_p = logits.log_softmax(dim=1)
        if self.gamma:
            log_p = log_p * (1 - log_p.exp()).pow(self.gamma)
        per_image = -(smoothed * log_p).sum(dim=1)
        if self.class_weights is None:
            return per_image.mean()
        weights = truth @ torch.tensor(self.class_weights, device=logits.device, dtype=torch.float32)
        return (weights * per_image).sum() / weights.sum().clamp(min=1e-12)
