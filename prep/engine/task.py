"""What a task (classification, segmentation, ...) gives the engine; the engine knows no other.

The training loop runs steps, sums what the metrics ask it to sum, and saves. Everything
that depends on the kind of problem comes from a ``Task``: the dataset of a split, the
collate function, the default loss, the metric accumulators, the number to monitor and its
direction, and the pictures at the end of a run. Tasks are registered by name through the
``register_tasks`` hook (``classification`` is built in) and a trainer names its task.

The keys of a metrics record (``metrics.jsonl``, TensorBoard, ``on_epoch_end``):

* the engine's own: ``epoch``, ``step``, ``train_loss``, ``valid_loss``, ``lr``,
  ``images_per_s``, ``backbone_frozen``;
* the task's: every number its metrics compute, prefixed by the phase (``acc`` becomes
  ``train_acc`` and ``valid_acc``), and the lists and tables of the validation phase under
  their own names (``per_class_acc``, ``confusion``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

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

    Three methods are optional, and used when present:

    * ``prepare(root, progress)``: read what the task needs from the dataset, once, before
      ``classes`` is asked, drawing its progress (segmentation reads every mask);
    * ``monitor_for(classes) -> str``: the monitored key when it depends on the classes
      (segmentation monitors ``valid_dice`` for two classes, ``valid_iou`` for more);
    * ``examples(model, dataset, classes, mean, std, device, path) -> Path | None``: a PNG
      at ``path`` of the model's predictions on a few samples of ``dataset`` (decoded as for
      validation): ``examples.png`` at the end of ``prep train``, and ``prep evaluate``'s picture.
    """

    name: str
    layout: str
    collate: str
    metric_names: tuple[str, ...]
    monitor: str
    mode: str

    def classes(self, root: Path) -> list[str]:
        """The class names of a split dataset, in the order of the model's outputs."""

    def dataset(self, root: Path, split: str, *, classes: list[str], transform: Any, decode_side: int | None) -> Any:
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
