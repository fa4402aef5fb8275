"""Classification metrics accumulated over an epoch: accuracy, per class, confusion."""

from __future__ import annotations

import torch


class ConfusionMatrix:
    """Counts of (true class, predicted class), added to batch by batch.

    Rows are true classes, columns predictions, so ``matrix[i, j]`` is how many images of
    class ``i`` were called ``j``.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``predictions`` are class indexes (or logits, N x C), ``targets`` indexes."""
        if predictions.ndim == 2:
            predictions = predictions.argmax(dim=1)
        index = targets.detach().to("cpu", torch.int64) * self.num_classes + predictions.detach().to("cpu", torch.int64)
        self.matrix += torch.bincount(index, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def accuracy(self) -> float:
        """Share of all images classified correctly (0 when there were none)."""
        return float(self.matrix.diag().sum()) / self.total if self.total else 0.0

    def per_class_accuracy(self) -> list[float | None]:
        """Recall of each class; None for a class with no images."""
        seen = self.matrix.sum(dim=1)
        return [float(self.matrix[i, i]) / int(n) if n else None for i, n in enumerate(seen)]

    def as_lists(self) -> list[list[int]]:
        return self.matrix.tolist()
