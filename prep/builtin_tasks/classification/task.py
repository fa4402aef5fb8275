"""The ``classification`` task: one label per image, from class folders.

Also a built-in plugin: it registers the task through ``register_tasks``, as a third party
registers its own. Its metrics record, for both phases, ``acc`` (the share of images whose
highest logit is their class), ``balanced_acc`` (the mean of the classes' recalls) and
``macro_f1`` (the mean of their F1 scores); for validation also, with more than five
classes, ``valid_top5_acc`` (the share whose class is among the five highest),
``per_class_acc`` (each class's recall, ``None`` for a class without validation images;
``metrics.csv`` has a column per class), ``per_class_precision`` (``None`` for a class
never predicted) and ``confusion`` (rows true classes, columns predictions). ``valid_acc``
is monitored, higher is better, unless the training split is imbalanced (the largest class
has more than 2x the images of the smallest, see ``prep.stats.balance``): then a run whose
options do not say otherwise monitors ``valid_balanced_acc`` and weighs its loss with
``--class-weights auto``, so that a model that answers the largest class is not reported
as good. The training loss is ``--loss`` (see ``losses``: ce or focal) with
``TrainConfig.label_smoothing`` and ``class_weights``; ``valid_loss`` is plain cross-entropy.

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

    from prep.data.index import DatasetIndex
    from prep.engine.config import TrainConfig


class ClassificationTask:
    """See the module docstring."""

    name = CLASSIFICATION
    layout = CLASSIFICATION
    metric_names = ("acc", "balanced_acc", "macro_f1")
    monitor = "valid_acc"
    mode = "max"
    count_unit = "images"

    collate = "uint8-channels-last"

    def classes(self, root: "DatasetIndex | Path") -> list[str]:
        from prep.data.index import DatasetIndex

        return DatasetIndex.of(root).class_names()

    def dataset(self, root: "DatasetIndex | Path", split: str, *, classes: list[str], transform: Any, decode_side: int | None):
        from prep.data.datasets import ClassificationDataset

        return ClassificationDataset(root, split, transform=transform, classes=classes, decode_side=decode_side)

    def sample_classes(self, root: "DatasetIndex | Path", split: str, classes: list[str]) -> list[tuple[int, ...]]:
        """Each image's class, in the order of ``dataset`` (for ``--sampler balanced``)."""
        from prep.data.index import DatasetIndex

        return [(label,) for _, label in DatasetIndex.of(root).classification_samples(split, classes)]

    def class_counts(self, root: "DatasetIndex | Path", classes: list[str]) -> list[int]:
        """Training images per class."""
        counts = [0] * len(classes)
        for (label,) in self.sample_classes(root, "train", classes):
            counts[label] += 1
        return counts

    def defaults_for_imbalance(self, classes: list[str]) -> dict[str, Any]:
        """What a run on an imbalanced training split uses unless its options say otherwise."""
        return {"monitor": "valid_balanced_acc", "class_weights": "auto"}

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
        """``--loss`` with label smoothing and class weights for training; validation
        measures plain cross-entropy, comparable across recipes.

        Raises:
            UsageError: a loss that is not ce or focal; class weights that are not one
                number per class.
        """
        from prep.builtin_tasks.classification.losses import ClassificationLoss, check_loss
        from prep.engine.config import check_class_weights

        name = check_loss(config.loss)
        weights = check_class_weights(config.class_weights, classes)
        if not train:
            return ClassificationLoss()
        return ClassificationLoss(name, config.label_smoothing, weights)

    def mixer(self, config: "TrainConfig", classes: list[str]):
        """Mixup and cutmix of training batches (see ``mixing``), as the config asks."""
        from prep.builtin_tasks.classification.mixing import BatchMixer

        return BatchMixer(len(classes), config.mixup, config.cutmix, config.mix_prob, config.mix_switch_prob, config.mix_off_epoch)

    def metrics(self, classes: list[str], *, train: bool):
        from prep.builtin_tasks.classification.metrics import ClassificationMetrics

        return ClassificationMetrics(len(classes), train)

    # -- prep evaluate ----------------------------------------------------------------------

    evaluation_picture = "confusion"

    def evaluation_dataset(self, folder: Path, split: str | None, *, classes: list[str], transform: Any, decode_side: int | None):
        """Any folder of class folders, as held-out sets come (see ``heldout``): a split
        dataset, a split holding only ``valid/`` or ``test/``, or bare class folders; and the
        name of what was read, for the report."""
        from prep.builtin_tasks.classification.heldout import evaluation_split
        from prep.data.datasets import ClassificationDataset

        chosen, name = evaluation_split(folder, split, classes)
        return ClassificationDataset(folder, chosen, transform=transform, classes=classes, decode_side=decode_side), name

    def report(self, metrics: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        """Evaluate's result with each class's ``recall``, ``precision`` and ``images`` under
        ``per_class`` (instead of the record's lists)."""
        counts = [sum(row) for row in metrics["confusion"]]
        metrics["per_class"] = {
            name: {"recall": recall, "precision": precision, "images": n}
            for name, recall, precision, n in zip(classes, metrics.pop("per_class_acc"), metrics.pop("per_class_precision"), counts)
        }
        return metrics

    def report_lines(self, report: dict[str, Any]) -> list[str]:
        """Evaluate's result in words: accuracy and loss, then a line per class."""
        top5 = f", top-5 acc {report['top5_acc']:.4f}" if "top5_acc" in report else ""
        lines = [
            f"{report['split']}: acc {report['acc']:.4f}, balanced acc {_number(report.get('balanced_acc'))}, "
            f"macro F1 {_number(report.get('macro_f1'))}{top5}, loss {report['loss']:.4f} over {report['images']} images"
        ]
        for name, scores in report["per_class"].items():
            if not scores["images"]:
                lines.append(f"  {name}: not in {report['split']} (no images), precision {_number(scores['precision'])}")
            else:
                lines.append(f"  {name}: recall {_number(scores['recall'])}, precision {_number(scores['precision'])} ({scores['images']} images)")
        if report.get("confusion_png"):
            lines.append(f"Confusion matrix: {report['confusion_png']}")
        if report.get("cam_png"):
            lines.append(f"Grad-CAM: {report['cam_png']} (at {report['cam_layer']})")
        return lines

    def draw_evaluation(self, report: dict[str, Any], *, path: Path, title: str, **_: Any) -> Path:
        """The confusion matrix of the evaluation."""
        from prep.builtin_tasks.classification.plots import plot_confusion

        return plot_confusion(report["confusion"], report["classes"], path, title=title)

    def draw_cam(self, *, model, layer, loader, dataset, classes: list[str], mean, std, device, path: Path, title: str) -> dict[str, Any]:
        """Grad-CAM overlays of each class's most confident right answers and mistakes."""
        from prep.builtin_tasks.classification.cam import draw_cam

        return draw_cam(model, layer, loader, dataset, classes, mean=mean, std=std, device=device, path=path, title=title)

    # -- prep train --fold all: out-of-fold predictions -----------------------------------

    def out_of_fold_rows(self, outputs: "torch.Tensor", targets: "torch.Tensor", classes: list[str]) -> list[dict[str, Any]]:
        """Each held-out image's given label, the predicted one, and every class's probability."""
        import torch

        probabilities = torch.softmax(outputs.float(), dim=1).cpu()
        labels = (targets.argmax(dim=1) if targets.is_floating_point() else targets).cpu().tolist()
        rows = []
        for label, row in zip(labels, probabilities.tolist()):
            predicted = max(range(len(row)), key=row.__getitem__)
            rows.append({"label": classes[label], "predicted": classes[predicted], **{f"prob_{c}": p for c, p in zip(classes, row)}})
        return rows

    def out_of_fold_score(self, rows: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
        """The log-loss of the out-of-fold probabilities (each clipped to [1e-15, 1])."""
        import math

        if not rows:
            return {"log_loss": None}
        return {"log_loss": -sum(math.log(max(float(row[f"prob_{row['label']}"]), 1e-15)) for row in rows) / len(rows)}

    def label_suspects(self, rows: list[dict[str, Any]], classes: list[str], *, root: Path, out_dir: Path) -> dict[str, Any]:
        """The training images whose labels look wrong (``suspects``: confident learning)."""
        from prep.builtin_tasks.classification.suspects import label_suspects

        return label_suspects(rows, classes, root=root, out_dir=out_dir)

    # -- prep train ---------------------------------------------------------------------------

    def pictures(self, records: list[dict[str, Any]], classes: list[str], run_dir: Path) -> list[Path]:
        from prep.builtin_tasks.classification.plots import plot_confusion
        from prep.engine.plots import best_record, plot_curves, training_loss_note

        written = [plot_curves(
            records, run_dir / "curves.png", metric="acc", title="accuracy", suptitle=run_dir.name,
            train_loss_note=training_loss_note(run_dir),
        )]
        shown, which = best_record(records)
        if shown.get("confusion") is not None:
            written.append(plot_confusion(shown["confusion"], classes, run_dir / "confusion.png", title=f"{run_dir.name}\n{which}"))
        return written


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@hookimpl
def register_tasks(register) -> None:
    register(CLASSIFICATION, ClassificationTask())
