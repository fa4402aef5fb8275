"""A confusion matrix accumulated batch by batch: the counts behind accuracy, per-class
recall and precision, and (per pixel) IoU and Dice."""

from __future__ import annotations

import torch


class ConfusionMatrix:
    """Counts of (true class, predicted class), added to batch by batch.

    Rows are true classes, columns predictions, so ``matrix[i, j]`` is how many samples of
    class ``i`` were called ``j``. The counts stay on the device of the predictions, so that
    adding a batch on a GPU never waits for it.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    @classmethod
    def of(cls, matrix: torch.Tensor) -> "ConfusionMatrix":
        """A view of existing counts (updated in place when on the predictions' device)."""
        confusion = cls.__new__(cls)
        confusion.num_classes, confusion.matrix = matrix.shape[0], matrix
        return confusion

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``predictions`` are class indexes (or logits, N x C), ``targets`` indexes."""
        if predictions.ndim == 2:
            predictions = predictions.argmax(dim=1)
        device = predictions.device
        if self.matrix.device != device:
            self.matrix = self.matrix.to(device)
        index = targets.detach().to(device, torch.int64) * self.num_classes + predictions.detach().to(torch.int64)
        self.matrix += torch.bincount(index.flatten(), minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def accuracy(self) -> float:
        """Share of all samples classified correctly (0 when there were none)."""
        return float(self.matrix.diag().sum()) / self.total if self.total else 0.0

    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class; None for a class with no samples."""
        seen = self.matrix.sum(dim=1).tolist()
        correct = self.matrix.diag().tolist()
        return [c / n if n else None for c, n in zip(correct, seen)]

    def per_class_precision(self) -> list[float | None]:
        """Precision of each class: the share of the samples called it that are it; None
        for a class never predicted."""
        called = self.matrix.sum(dim=0).tolist()
        correct = self.matrix.diag().tolist()
        return [c / n if n else None for c, n in zip(correct, called)]

    def as_lists(self) -> list[list[int]]:
        return self.matrix.tolist()
