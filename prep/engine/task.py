"""What a task (classification, segmentation, ...) gives the engine; the engine knows no other.

The training loop runs steps, sums what the metrics ask it to sum, and saves. Everything
that depends on the kind of problem comes from a ``Task``: the dataset of a split, the
collate function, the default loss, the metric accumulators, the number to monitor and its
direction, and the pictures at the end of a run. Tasks are registered by name through the
``register_tasks`` hook (``classification``, ``multilabel`` and ``segmentation`` are built in, and register
exactly as a plugin's do) and a trainer names its task. What ``prep evaluate`` and ``prep
predict`` do with a task's model is the task's too (its optional methods, below), so a
plugin's task is trained, evaluated and predicted with no change to prep.

The keys of a metrics record (``metrics.jsonl``, TensorBoard, ``on_epoch_end``):

* the engine's own: ``epoch``, ``step``, ``train_loss``, ``valid_loss``, ``lr`` (the
  head's learning rate at the epoch's start), ``images_per_s``, ``backbone_frozen``,
  ``improved`` (true when ``best.pt`` took this epoch's weights); with ``--ema``, the
  averaged weights' validation numbers, prefixed ``ema_`` (``ema_valid_loss``,
  ``ema_valid_acc``);
* the task's: every number its metrics compute, prefixed by the phase (``acc`` becomes
  ``train_acc`` and ``valid_acc``), and the lists and tables of the validation phase under
  their own names (``per_class_acc``, ``confusion``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from prep.data.index import DatasetIndex
    from prep.engine.config import TrainConfig

# A loss: (model outputs, targets) -> a scalar tensor to minimise.
Loss = Callable[[Any, Any], "torch.Tensor"]

MODES = ("max", "min")


@runtime_checkable
class EpochMetrics(Protocol):
    """Accumulates one pass over a loader (a training epoch or a validation), batch by batch.

    Attributes:
        counts: everything measured so far, as tensors of counts or sums. The engine adds
            them up over torchrun's processes before ``compute``, and saves them with an
            epoch that a Ctrl-C cut short, so they must be sums (never averages).
    """

    counts: dict[str, "torch.Tensor"]

    def update(self, outputs: Any, targets: Any) -> None:
        """Add a batch: the model's outputs (detached) and the batch's targets, on the device."""

    def compute(self) -> dict[str, Any]:
        """The pass's metrics from ``counts``: numbers (``None`` when undefined), and lists or
        tables (validation only)."""


class Task(Protocol):
    """A kind of problem, as the engine sees it.

    Attributes:
        name: the name trainers use (``"classification"``).
        layout: the on-disk layout it reads (``prep.layout.CLASSIFICATION`` or
            ``SEGMENTATION``); a dataset of another layout is refused before training.
        collate: the name of the registered collate function for its datasets (validation
            always uses it; training uses it unless the trainer or ``--collate`` names another).
        metric_names: the numbers its metrics compute (``("acc",)``), before the phase prefix.
        monitor: the record key that chooses ``best.pt`` and drives early stopping
            (``"valid_acc"``); ``TrainConfig.monitor`` overrides it.
        mode: ``"max"`` when a larger ``monitor`` is better, else ``"min"``.

    ``root`` is the dataset's ``prep.DatasetIndex``, which lists it once for every part of a
    command; it also works as the dataset's ``Path`` (``root / "train"``, ``os.fspath(root)``
    and every ``Path`` method), so a task written for a Path takes it unchanged. ``split``
    is always a split's name: ``train``, ``valid`` or ``test``.

    Optional, used when present. For ``prep train``:

    * ``prepare(root, progress)``: read what the task needs from the dataset, once, before
      ``classes`` is asked, drawing its progress (segmentation reads every mask);
    * ``monitor_for(classes) -> str``: the monitored key when it depends on the classes
      (segmentation monitors ``valid_dice`` for two classes, ``valid_iou`` for more);
    * ``sample_classes(root, split, classes) -> list[tuple[int, ...]]``: the classes each
      sample of ``dataset(root, split)`` holds, in its order (classification: its one
      class; segmentation: those its mask holds): ``--sampler balanced`` draws by them, and
      the run's header names a class the validation split lacks;
    * ``class_counts(root, classes) -> list[int]`` with ``count_unit`` (``images``,
      ``pixels``): the training split's samples per class, for ``--class-weights auto`` and
      to tell an imbalanced split (``prep.stats.balance``);
    * ``defaults_for_imbalance(classes) -> dict``: ``TrainConfig`` settings for an
      imbalanced training split, applied where the user gave no option (classification:
      ``monitor`` ``valid_balanced_acc`` and ``class_weights`` ``auto``);
    * ``model_state(metrics) -> dict``: what a trained model needs of the validation pass
      that made it ``best.pt`` (``metrics``: that pass's, of the weights best.pt holds),
      kept in its checkpoints as ``task_state`` (multilabel: each tag's tuned threshold);
    * ``auto_class_weights(root, classes, counts) -> list[float]``: what ``--class-weights
      auto`` means for the task (default: ``prep.stats.balance.auto_class_weights``);
    * ``mixer(config, classes)``: the mixing of training batches that ``--mixup`` and
      ``--cutmix`` ask for, called on the device as ``mixer(images, targets, rng) ->
      (images, targets)`` with ``mixer.active(epoch)`` (without it, those options are
      refused for the task);
    * ``examples(model, dataset, classes, mean, std, device, path) -> Path | None``: a PNG
      at ``path`` of the model's predictions on a few samples of ``dataset`` (decoded as for
      validation): ``examples.png`` at the end of ``prep train``, and ``prep evaluate``'s
      picture when the task has no ``draw_evaluation``.

    For ``prep evaluate`` and ``prep predict``, and the models of a cross-validation:

    * ``for_model(state, threshold=None) -> Task``: the task as a trained model uses it,
      given the checkpoint's state (multilabel: with the model's tuned thresholds, or
      ``threshold`` for every tag); without it, ``--threshold`` is refused for the task
      in evaluate;
    * ``scores``: how the model's outputs become probabilities when TTA or an ensemble
      averages them: ``"softmax"`` (the default: over the channels, or the sigmoid of a
      single logit) or ``"sigmoid"`` (each output on its own, multilabel).

    For ``prep evaluate`` (``prep.inference.evaluate``); without them, evaluate reads the
    ``--split`` (default ``valid``) of a split dataset, reports the validation metrics as
    computed, and prints their numbers:

    * ``evaluation_dataset(folder, split, *, classes, transform, decode_side) -> (dataset,
      name)``: read a held-out folder the task's own way (classification: bare class
      folders too); ``split`` is ``--split`` or None;
    * ``report(metrics, classes) -> dict``: evaluate's result, reshaped (classification puts
      each class's recall, precision and images under ``per_class``);
    * ``report_lines(report) -> list[str]``: the result in words, as ``prep evaluate`` prints it;
    * ``draw_evaluation(report, *, model, dataset, mean, std, device, path, title) -> Path``,
      with ``evaluation_picture`` (the picture's name: ``confusion``): the picture, written
      by default to ``<evaluation_picture>.png`` and reported as ``<evaluation_picture>_png``;
    * ``draw_cam(*, model, layer, loader, dataset, classes, mean, std, device, path, title) ->
      dict``: ``prep evaluate --cam``'s Grad-CAM picture at ``path`` (``layer``: the
      ``prep.inference.cam.CamLayer`` found in the model; ``loader`` reads ``dataset`` in
      order, collated); returns ``cam_png`` and ``cam_layer`` for the report. Without it,
      ``--cam`` is refused for the task.

    For ``prep train --fold all`` (``prep.crossval``):

    * ``out_of_fold_rows(outputs, targets, classes) -> list[dict]``: a row per held-out image
      of a batch, the columns of ``oof.csv`` after ``path`` and ``fold`` (keys starting with
      ``_`` are kept in memory only, for ``label_suspects``);
    * ``out_of_fold_score(rows, classes) -> dict``: numbers from all the rows, added to the
      out-of-fold score (which is otherwise the task's validation metrics over every fold's
      held-out images);
    * ``label_suspects(rows, classes, *, root, out_dir) -> dict``: write ``suspects.csv`` (and
      a picture) of the training images whose labels look wrong; return ``count`` and ``about``.

    For ``prep predict`` (``prep.inference.predict``):

    * ``predict(request) -> dict``: write the predictions of ``request.files`` (a
      ``prep.PredictRequest``: the checkpoint's state, the options, the model on first use)
      and return ``request.report(written, what, out)``. Without it, a model whose outputs
      are class scores (``N x classes``) gets a CSV of class probabilities (or a two-class
      Kaggle submission); any other is refused with one line.
    """

    name: str
    layout: str
    collate: str
    metric_names: tuple[str, ...]
    monitor: str
    mode: str

    def classes(self, root: "DatasetIndex") -> list[str]:
        """The class names of a split dataset, in the order of the model's outputs."""

    def dataset(self, root: "DatasetIndex", split: str, *, classes: list[str], transform: Any, decode_side: int | None) -> Any:
        """The torch dataset of one split (``train``, ``valid`` or ``test``)."""

    def targets(self, batch: Any, classes: list[str], origin: str) -> Any:
        """The targets of a batch from a collate function, after checking that they are what
        this task's losses and metrics take; raise ``PluginError`` naming ``origin`` if not."""

    def loss(self, config: "TrainConfig", classes: list[str], *, train: bool) -> Loss:
        """The loss of training (``train``; a trainer may supply its own instead) or of
        validation (always this one, so that ``valid_loss`` compares across trainers and
        recipes)."""

    def metrics(self, classes: list[str], *, train: bool) -> EpochMetrics:
        """A fresh accumulator: a light one for training, the full one for validation."""

    def pictures(self, records: list[dict[str, Any]], classes: list[str], run_dir: Path) -> list[Path]:
        """PNG files summing up a run from its metrics records, written into ``run_dir``."""
