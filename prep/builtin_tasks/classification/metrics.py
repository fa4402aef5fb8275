"""The classification task's metrics: a confusion matrix accumulated batch by batch (the
counts behind accuracy, per-class recall and precision), and top-5 hits."""

from __future__ import annotations

from typing import Any

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
        # index_add_, not bincount: bincount sizes its output from the largest index, which
        # the host must first read from the GPU, a wait at every batch.
        self.matrix.view(-1).index_add_(0, index.flatten(), torch.ones_like(index.flatten()))

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

    def balanced_accuracy(self) -> float | None:
        """The mean recall over the classes that have samples (None when none has): a model
        that always answers the largest class scores 1/classes, whatever the imbalance."""
        recalls = [r for r in self.per_class_accuracy() if r is not None]
        return sum(recalls) / len(recalls) if recalls else None

    def macro_f1(self) -> float | None:
        """The mean F1 over the classes that have samples or were predicted (a class that
        has samples but is never predicted, or the reverse, scores 0); None when none has."""
        seen, called = self.matrix.sum(dim=1).tolist(), self.matrix.sum(dim=0).tolist()
        correct = self.matrix.diag().tolist()
        scores = [2 * c / (n + p) for c, n, p in zip(correct, seen, called) if n + p]
        return sum(scores) / len(scores) if scores else None

    def as_lists(self) -> list[list[int]]:
        return self.matrix.tolist()


TOP_K = 5  # top-5 accuracy is recorded for more classes than this


class ClassificationMetrics:
    """A confusion matrix over one pass (and top-5 hits with more than five classes):
    accuracy, balanced accuracy and macro F1 for both phases, and for validation top-5
    accuracy, each class's recall and precision and the matrix itself."""

    def __init__(self, num_classes: int, train: bool) -> None:
        self.train = train
        self.counts = {"confusion": torch.zeros((num_classes, num_classes), dtype=torch.int64)}
        if not train and num_classes > TOP_K:
            self.counts["top5"] = torch.zeros((), dtype=torch.int64)

    def _matrix(self) -> ConfusionMatrix:
        return ConfusionMatrix.of(self.counts["confusion"])

    def update(self, outputs: "torch.Tensor", targets: "torch.Tensor") -> None:
        if targets.ndim == 2:  # class probabilities: each image's largest share
            targets = targets.argmax(dim=1)
        matrix = self._matrix()
        matrix.update(outputs, targets)
        self.counts["confusion"] = matrix.matrix
        if "top5" in self.counts:
            best = outputs.topk(TOP_K, dim=1).indices
            hits = (best == targets.to(best.device).view(-1, 1)).any(dim=1).sum()
            self.counts["top5"] = self.counts["top5"].to(hits.device) + hits

    def compute(self) -> dict[str, Any]:
        matrix = self._matrix()
        scores = {"acc": matrix.accuracy(), "balanced_acc": matrix.balanced_accuracy(), "macro_f1": matrix.macro_f1()}
        if self.train:
            return scores
        top5 = {"top5_acc": int(self.counts["top5"]) / matrix.total if matrix.total else 0.0} if "top5" in self.counts else {}
        return {
            **scores, **top5, "per_class_acc": matrix.per_class_accuracy(),
            "per_class_precision": matrix.per_class_precision(), "confusion": matrix.as_lists(),
        }
