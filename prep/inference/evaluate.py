"""``evaluate_checkpoint``: the function behind ``prep evaluate``, a trained model's metrics on
held-out images, for any task.

The task decides what differs (``prep.engine.task.Task``'s optional methods): how a held-out
folder is read (``evaluation_dataset``; without it, a split of a split dataset), how the
metrics become a report (``report``, the per-class table), and the picture
(``draw_evaluation``, or the task's ``examples``). Everything else is the same for every task:
the checkpoint's model, decoded as its validation was, through the engine's ``validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.errors import DatasetNotFoundError

if TYPE_CHECKING:
    from prep.engine.task import Task


def evaluate_checkpoint(
    checkpoint: "Path | list[Path]", root: Path, split: str | None = None, *, tta: str = "none", batch_size: int = 64,
    workers: int | None = None, device: str | None = None, out_png: Path | None = None, complete_folds: bool = False,
    cam_png: Path | None = None, threshold: float | None = None,
) -> dict[str, Any]:
    """The task's metrics on held-out images, with the loss: ``split``, ``images``, ``tta``,
    ``loss``, the task's numbers and ``classes`` (classification: accuracy ``acc``,
    ``top5_acc`` with more than five classes, ``per_class`` class name -> ``recall``,
    ``precision`` and ``images``, and the ``confusion`` matrix; segmentation: ``dice``,
    ``iou``, ``image_dice``, ``pixel_acc`` and ``per_class``, class name -> ``dice`` and
    ``iou``).

    ``root`` is what the task's ``evaluation_dataset`` reads (classification: a split dataset,
    a split holding only ``valid/`` or ``test/``, or bare class folders), else a split
    dataset. ``split`` None means ``valid``, else ``test``. ``tta="flip"`` averages each
    image's prediction with its mirror image's. With ``out_png``, the task's picture is
    written there, and its path reported under ``<picture>_png`` (``confusion_png``,
    ``examples_png``). With ``cam_png``, the task's Grad-CAM picture of one model is written
    there (``cam_png``, ``cam_layer``), after a check, before anything is evaluated, that
    the model has a convolutional map to explain. ``threshold``: a multi-label model's
    decision threshold for every tag (None: its tuned thresholds).

    Raises:
        DatasetNotFoundError: no such folder or split, or no images in it.
        UnknownClassError: a class folder the model was not trained on.
        TaskMismatchError: a dataset of another layout than the model's task reads.
        UsageError: an unknown ``tta``, a split asked of bare class folders, or ``cam_png``
            for an ensemble or a task without ``draw_cam``.
        CamError: ``cam_png`` for a model without a convolutional map (a vision transformer).
    """
    from prep.data.loader import create_loader
    from prep.data.resolution import source_side
    from prep.engine.epoch import validate
    from prep.engine.distributed import pick_device
    from prep.inference.checkpoints import eval_transform, model_task, peek_checkpoint
    from prep.inference.ensemble import check_members, load_ensemble, resolve_members
    from prep.inference.tta import check_tta, with_tta
    from prep.train.options import config_from_data
    from prep.train.prepare import collate_registration

    check_tta(tta)
    target = pick_device(device)
    members = resolve_members(checkpoint if isinstance(checkpoint, list) else [checkpoint], complete_folds)
    peeked = [peek_checkpoint(member) for member in members]
    check_members(members, peeked)  # before any model is loaded
    model_task(peeked[0], threshold)  # a --threshold the model cannot take, too
    if cam_png is not None:
        check_cam(peeked)
    model, state = load_ensemble(members, device)
    checkpoint = members[0]
    task = model_task(state, threshold)
    layer = cam_layer(model, state, target) if cam_png is not None else None
    classes = state["classes"]
    transform = eval_transform(state, task.layout)
    dataset, split = held_out_dataset(task, state, root, split, transform=transform, decode_side=source_side(transform))
    if not len(dataset):
        raise DatasetNotFoundError(f"No images to evaluate on in {root} ({split})")
    collate = collate_registration(task.collate, classes)
    loader = create_loader(dataset, batch_size, train=False, collate_fn=collate.call, collate_origin=collate.origin, workers=workers, device=target)
    loss_fn = task.loss(config_from_data(state.get("config", {})), classes, train=False)
    loss, computed, images = validate(with_tta(model, tta, getattr(task, "scores", "softmax")), loader, task, loss_fn, classes, state["mean"], state["std"], target)
    metrics = {"split": split, "images": images, "tta": tta, "models": len(members), "loss": loss, **computed, "classes": classes}
    if hasattr(task, "report"):
        metrics = task.report(metrics, classes)
    if out_png is not None:
        models = f"{checkpoint.parent.name}/{checkpoint.name}" if len(members) == 1 else f"an ensemble of {len(members)} models ({checkpoint.parent.parent.name})"
        title = f"{models} on {split}" + (" (flip TTA)" if tta == "flip" else "")
        picture = picture_name(task)
        if picture is not None:
            out_png.parent.mkdir(parents=True, exist_ok=True)  # only once there is something to draw
            drawn = draw_evaluation(task, metrics, model=model, dataset=dataset, state=state, device=target, path=out_png, title=title)
            metrics[f"{picture}_png"] = str(drawn) if drawn else None
    if layer is not None:
        cam_png.parent.mkdir(parents=True, exist_ok=True)
        title = f"{checkpoint.parent.name}/{checkpoint.name} on {split}"
        metrics.update(task.draw_cam(
            model=model, layer=layer, loader=loader, dataset=dataset, classes=classes, mean=state["mean"], std=state["std"],
            device=target, path=cam_png, title=title,
        ))
    return metrics


def check_cam(peeked: list[dict[str, Any]]) -> None:
    """Refuse ``--cam`` for what it cannot explain, before a model is loaded: an ensemble,
    or a task without a Grad-CAM picture.

    Args:
        peeked: the members' checkpoints, as ``peek_checkpoint`` reads them.

    Raises:
        UsageError: either.
    """
    from prep.errors import UsageError
    from prep.inference.checkpoints import model_task

    if len(peeked) > 1:
        raise UsageError(f"--cam explains one model, not an ensemble of {len(peeked)}: give one fold's best.pt")
    task = model_task(peeked[0])
    if not hasattr(task, "draw_cam"):
        raise UsageError(f"--cam: the {task.name} task draws no Grad-CAM picture (classification does)")


def cam_layer(model, state: dict[str, Any], device) -> Any:
    """The model's map Grad-CAM explains, found with one image of the model's size.

    Raises:
        CamError: a model without one.
    """
    import torch

    from prep.inference.cam import find_cam_layer

    side = int(state["options"]["image_size"])
    about = state["options"].get("arch") or "the model"
    return find_cam_layer(model, torch.zeros(1, 3, side, side, device=device), about=about)


def held_out_dataset(task: "Task", state: dict[str, Any], root: Path, split: str | None, *, transform: Any, decode_side: int | None) -> tuple[Any, str]:
    """The dataset to evaluate on, and its name for reports: the task's own reading of a
    held-out folder when it has one, else ``split`` (default ``valid``) of a split dataset
    whose layout the task reads."""
    from prep.data.index import DatasetIndex
    from prep.layout import canonical_split_name

    classes = state["classes"]
    if hasattr(task, "evaluation_dataset"):
        return task.evaluation_dataset(root, split, classes=classes, transform=transform, decode_side=decode_side)
    index = DatasetIndex.of(root)
    check_layout(task, index)
    name = canonical_split_name(split or "valid")
    return task.dataset(index, name, classes=classes, transform=transform, decode_side=decode_side), name


def check_layout(task: "Task", index: "DatasetIndex") -> None:
    """Refuse a dataset of another layout than the model's task reads (when it is one prep
    knows, ``prep.layout.LAYOUT_SHAPES``).

    Raises:
        TaskMismatchError: naming both.
    """
    from prep.errors import TaskMismatchError
    from prep.layout import LAYOUT_SHAPES

    if task.layout in LAYOUT_SHAPES and index.kind != task.layout:
        raise TaskMismatchError(
            f"The model is a {task.name} model, but {index.root} is a {index.kind} dataset (its train split has "
            f"{LAYOUT_SHAPES.get(index.kind, index.kind)}, not {LAYOUT_SHAPES[task.layout]})"
        )


def picture_name(task: "Task") -> str | None:
    """What the task's evaluation picture is called (``confusion``, ``examples``): the default
    file's stem and the report's key; None when the task draws none."""
    if hasattr(task, "draw_evaluation"):
        return getattr(task, "evaluation_picture", "evaluation")
    return "examples" if hasattr(task, "examples") else None


def draw_evaluation(task: "Task", report: dict[str, Any], *, model, dataset, state: dict[str, Any], device, path: Path, title: str) -> Path | None:
    """The task's picture of an evaluation at ``path``: its ``draw_evaluation``, else its
    ``examples`` (predictions on a few samples)."""
    if hasattr(task, "draw_evaluation"):
        return task.draw_evaluation(report, model=model, dataset=dataset, mean=state["mean"], std=state["std"], device=device, path=path, title=title)
    return task.examples(model, dataset, state["classes"], state["mean"], state["std"], device, path)
