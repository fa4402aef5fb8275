"""Using a trained model: rebuild it from a checkpoint, evaluate it, predict with it."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.errors import PrepError
from prep.layout import canonical_split_name
from prep.util.progress import NO_PROGRESS, Progress
from prep.train.options import config_from_data, options_from_data

if TYPE_CHECKING:
    from prep.builtin_tasks.segmentation.predict import MaskOptions


def load_model(checkpoint: Path, device: str | None = None):
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode.

    Returns:
        (model, state): the model on ``device``, and the checkpoint's state (classes,
        mean, std, options ...).

    Raises:
        CheckpointError: unreadable or unsafe file. PrepError: it lacks the trainer's options.
    """
    from prep.engine.checkpoint import load_checkpoint, load_model_weights
    from prep.engine.fit import pick_device
    from prep.train.trainer import ModelRequest, split_model
    from prep.train.prepare import trainer_registration

    state = load_checkpoint(checkpoint)
    if "options" not in state:
        raise PrepError(f"{checkpoint} does not say which trainer made it; it was not written by prep train")
    options = options_from_data(state["options"])
    # The checkpoint has the weights.
    request = ModelRequest(tuple(state["classes"]), options.arch, "none", options.image_size)
    model, _ = split_model(trainer_registration(options.plugin).call_method("build_model", request))
    load_model_weights(model, state["model"], checkpoint)
    model.to(pick_device(device)).eval()
    return model, state


def checkpoint_task(checkpoint: Path) -> str:
    """The task of the model in a checkpoint file (read without building the model).

    Raises:
        CheckpointError: unreadable file. PrepError: not written by prep train.
    """
    return model_task(peek_checkpoint(checkpoint))


