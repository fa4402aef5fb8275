"""Segmentation metrics, accumulated as pixel counts over a whole pass.

Per class: true positives, false positives and false negatives summed over every pixel of
every image (and over torchrun's processes), then IoU = tp / (tp + fp + fn) and
Dice = 2 tp / (2 tp + fp + fn). A class that is neither in the truth nor predicted anywhere
has no IoU or Dice (``None``) and is left out of the means. The record's numbers:

* ``iou``, ``dice``: the means over the foreground classes (every class but the first,
  the background); for a binary model, simply the foreground's IoU and Dice;
* ``pixel_acc``: the share of pixels whose class is right;
* ``image_dice`` (validation): Kaggle's mean Dice per image (Carvana's metric): each
  image's Dice of the foreground, averaged; an image whose truth and prediction are both
  empty scores 1. With several classes, an image scores the mean over the foreground
  classes it has or is predicted to have (1 when it has none and none is predicted).

and, for validation, the lists ``per_class_iou`` and ``per_class_dice`` (class order).
Ignored pixels count nowhere. A one-logit model predicts the foreground where its logit is
above 0 (probability 0.5); others predict the class of the largest logit.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from prep.masks.read import IGNORE_INDEX


def predicted_classes(outputs: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """The class of each pixel, ``N x H x W`` int64, from logits (or torchvision's dict)."""
    logits = outputs["out"] if isinstance(outputs, dict) else outputs
    if size is not None and logits.shape[-2:] != size:
        logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


class SegmentationMetrics:
    """The task's ``EpochMetrics``: a pixel confusion matrix, plus per-image Dice for validation."""

    def __init__(self, num_classes: int, train: bool) -> None:
        self.num_classes = num_classes
        self.train = train
        self.counts = {"confusion": torch.zeros((num_classes, num_classes), dtype=torch.int64)}
        if not train:
            self.counts["image_dice_sum"] = torch.zeros((), dtype=torch.float64)
            self.counts["images"] = torch.zeros((), dtype=torch.int64)

    def update(self, outputs: Any, targets: torch.Tensor) -> None:
        c = self.num_classes
        predicted = predicted_classes(outputs, tuple(targets.shape[-2:]))
        device = predicted.device
        valid = targets != IGNORE_INDEX
        truth = torch.where(valid, targets, torch.zeros_like(targets))
        n = len(targets)
        # One count gives every image's confusion matrix: bins (image, truth, prediction),
        # ignored pixels in one more bin, dropped. Counted with index_add_: bincount, or
        # keeping only the valid pixels, would make the host wait for the GPU at every batch.
        bins = (torch.arange(n, device=device).view(n, 1, 1) * c + truth) * c + predicted
        bins = torch.where(valid, bins, n * c * c).flatten()
        counted = torch.zeros(n * c * c + 1, dtype=torch.int64, device=device).index_add_(0, bins, torch.ones_like(bins))
        per_image = counted[:-1].view(n, c, c)
        for name, value in self.counts.items():  # counts stay on the predictions' device
            self.counts[name] = value.to(device)
        self.counts["confusion"] += per_image.sum(dim=0)
        if self.train:
            return
        tp = per_image.diagonal(dim1=1, dim2=2)
        fp = per_image.sum(dim=1) - tp
        fn = per_image.sum(dim=2) - tp
        denominator = (2 * tp + fp + fn)[:, 1:].double()
        present = denominator > 0
        dice = torch.where(present, 2 * tp[:, 1:].double() / denominator.clamp(min=1), torch.zeros_like(denominator))
        counted = present.sum(dim=1)
        score = torch.where(counted > 0, dice.sum(dim=1) / counted.clamp(min=1), torch.ones(n, dtype=torch.float64, device=device))
        self.counts["image_dice_sum"] += score.sum()
        self.counts["images"] += n

    def compute(self) -> dict[str, Any]:
        confusion = self.counts["confusion"].double()
        tp = confusion.diagonal()
        fp = confusion.sum(dim=0) - tp
        fn = confusion.sum(dim=1) - tp
        iou = [_ratio(t, t + p + n) for t, p, n in zip(tp.tolist(), fp.tolist(), fn.tolist())]
        dice = [_ratio(2 * t, 2 * t + p + n) for t, p, n in zip(tp.tolist(), fp.tolist(), fn.tolist())]
        total = float(confusion.sum())
        numbers = {
            "dice": _mean(dice[1:]), "iou": _mean(iou[1:]),
            "pixel_acc": float(tp.sum()) / total if total else None,
        }
        if self.train:
            return numbers
        images = int(self.counts["images"])
        numbers["image_dice"] = float(self.counts["image_dice_sum"]) / images if images else None
        return {**numbers, "per_class_iou": iou, "per_class_dice": dice}
