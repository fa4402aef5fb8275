"""The ``segmentation`` task: a class per pixel, from ``images/`` + ``masks/`` splits.

Also a built-in plugin, registering the task through ``register_tasks``. The classes come
from the dataset's class table (``classes.csv``), else from the masks (ids 0 to the
largest; two classes make a binary segmentation); every mask of every split is read once
before training, and values that are no class stop the run with the files named (see
``prep.masks.read``). Two classes train one logit (sigmoid), more train one per
class (softmax); the loss is ``TrainConfig.loss`` (default Dice + cross-entropy, see
``prep.builtin_tasks.segmentation.losses``) with ``TrainConfig.class_weights``. Metrics (see
``prep.builtin_tasks.segmentation.metrics``): ``dice``, ``iou``, ``pixel_acc`` per phase, ``image_dice``,
``per_class_iou`` and ``per_class_dice`` for validation. The monitor is ``valid_dice`` for a
binary segmentation and ``valid_iou`` (mean IoU) otherwise; higher is better.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.hookspecs import hookimpl
from prep.layout import SEGMENTATION
from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    import torch

    from prep.data.index import DatasetIndex
    from prep.engine.config import TrainConfig

EXAMPLES = 6


class SegmentationTask:
    """See the module docstring."""

    name = SEGMENTATION
    layout = SEGMENTATION
    collate = "segmentation"
    metric_names = ("dice", "iou", "pixel_acc", "image_dice")
    monitor = "valid_iou"
    mode = "max"

    def monitor_for(self, classes: list[str]) -> str:
        """Dice for a binary segmentation (Carvana's metric), mean IoU otherwise."""
        return "valid_dice" if len(classes) == 2 else "valid_iou"

    def prepare(self, root: "DatasetIndex | Path", progress: Progress = NO_PROGRESS) -> None:
        """Read every mask once, with a progress bar (the costly part of a large dataset);
        the index keeps what they hold for ``classes`` and ``dataset``."""
        from prep.data.index import DatasetIndex

        DatasetIndex.of(root).mask_classes(progress=progress)

    def classes(self, root: "DatasetIndex | Path") -> list[str]:
        from prep.data.index import DatasetIndex

        return list(DatasetIndex.of(root).mask_classes().names)

    def dataset(self, root: "DatasetIndex | Path", split: str, *, classes: list[str], transform: Any, decode_side: int | None):
        from prep.data.datasets import SegmentationDataset
        from prep.data.index import DatasetIndex
        from prep.errors import MaskError
        from prep.masks.read import MaskDecoder

        index = DatasetIndex.of(root)
        found = index.mask_classes()
        mapping = found.mapping
        if list(classes) != found.names and found.table is None and len(found.names) <= len(classes):
            # Without a table the classes are the ids found: a held-out set may lack the last ones.
            from prep.masks.read import ClassMapping

            mapping = ClassMapping(tuple(range(len(classes))))
        elif list(classes) != found.names:
            raise MaskError(
                f"The model's classes are {', '.join(classes)}, but {root} has {', '.join(found.names)}; "
                f"use it with a model trained on these classes"
            )
        return SegmentationDataset(index, split, transform=transform, decode_side=decode_side, decode_mask=MaskDecoder(found.table, mapping))

    def targets(self, batch: Any, classes: list[str], origin: str):
        import torch

        from prep.data.collate import check_batch
        from prep.errors import PluginError
        from prep.masks.read import IGNORE_INDEX

        check_batch(batch, origin)
        masks, images = batch.targets, batch.inputs
        if not (isinstance(masks, torch.Tensor) and masks.dtype == torch.int64 and masks.ndim == 3 and tuple(masks.shape) == tuple(images.shape[:3])):
            shape = f"a {tuple(masks.shape)} {masks.dtype} tensor" if isinstance(masks, torch.Tensor) else type(masks).__name__
            raise PluginError(
                f"The {origin} returned targets as {shape} for images of {tuple(images.shape)}, but segmentation "
                f"needs masks of class indices: an int64 tensor N x H x W matching the images."
            )
        if masks.numel():
            valid = masks[masks != IGNORE_INDEX]
            if valid.numel() and not (0 <= int(valid.min()) and int(valid.max()) < len(classes)):
                bad = int(valid.max()) if int(valid.max()) >= len(classes) else int(valid.min())
                raise PluginError(f"The {origin} returned the class index {bad}, but the dataset has {len(classes)} classes (0 to {len(classes) - 1}).")
        return masks

    def loss(self, config: "TrainConfig", classes: list[str], *, train: bool):
        from prep.builtin_tasks.segmentation.losses import SegmentationLoss
        from prep.engine.config import check_class_weights
        from prep.errors import UsageError

        if config.label_smoothing:
            raise UsageError(f"--label-smoothing {config.label_smoothing:g} is for classification; the segmentation losses do not smooth labels")
        return SegmentationLoss(config.loss, check_class_weights(config.class_weights, classes))

    count_unit = "pixels"

    def sample_classes(self, root: "DatasetIndex | Path", split: str, classes: list[str]) -> list[tuple[int, ...]]:
        """The classes each image's mask holds, in the order of ``dataset`` (for
        ``--sampler balanced``, which draws the images of rare classes more often)."""
        from prep.data.index import DatasetIndex

        return DatasetIndex.of(root).mask_classes_held(split)

    def class_counts(self, root: "DatasetIndex | Path", classes: list[str]) -> list[int]:
        """Training pixels per class."""
        from prep.data.index import DatasetIndex

        return DatasetIndex.of(root).mask_class_pixels("train")

    def defaults_for_imbalance(self, classes: list[str]) -> dict[str, Any]:
        """With more than two classes, pixels weighed by ``--class-weights auto`` (the
        Dice term is already a mean over classes)."""
        return {"class_weights": "auto"} if len(classes) > 2 else {}

    def metrics(self, classes: list[str], *, train: bool):
        from prep.builtin_tasks.segmentation.metrics import SegmentationMetrics

        return SegmentationMetrics(len(classes), train)

    def pictures(self, records: list[dict[str, Any]], classes: list[str], run_dir: Path) -> list[Path]:
        from prep.builtin_tasks.segmentation.plots import plot_per_class
        from prep.engine.plots import best_record, plot_curves, training_loss_note

        metric = "dice" if len(classes) == 2 else "iou"
        written = [plot_curves(
            records, run_dir / "curves.png", metric=metric, title="Dice" if metric == "dice" else "mean IoU", suptitle=run_dir.name,
            train_loss_note=training_loss_note(run_dir),
        )]
        shown, which = best_record(records)
        if shown.get("per_class_iou") is not None:
            written.append(plot_per_class(
                {"IoU": shown["per_class_iou"], "Dice": shown["per_class_dice"]}, classes, run_dir / "per_class.png",
                title=f"{run_dir.name}\nper class, {which}",
            ))
        return written

    # -- prep evaluate and prep predict --------------------------------------------------------

    def report(self, metrics: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        """Evaluate's result with each class's ``dice`` and ``iou`` under ``per_class``."""
        metrics["per_class"] = {
            name: {"dice": dice, "iou": iou}
            for name, dice, iou in zip(classes, metrics.pop("per_class_dice"), metrics.pop("per_class_iou"))
        }
        return metrics

    def report_lines(self, report: dict[str, Any]) -> list[str]:
        """Evaluate's result in words: the mean scores and the loss, then a line per class."""
        lines = [
            f"{report['split']}: dice {_number(report['dice'])}, iou {_number(report['iou'])}, image_dice {_number(report['image_dice'])}, "
            f"pixel_acc {_number(report['pixel_acc'])}, loss {report['loss']:.4f} over {report['images']} images"
        ]
        for name, scores in report["per_class"].items():
            if scores["dice"] is None:  # neither in the masks nor predicted: nothing to score
                lines.append(f"  {name}: not in {report['split']} (no pixel of it in the masks or the predictions)")
            else:
                lines.append(f"  {name}: dice {_number(scores['dice'])}, iou {_number(scores['iou'])}")
        if "examples_png" in report:
            lines.append(f"Samples with truth and prediction: {report['examples_png']}")
        return lines

    def predict(self, request: Any) -> dict[str, Any]:
        """``prep predict``: masks at each image's own size, or a Kaggle run-length submission
        (see ``prep.builtin_tasks.segmentation.predict.write_predicted_masks``)."""
        from prep.builtin_tasks.segmentation.predict import write_predicted_masks

        return write_predicted_masks(request)

    # -- prep train --fold all: out-of-fold predictions ---------------------------------------

    def out_of_fold_rows(self, outputs: Any, targets: "torch.Tensor", classes: list[str]) -> list[dict[str, Any]]:
        """Each held-out image's Dice and IoU (see ``suspects``)."""
        from prep.builtin_tasks.segmentation.suspects import out_of_fold_rows

        return out_of_fold_rows(outputs, targets, classes)

    def label_suspects(self, rows: list[dict[str, Any]], classes: list[str], *, root: Path, out_dir: Path) -> dict[str, Any]:
        """The pairs with the lowest out-of-fold Dice, overlaid (see ``suspects``)."""
        from prep.builtin_tasks.segmentation.suspects import label_suspects
        from prep.data.index import DatasetIndex

        table = DatasetIndex.of(root).class_table()
        return label_suspects(rows, classes, root=root, out_dir=out_dir, colours=table.colours if table is not None else None)

    def examples(self, model: "torch.nn.Module", dataset: Any, classes: list[str], mean, std, device, path: Path) -> Path | None:
        """Samples of ``dataset`` with their truth, prediction and errors overlaid (see
        ``prep.masks.overlay``): at the end of ``prep train``, ``best.pt``'s on the
        validation split, titled with the run's name (the folder of ``path``)."""
        from prep.builtin_tasks.segmentation.examples import write_examples

        title = f"{path.parent.name}: best.pt on validation samples"
        return write_examples(model, dataset, classes, mean, std, device, path, count=EXAMPLES, title=title)

    evaluation_picture = "examples"

    def draw_evaluation(self, report: dict[str, Any], *, model, dataset, mean, std, device, path: Path, title: str) -> Path | None:
        """``prep evaluate``'s picture: ``examples`` of the evaluated data, under the
        evaluation's title (which checkpoint, on what)."""
        from prep.builtin_tasks.segmentation.examples import write_examples

        return write_examples(model, dataset, report["classes"], mean, std, device, path, count=EXAMPLES, title=title)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@hookimpl
def register_tasks(register) -> None:
    register(SEGMENTATION, SegmentationTask())
