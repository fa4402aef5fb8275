"""The ``classification`` task: one label per image, from class folders.

Also a built-in plugin: it registers the task through ``register_tasks``, as a third party
registers its own. Its metrics record ``train_acc`` and ``valid_acc`` (the share of images
whose highest logit is their class), with more than five classes ``valid_top5_acc`` (the
share whose class is among the five highest), ``per_class_acc`` (each class's recall,
``None`` for a class without validation images), ``per_class_precision`` (``None`` for a
class never predicted) and ``confusion`` (rows true classes, columns predictions);
``valid_acc`` is monitored, higher is better. Its training loss is
cross-entropy with ``TrainConfig.label_smoothing``; ``valid_loss`` is plain cross-entropy.

Targets are class indices (an int64 tensor, one per image) or, from a mixup or cutmix
collate function, class probabilities (a float tensor ``N x classes``). Both train with the
default loss; with probabilities, ``train_acc`` counts each image's largest share as its class.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.hookspecs import hookimpl
from prep.layout import CLASSIFICATION

if TYPE_CHECKING:
    import torch

    from prep.engine.config import TrainConfig


TOP_K = 5  # top-5 accuracy is recorded for more classes than this


class ClassificationMetrics:
    """A confusion matrix over one pass (and top-5 hits with more than five classes);
    ``train`` passes compute accuracy only."""

    def __init__(self, num_classes: int, train: bool) -> None:
        import torch

        self.train = train
        self.counts = {"confusion": torch.zeros((num_classes, num_classes), dtype=torch.int64)}
        if not train and num_classes > TOP_K:
            self.counts["top5"] = torch.zeros((), dtype=torch.int64)

    def _matrix(self):
        from prep.builtin_tasks.classification.metrics import ConfusionMatrix

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
        if self.train:
            return {"acc": matrix.accuracy()}
        top5 = {"top5_acc": int(self.counts["top5"]) / matrix.total if matrix.total else 0.0} if "top5" in self.counts else {}
        return {
            "acc": matrix.accuracy(), **top5, "per_class_acc": matrix.per_class_accuracy(),
            "per_class_precision": matrix.per_class_precision(), "confusion": matrix.as_lists(),
        }


class ClassificationTask:
    """See the module docstring."""

    name = CLASSIFICATION
    layout = CLASSIFICATION
    metric_names = ("acc",)
    monitor = "valid_acc"
    mode = "max"

    collate = "uint8-channels-last"

    def classes(self, root: Path) -> list[str]:
        from prep.data.index import class_names, find_split_dirs

        return class_names(find_split_dirs(root)["train"])

    def dataset(self, root: Path, split: str, *, classes: list[str], transform: Any, decode_side: int | None):
        from prep.data.datasets import ClassificationDataset

        return ClassificationDataset(root, split, transform=transform, classes=classes, decode_side=decode_side)

    def targets(self, batch: Any, classes: list[str], origin: str):
        import torch

        from prep.data.collate import check_batch
        from prep.errors import PluginError

        check_batch(batch, origin)
        targets, n, c = batch.targets, len(batch.inputs), len(classes)
        if isinstance(targets, torch.Tensor) and len(targets) == n:
            if targets.dtype == torch.int64 and targets.ndim == 1:
                if n and not (0 <= int(targets.min()) and int(targets.max()) < c):
                    raise PluginError(
                        f"The {origin} returned class index {int(targets.max()) if int(targets.max()) >= c else int(targets.min())}, "
                        f"but the dataset has {c} classes (0 to {c - 1})."
                    )
                return targets
            if targets.is_floating_point() and targets.ndim == 2 and targets.shape[1] == c:
                return targets
        shape = f"a {tuple(targets.shape)} {targets.dtype} tensor" if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise PluginError(
            f"The {origin} returned targets as {shape} for {n} images, but classification needs class indices "
            f"(an int64 tensor, one per image) or class probabilities (a float tensor, images x {c} classes)."
        )

    def loss(self, config: "TrainConfig", classes: list[str], *, train: bool):
        # Label smoothing is a training device; validation measures plain cross-entropy.
        return CrossEntropy(config.label_smoothing if train else 0.0)

    def metrics(self, classes: list[str], *, train: bool) -> ClassificationMetrics:
        return ClassificationMetrics(len(classes), train)

    def pictures(self, records: list[dict[str, Any]], classes: list[str], run_dir: Path) -> list[Path]:
        from prep.engine.plots import plot_confusion, plot_curves

        written = [plot_curves(records, run_dir / "curves.png", metric="acc", title="accuracy", suptitle=run_dir.name)]
        if records and records[-1].get("confusion") is not None:
            title = f"{run_dir.name}: validation, epoch {records[-1]['epoch']}"
            written.append(plot_confusion(records[-1]["confusion"], classes, run_dir / "confusion.png", title=title))
        return written


class CrossEntropy:
    """Cross-entropy on float32 logits (also under mixed precision), for class indices or
    class probabilities. A class, not a closure: DDP and pickling both need a plain object."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, outputs: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        import torch

        return torch.nn.functional.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing)


@hookimpl
def register_tasks(register) -> None:
    register(CLASSIFICATION, ClassificationTask())
