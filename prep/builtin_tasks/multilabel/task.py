"""The ``multilabel`` task: any number of tags per image, from ``images/`` and ``labels.csv``.

Also a built-in plugin: it registers the task through ``register_tasks``, as a third party
registers its own. The model gives a logit per tag (``N x tags``, as a classifier's); each
tag's probability is its sigmoid. Metrics (see ``metrics``): ``f1`` and ``f2``
(sample-averaged, Planet's F2), ``macro_f1`` and ``map`` for both phases at a threshold of
0.5; for validation also each tag's precision, recall, average precision and images, and
each tag's tuned threshold. ``valid_map`` is monitored (higher is better): it needs no
threshold, and weighs every tag equally, so a model that always answers the common tags
is not reported as good.

At each improvement the validation's tuned thresholds go into the checkpoint
(``model_state``): those that maximise each tag's F2 when the run monitors an F2, else its
F1. ``prep evaluate`` and ``prep predict`` use them; ``--threshold T`` uses T for every tag.
The loss is ``--loss bce|focal|asl`` (see ``losses``) with ``--class-weights`` as each tag's
positive weight; ``valid_loss`` is plain BCE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.hookspecs import hookimpl
from prep.layout import MULTILABEL

if TYPE_CHECKING:
    from prep.data.index import DatasetIndex
    from prep.engine.config import TrainConfig


@dataclass(frozen=True)
class Thresholds:
    """The decision threshold of each tag, and where they come from, in words."""

    values: tuple[float, ...]
    source: str


def model_thresholds(state: dict[str, Any], threshold: float | None) -> Thresholds:
    """A multi-label checkpoint's thresholds: ``threshold`` for every tag when given, else
    those tuned on its validation (F2's when the run monitored an F2, else F1's), else 0.5.
    An ensemble's (``state["task_states"]``, the members'): each tag's mean over the members."""
    from prep.inference.predict import check_threshold

    tags = len(state["classes"])
    if threshold is not None:
        return Thresholds((check_threshold(threshold),) * tags, f"--threshold {threshold:g}")
    monitor = str((state.get("config") or {}).get("monitor") or "")
    beta = 2 if monitor.endswith("f2") else 1
    kept = state.get("task_states") or [state.get("task_state")]
    tuned = [member.get(f"thresholds_f{beta}") for member in kept if member]
    tuned = [values for values in tuned if values and len(values) == tags]
    if tuned and len(tuned) == len(kept):
        mean = tuple(sum(values[i] for values in tuned) / len(tuned) for i in range(tags))
        of = f", the mean of {len(tuned)} models'" if len(tuned) > 1 else ""
        return Thresholds(mean, f"tuned for each tag's F{beta} on the validation split{of}")
    return Thresholds((0.5,) * tags, "0.5 (the checkpoint holds no tuned thresholds)")