def peek_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's state, memory-mapped: its options and classes are read, not its weights.

    Raises:
        CheckpointError: unreadable file. PrepError: not written by prep train.
    """
    import torch

    from prep.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint

    try:  # memory-mapped: only the options are read, not the weights
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise CheckpointError(f"No checkpoint at {checkpoint}") from None
    except Exception:
        state = None
    if not isinstance(state, dict) or state.get("prep_checkpoint") != CHECKPOINT_FORMAT:
        state = load_checkpoint(checkpoint)  # says precisely what is wrong with the file
    if "options" not in state:
        raise PrepError(f"{checkpoint} does not say which trainer made it; it was not written by prep train")
    return state


def model_task(state: dict[str, Any]) -> str:
    """The task of the trainer that wrote a checkpoint (``classification``, ``segmentation`` ...)."""
    from prep.train.prepare import trainer_registration

    return trainer_registration(state["options"]["plugin"]).value.task


def _eval_transform(state: dict[str, Any], layout: str = "classification"):
    from prep.augment.presets import build_pipeline

    options = state["options"]
    return build_pipeline(options.get("preset") or "none", options["image_size"], train=False, task=layout)


def evaluate_checkpoint(
    checkpoint: Path, root: Path | None, split: str | None = None, *, tta: str = "none", batch_size: int = 64,
    workers: int | None = None, device: str | None = None, out_png: Path | None = None,
) -> dict[str, Any]:
    """The task's metrics on held-out images, with the loss (classification: accuracy
    ``acc``, ``top5_acc`` with more than five classes, ``per_class`` class name ->
    ``recall``, ``precision`` and ``images``, and the confusion matrix; segmentation:
    ``dice``, ``iou``, ``image_dice``, ``pixel_acc`` and ``per_class``, class name ->
    ``dice`` and ``iou``).

    A classification model reads any folder of class folders (see ``prep.builtin_tasks.classification.heldout``):
    a split dataset, a split holding only ``valid/`` or ``test/``, or bare class folders; a
    segmentation model reads a split dataset. ``root`` None means the dataset the
    checkpoint was trained on, when it is still there, else the working directory's
    (``prep.cli.workspace.resolve_dataset``). ``split`` None means ``valid``, else ``test``.
    ``tta="flip"`` averages each image's prediction with its mirror image's. Writes a PNG
    to ``out_png`` when given: the confusion matrix, or (segmentation) samples with their
    truth and prediction.

    Raises:
        DatasetNotFoundError: no dataset given, recorded or found, or no such split.
        UnknownClassError: a class folder the model was not trained on.
        UsageError: an unknown ``tta``, or a split asked of bare class folders.
    """
    from prep.data.loader import create_loader
    from prep.data.resolution import source_side
    from prep.engine.fit import evaluate, pick_device
    from prep.engine.plots import plot_confusion
    from prep.layout import CLASSIFICATION
    from prep.plugins import collate_fns, tasks
    from prep.inference.tta import check_tta, with_tta

    check_tta(tta)
    target = pick_device(device)
    model, state = load_model(checkpoint, device)
    if root is None:
        from prep.cli.workspace import resolve_dataset

        recorded = Path(state["data"]) if state.get("data") else None
        root = recorded if recorded is not None and (recorded / "train").is_dir() else resolve_dataset(None)
    task = tasks().get(model_task(state))
    classes = state["classes"]
    # Decoded exactly as training's validation was (at the side its pipeline needs), or
    # the figures would drift from the ones the run reported.
    transform = _eval_transform(state, task.layout)
    if task.layout == CLASSIFICATION:
        from prep.builtin_tasks.classification.heldout import evaluation_split

        folder, split = evaluation_split(root, split, classes)
        dataset = task.dataset(root, folder, classes=classes, transform=transform, decode_side=source_side(transform))
    else:
        from prep.train.prepare import task_for, trainer_registration

        task = task_for(state["options"]["plugin"], trainer_registration(state["options"]["plugin"]).value, root)
        split = canonical_split_name(split or "valid")
        dataset = task.dataset(root, split, classes=classes, transform=transform, decode_side=source_side(transform))
    if not len(dataset):
        from prep.errors import DatasetNotFoundError

        raise DatasetNotFoundError(f"No images to evaluate on in {root} ({split})")
    collate = collate_fns().registration(task.collate)
    loader = create_loader(dataset, batch_size, train=False, collate_fn=collate.call, collate_origin=collate.origin, workers=workers, device=target)
    loss_fn = task.loss(config_from_data(state.get("config", {})), classes, train=False)
    loss, computed, images = evaluate(with_tta(model, tta), loader, task, loss_fn, classes, state["mean"], state["std"], target)
    metrics = {"split": split, "images": images, "tta": tta, "loss": loss, **computed, "classes": classes}
    if isinstance(metrics.get("per_class_acc"), list):
        counts = [sum(row) for row in metrics["confusion"]]
        metrics["per_class"] = {
            name: {"recall": recall, "precision": precision, "images": n}
            for name, recall, precision, n in zip(classes, metrics.pop("per_class_acc"), metrics.pop("per_class_precision"), counts)
        }
    if isinstance(metrics.get("per_class_iou"), list):
        metrics["per_class"] = {
            name: {"dice": dice, "iou": iou}
            for name, dice, iou in zip(classes, metrics.pop("per_class_dice"), metrics.pop("per_class_iou"))
        }
    if out_png is not None and "confusion" in metrics:
        title = f"{checkpoint.parent.name}/{checkpoint.name} on {split}" + (" (flip TTA)" if tta == "flip" else "")
        metrics["confusion_png"] = str(plot_confusion(metrics["confusion"], classes, out_png, title=title))
    elif out_png is not None and hasattr(task, "examples"):
        written = task.examples(model, dataset, classes, state["mean"], state["std"], target, out_png)
        metrics["examples_png"] = str(written) if written else None
    return metrics


def image_files(inputs: list[Path]) -> list[Path]:
    """The image files among ``inputs``; folders are searched, sorted.

    Raises:
        PrepError: an input that does not exist, or no images at all.
    """
    from prep.layout import is_image_name, is_junk

    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and is_image_name(p.name) and not is_junk(p.name))
        elif item.is_file():
            files.append(item)
        else:
            raise PrepError(f"{item} is neither an image nor a folder")
    if not files:
        raise PrepError("No images to predict")
    return files


def predict(checkpoint: Path, inputs: list[Path], *, tta: str = "none", batch_size: int = 64, device: str | None = None) -> tuple[list[str], list[tuple[Path, list[float]]], list[tuple[Path, str]]]:
    """Class probabilities for each image file (directories are searched, sorted); with
    ``tta="flip"`` the average of the image's and its mirror image's.

    An image that cannot be read is skipped, as in training and evaluation, and listed
    with the reason; the others are predicted.

    Returns:
        (classes, [(path, probabilities in class order)], [(skipped path, reason)]).

    Raises:
        PrepError: no images, or none of them readable.
    """
    import torch

    from prep.data.collate import to_device_normalized
    from prep.data.resolution import source_side
    from prep.engine.fit import pick_device
    from prep.images.decode import ImageDecodeError, load_rgb_at_side
    from prep.train.prepare import trainer_registration
    from prep.inference.tta import check_tta, with_tta

    check_tta(tta)
    files = image_files(inputs)
    model, state = load_model(checkpoint, device)
    predictor = with_tta(model, tta)
    task = trainer_registration(state["options"]["plugin"]).value.task
    if task != "classification":
        raise PrepError(f"prep predict writes class probabilities, for classification models; {checkpoint} is a {task} model")
    transform = _eval_transform(state)
    target = pick_device(device)
    side = source_side(transform)  # decoded as in training's validation
    results: list[tuple[Path, list[float]]] = []
    skipped: list[tuple[Path, str]] = []
    with torch.no_grad():
        for start in range(0, len(files), batch_size):
            chunk, pixels = [], []
            for path in files[start : start + batch_size]:
                try:
                    pixels.append(torch.from_numpy(transform(image=load_rgb_at_side(path, side))["image"]))
                    chunk.append(path)
                except ImageDecodeError as exc:
                    skipped.append((path, str(exc)))
            if not chunk:
                continue
            probabilities = predictor(to_device_normalized(torch.stack(pixels), state["mean"], state["std"], target)).float().softmax(dim=1)
            results += list(zip(chunk, probabilities.cpu().tolist()))
    if not results:
        raise PrepError(f"None of the {len(files)} images could be read (first: {skipped[0][1]})")
    return state["classes"], results, skipped


def refuse_existing(path: Path) -> Path:
    """``path``, when nothing is there yet: predictions never replace a file.

    Raises:
        TargetExistsError: the file exists.
    """
    from prep.errors import TargetExistsError

    if path.exists():
        raise TargetExistsError(f"{path} already exists; choose another --out or move it away")
    return path


def positive_class(classes: list[str], positive: str | None) -> int:
    """The index of the class whose probability a two-class Kaggle submission holds:
    ``positive``, else ``dog`` (dogs-vs-cats).

    Raises:
        UsageError: not two classes, or no such class.
    """
    from prep.errors import UsageError

    if len(classes) != 2:
        raise UsageError(f"--kaggle-submission needs a two-class model; this one has {len(classes)}")
    wanted = positive or "dog"
    if wanted not in classes:
        hint = f"--positive {positive} is not one of" if positive else "It writes P(dog), but there is no dog among"
        raise UsageError(f"{hint} the model's classes {', '.join(classes)}; name the class with --positive CLASS")
    return classes.index(wanted)


def check_clip(clip: float) -> float:
    """``clip`` when it leaves a probability range to write.

    Raises:
        UsageError: below 0, or 0.5 and above.
    """
    from prep.errors import UsageError

    if not 0 <= clip < 0.5:
        raise UsageError(f"--clip must be at least 0 and below 0.5, not {clip:g}")
    return clip


def write_predictions(
    path: Path, classes: list[str], results: list[tuple[Path, list[float]]], *, kaggle_submission: bool = False,
    positive: str | None = None, clip: float = 0.0,
) -> Path:
    """CSV of ``file,label,<p(class)>...``; or, with ``kaggle_submission``, Kaggle's
    ``id,label`` with label = P(positive class, default ``dog``). ``clip`` keeps every
    probability within [clip, 1 - clip]: log loss punishes a confident 0 or 1 without end.
    Written whole or not at all; an existing file is never replaced.

    Raises:
        UsageError: a submission for a model that is not two-class or lacks the class, or
            a clip outside [0, 0.5).
        TargetExistsError: ``path`` exists.
    """
    from prep.util.files import atomic_write_bytes

    check_clip(clip)
    refuse_existing(path)

    def shown(p: float) -> str:
        return f"{min(max(p, clip), 1 - clip):.6f}"

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if kaggle_submission:
        index = positive_class(classes, positive)
        writer.writerow(["id", "label"])
        for image, probabilities in results:
            writer.writerow([image.stem, shown(probabilities[index])])
    else:
        writer.writerow(["file", "label", *classes])
        for image, probabilities in results:
            best = max(range(len(classes)), key=probabilities.__getitem__)
            writer.writerow([str(image), classes[best], *(shown(p) for p in probabilities)])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))
    return path


def predict_segmentation(
    checkpoint: Path, inputs: list[Path], out: Path, *, kaggle_submission: bool = False, rle_order: str = "row",
    options: "MaskOptions | None" = None, batch_size: int = 8, device: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """Masks for images at their own size: PNG files under the folder ``out``, or (with
    ``kaggle_submission``) Kaggle's ``img,rle_mask`` CSV at ``out``.

    Returns:
        ``written`` (masks or rows), ``out``, ``skipped`` (``[file, reason]``), ``classes``.

    Raises:
        PrepError: no images, none readable, or a model of another task.
        TargetExistsError: a mask file exists already (nothing is written then).
        UsageError: bad options, or a submission from a model that is not binary.
    """
    import numpy as np

    from prep.engine.fit import pick_device
    from prep.masks.class_table import parse_class_table
    from prep.errors import UsageError
    from prep.masks.write import SUBMISSION_NEEDS_BINARY, mask_destinations, write_mask, write_submission
    from prep.masks.overlay import class_colours
    from prep.builtin_tasks.segmentation.predict import MaskOptions, predict_masks

    options = options or MaskOptions()
    options.check()
    if kaggle_submission:
        refuse_existing(out)
    files = image_files(inputs)
    model, state = load_model(checkpoint, device)
    if model_task(state) != "segmentation":
        raise PrepError(f"{checkpoint} is a {model_task(state)} model; masks come from segmentation models")
    classes = state["classes"]
    table = parse_class_table(state["class_table"], f"{checkpoint}'s class table") if state.get("class_table") else None
    ids = list(table.ids) if table is not None else list(range(len(classes)))
    colours = class_colours(len(classes), table.colours if table is not None else None)
    skipped: list[tuple[str, str]] = []
    binary = len(classes) == 2
    if kaggle_submission and not binary:
        raise UsageError(SUBMISSION_NEEDS_BINARY)
    destinations = {} if kaggle_submission else mask_destinations(files, inputs, out)
    with progress.task("Predicting masks", len(files)) as advance:
        masks = predict_masks(
            model, files, image_size=state["options"]["image_size"], mean=state["mean"], std=state["std"],
            transform=_eval_transform(state, "segmentation"), device=pick_device(device), options=options,
            batch_size=batch_size, on_skip=lambda path, reason: skipped.append((str(path), reason)), advance=advance,
        )
        if kaggle_submission:
            written = write_submission(out, masks, binary, rle_order)
        else:
            written = 0
            for file, indices in masks:
                write_mask(destinations[file], np.asarray(indices), ids, colours)
                written += 1
    if not written:
        raise PrepError(f"None of the {len(files)} images could be read (first: {skipped[0][1]})")
    return {"written": written, "out": str(out), "skipped": skipped, "classes": classes}
