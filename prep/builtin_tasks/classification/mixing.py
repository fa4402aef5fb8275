"""Mixup and cutmix of training batches (``--mixup ALPHA``, ``--cutmix ALPHA``), as timm has
them: each batch is mixed with itself reversed, and the targets become class
probabilities, which the classification losses and metrics take (accuracy counts each
image's largest share as its class).

* mixup (Zhang et al. 2018): ``x = lam * x + (1 - lam) * x_reversed`` with ``lam`` drawn
  from Beta(alpha, alpha);
* cutmix (Yun et al. 2019): a box of ``1 - lam`` of the image's area, placed uniformly
  (clipped at the borders), is pasted from the reversed batch; ``lam`` is then the share of
  the image left, exactly.

A batch is mixed with probability ``mix_prob``; with both on, cutmix with probability
``mix_switch_prob``, else mixup. From epoch ``mix_off_epoch`` on nothing is mixed (the last
epochs on clean images, as timm's ``--mixup-off-epoch``). It runs on the device on the
normalised batch, so it works with any collate function. Every draw comes from a generator
seeded by (seed, epoch, batch, process): a resumed run mixes as an uninterrupted one did.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from prep.errors import UsageError


def check_mixing(mixup: float, cutmix: float, prob: float, switch_prob: float, off_epoch: int | None) -> None:
    """Raises: UsageError: a negative alpha, a probability outside [0, 1], a negative epoch."""
    for option, alpha in (("--mixup", mixup), ("--cutmix", cutmix)):
        if not (math.isfinite(alpha) and alpha >= 0):
            raise UsageError(f"{option} takes alpha >= 0 (0.2 for mixup and 1.0 for cutmix are usual; 0 turns it off), not {alpha:g}")
    for option, value in (("--mix-prob", prob), ("--mix-switch-prob", switch_prob)):
        if not 0 <= value <= 1:
            raise UsageError(f"{option} is a probability, between 0 and 1, not {value:g}")
    if off_epoch is not None and off_epoch < 0:
        raise UsageError(f"--mix-off-epoch is an epoch (0 or more), not {off_epoch}")


class BatchMixer:
    """See the module docstring."""

    def __init__(self, num_classes: int, mixup: float = 0.0, cutmix: float = 0.0, prob: float = 1.0, switch_prob: float = 0.5, off_epoch: int | None = None) -> None:
        check_mixing(mixup, cutmix, prob, switch_prob, off_epoch)
        self.num_classes, self.mixup, self.cutmix = num_classes, mixup, cutmix
        self.prob, self.switch_prob, self.off_epoch = prob, switch_prob, off_epoch

    def active(self, epoch: int) -> bool:
        """Whether batches of ``epoch`` (0-based) are mixed."""
        return (self.mixup > 0 or self.cutmix > 0) and (self.off_epoch is None or epoch < self.off_epoch)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed batch and its class probabilities (``N x classes``); the batch as it
        came, with its targets as probabilities, when this batch is not mixed."""
        truth = targets.float() if targets.is_floating_point() else F.one_hot(targets, self.num_classes).float()
        if rng.random() >= self.prob or len(images) < 2:
            return images, truth
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or rng.random() < self.switch_prob)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(rng.beta(alpha, alpha))
        reversed_images = images.flip(0)
        if use_cutmix:
            height, width = images.shape[-2:]
            y1, y2, x1, x2 = _box(height, width, lam, rng)
            mixed = images.clone()
            mixed[..., y1:y2, x1:x2] = reversed_images[..., y1:y2, x1:x2]
            lam = 1 - (y2 - y1) * (x2 - x1) / (height * width)
        else:
            mixed = images * lam + reversed_images * (1 - lam)
        return mixed, truth * lam + truth.flip(0) * (1 - lam)


def _box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of about ``1 - lam`` of the area, centred uniformly, clipped to the image."""
    ratio = math.sqrt(1 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y1, y2, x1, x2