class MultiLabelTask:
    """See the module docstring. ``for_model`` gives the task with a model's thresholds."""

    name = MULTILABEL
    layout = MULTILABEL
    metric_names = ("f1", "f2", "macro_f1", "map")
    monitor = "valid_map"
    mode = "max"
    count_unit = "images"
    scores = "sigmoid"
    collate = "multilabel"
    evaluation_picture = "tags"

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds

    def for_model(self, state: dict[str, Any], threshold: float | None = None) -> "MultiLabelTask":
        """The task as the model of ``state`` uses it: with its thresholds (see ``model_thresholds``)."""
        return MultiLabelTask(model_thresholds(state, threshold))

    # -- the data -----------------------------------------------------------------------------

    def classes(self, root: "DatasetIndex | Path") -> list[str]:
        from prep.data.index import DatasetIndex

        return DatasetIndex.of(root).class_names()

    def dataset(self, root: "DatasetIndex | Path", split: str, *, classes: list[str], transform: Any, decode_side: int | None):
        from prep.data.datasets import MultiLabelDataset

        return MultiLabelDataset(root, split, transform=transform, classes=classes, decode_side=decode_side)

    def sample_classes(self, root: "DatasetIndex | Path", split: str, classes: list[str]) -> list[tuple[int, ...]]:
        """Each image's tags, in the order of ``dataset`` (for ``--sampler balanced``)."""
        from prep.data.index import DatasetIndex

        return [held for _, held in DatasetIndex.of(root).multilabel_samples(split, classes)]

    def class_counts(self, root: "DatasetIndex | Path", classes: list[str]) -> list[int]:
        """Training images holding each tag."""
        counts = [0] * len(classes)
        for held in self.sample_classes(root, "train", classes):
            for tag in held:
                counts[tag] += 1
        return counts

    def auto_class_weights(self, root: "DatasetIndex | Path", classes: list[str], counts: list[int]) -> list[float]:
        """``--class-weights auto``: each tag's positive weight (see ``losses``)."""
        from prep.builtin_tasks.multilabel.losses import auto_positive_weights
        from prep.data.index import DatasetIndex

        return auto_positive_weights(counts, len(DatasetIndex.of(root).multilabel_samples("train", classes)))

    def targets(self, batch: Any, classes: list[str], origin: str):
        import torch

        from prep.data.collate import check_batch
        from prep.errors import PluginError

        check_batch(batch, origin)
        targets, n, c = batch.targets, len(batch.inputs), len(classes)
        if isinstance(targets, torch.Tensor) and targets.is_floating_point() and tuple(targets.shape) == (n, c):
            if n and not (float(targets.min()) >= 0 and float(targets.max()) <= 1):
                raise PluginError(f"The {origin} returned multi-label targets outside [0, 1] (from {float(targets.min()):g} to {float(targets.max()):g})")
            return targets
        shape = f"a {tuple(targets.shape)} {targets.dtype} tensor" if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise PluginError(
            f"The {origin} returned targets as {shape} for {n} images, but multi-label classification needs "
            f"a float tensor of images x {c} tags, 1 where an image has the tag and 0 where not."
        )

    # -- training -------------------------------------------------------------------------------

    def loss(self, config: "TrainConfig", classes: list[str], *, train: bool):
        """``--loss`` with label smoothing and positive weights for training; validation
        measures plain BCE, comparable across recipes.

        Raises:
            UsageError: a loss that is not bce, focal or asl; weights that are not one
                number per tag.
        """
        from prep.builtin_tasks.multilabel.losses import MultiLabelLoss, check_loss
        from prep.engine.config import check_class_weights

        name = check_loss(config.loss)
        weights = check_class_weights(config.class_weights, classes)
        if not train:
            return MultiLabelLoss()
        return MultiLabelLoss(name, config.label_smoothing, weights)

    def mixer(self, config: "TrainConfig", classes: list[str]):
        """Mixup and cutmix of training batches: the tags' targets mix as the images do."""
        from prep.builtin_tasks.classification.mixing import BatchMixer

        return BatchMixer(len(classes), config.mixup, config.cutmix, config.mix_prob, config.mix_switch_prob, config.mix_off_epoch)

    def metrics(self, classes: list[str], *, train: bool):
        from prep.builtin_tasks.multilabel.metrics import MultiLabelMetrics

        return MultiLabelMetrics(len(classes), train, self.thresholds.values if self.thresholds else None)

    def model_state(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The validation's tuned thresholds, kept in the checkpoint."""
        return {"thresholds_f1": metrics.get("thresholds_f1"), "thresholds_f2": metrics.get("thresholds_f2")}

    def pictures(self, records: list[dict[str, Any]], classes: list[str], run_dir: Path) -> list[Path]:
        from prep.builtin_tasks.multilabel.plots import plot_tags
        from prep.engine.plots import best_record, plot_curves, training_loss_note

        written = [plot_curves(
            records, run_dir / "curves.png", metric="map", title="mean average precision", suptitle=run_dir.name,
            train_loss_note=training_loss_note(run_dir),
        )]
        shown, which = best_record(records)
        if shown.get("per_tag_ap") is not None:
            report = self.report({**_unprefixed(shown), "classes": classes}, classes)
            written.append(plot_tags(report, run_dir / "tags.png", title=f"{run_dir.name}\n{which} (threshold 0.5)"))
        return written

    # -- prep evaluate --------------------------------------------------------------------------

    def evaluation_dataset(self, folder: Path, split: str | None, *, classes: list[str], transform: Any, decode_side: int | None):
        """A split dataset's ``--split`` (default valid, else test), or one split's folder
        (``images/`` and ``labels.csv``) as it is; and the name of what was read."""
        from prep.builtin_tasks.multilabel.heldout import evaluation_index
        from prep.data.datasets import MultiLabelDataset

        index, name = evaluation_index(folder, split)
        return MultiLabelDataset(index, name, transform=transform, classes=classes, decode_side=decode_side), name

    def report(self, metrics: dict[str, Any], classes: list[str]) -> dict[str, Any]:
        """The result with each tag's ``precision``, ``recall``, ``f1``, ``ap``, ``images``,
        ``predicted`` (images given it) and ``threshold`` under ``per_tag``."""
        thresholds = self.thresholds.values if self.thresholds else (0.5,) * len(classes)
        per_tag = {}
        for i, name in enumerate(classes):
            precision, recall = metrics["per_tag_precision"][i], metrics["per_tag_recall"][i]
            f1 = None
            if precision is not None and recall is not None:
                f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            elif recall is not None:
                f1 = 0.0  # the tag was never predicted
            per_tag[name] = {
                "precision": precision, "recall": recall, "f1": f1, "ap": metrics["per_tag_ap"][i],
                "images": metrics["per_tag_images"][i], "predicted": metrics["per_tag_predicted"][i], "threshold": thresholds[i],
            }
        for key in ("per_tag_precision", "per_tag_recall", "per_tag_ap", "per_tag_images", "per_tag_predicted", "thresholds_f1", "thresholds_f2"):
            metrics.pop(key, None)
        metrics["per_tag"] = per_tag
        metrics["thresholds"] = self.thresholds.source if self.thresholds else "0.5"
        return metrics

    def report_lines(self, report: dict[str, Any]) -> list[str]:
        """The result in words: the scores, then a line per tag."""
        lines = [
            f"{report['split']}: F2 {_number(report['f2'])}, F1 {_number(report['f1'])} (per image), macro F1 "
            f"{_number(report['macro_f1'])}, mAP {_number(report['map'])}, loss {report['loss']:.4f} over {report['images']} images; "
            f"thresholds {report['thresholds']}"
        ]
        for name, scores in report["per_tag"].items():
            if not scores["images"]:
                lines.append(f"  {name}: not in {report['split']} (no images), precision {_number(scores['precision'])}")
            else:
                lines.append(
                    f"  {name}: F1 {_number(scores['f1'])}, precision {_number(scores['precision'])}, recall {_number(scores['recall'])}, "
                    f"AP {_number(scores['ap'])} ({scores['images']} images, threshold {scores['threshold']:.3f})"
                )
        if report.get("tags_png"):
            lines.append(f"Per-tag scores: {report['tags_png']}")
        return lines

    def draw_evaluation(self, report: dict[str, Any], *, path: Path, title: str, **_: Any) -> Path:
        """Each tag's F1, precision and recall, and its right and wrong answers."""
        from prep.builtin_tasks.multilabel.plots import plot_tags

        return plot_tags(report, path, title=title)

    # -- prep predict ---------------------------------------------------------------------------

    def predict(self, request) -> dict[str, Any]:
        """Each image's tag probabilities and tags (CSV), or Kaggle's ``image_name,tags``."""
        from prep.builtin_tasks.multilabel.predict import predict_tags

        return predict_tags(request, model_thresholds(request.state, request.options.threshold))


def _unprefixed(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics record's validation numbers without their ``valid_`` prefix, with its tables."""
    numbers = {key.removeprefix("valid_"): value for key, value in record.items() if key.startswith("valid_")}
    return {**record, **numbers}


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


@hookimpl
def register_tasks(register) -> None:
    register(MULTILABEL, MultiLabelTask())
