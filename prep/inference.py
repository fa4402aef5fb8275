"""Using a trained model: rebuild it from a checkpoint, evaluate it, predict with it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from prep.errors import PrepError
from prep.run_config import config_from_data, options_from_data


def load_model(checkpoint: Path, device: str | None = None):
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode.

    Returns:
        (model, state): the model on ``device``, and the checkpoint's state (classes,
        mean, std, options ...).

    Raises:
        CheckpointError: unreadable or unsafe file. PrepError: it lacks the trainer's options.
    """
    from prep.engine.checkpoint import load_checkpoint, load_model_weights
    from prep.engine.loop import pick_device
    from prep.trainer import ModelRequest, split_model
    from prep.training import trainer_registration

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


def _eval_transform(state: dict[str, Any], layout: str = "classification"):
    from prep.augment.presets import build_pipeline

    options = state["options"]
    return build_pipeline(options["preset"], options["image_size"], train=False, task=layout)


def evaluate_checkpoint(checkpoint: Path, root: Path | None, split: str = "valid", *, batch_size: int = 64, workers: int | None = None, device: str | None = None, out_png: Path | None = None) -> dict[str, Any]:
    """The task's metrics on a split, with the loss (classification: accuracy ``acc``,
    per-class accuracy and the confusion matrix).

    ``root`` None means the dataset the checkpoint was trained on, when it is still there,
    else the working directory's (``prep.workspace.resolve_dataset``). Writes the confusion
    matrix as PNG to ``out_png`` when given.

    Raises:
        DatasetNotFoundError: no dataset given, recorded or found.
    """
    from prep.data.loader import create_loader
    from prep.engine.loop import evaluate, pick_device
    from prep.engine.plots import plot_confusion
    from prep.plugins import collate_fns
    from prep.training import trainer_registration, task_for

    target = pick_device(device)
    model, state = load_model(checkpoint, device)
    trainer = trainer_registration(state["options"]["plugin"]).value
    if root is None:
        from prep.workspace import resolve_dataset

        recorded = Path(state["data"]) if state.get("data") else None
        root = recorded if recorded is not None and (recorded / "train").is_dir() else resolve_dataset(None)
    # Decoded exactly as in training (including reduced-scale JPEG decoding), or the
    # figures would drift from the ones the run reported.
    task = task_for(state["options"]["plugin"], trainer, root)
    classes = state["classes"]
    dataset = task.dataset(root, split, classes=classes, transform=_eval_transform(state, task.layout), decode_min_side=state["options"]["image_size"])
    collate = collate_fns().registration(task.collate)
    loader = create_loader(dataset, batch_size, train=False, collate_fn=collate.call, collate_origin=collate.origin, workers=workers, device=target)
    loss_fn = task.loss(config_from_data(state.get("config", {})), classes, train=False)
    loss, computed, images = evaluate(model, loader, task, loss_fn, classes, state["mean"], state["std"], target)
    metrics = {"split": split, "images": images, "loss": loss, **computed, "classes": classes}
    if isinstance(metrics.get("per_class_acc"), list):
        metrics["per_class_acc"] = dict(zip(classes, metrics["per_class_acc"]))
    if out_png is not None and "confusion" in metrics:
        metrics["confusion_png"] = str(plot_confusion(metrics["confusion"], classes, out_png))
    return metrics



def predict(checkpoint: Path, inputs: list[Path], *, batch_size: int = 64, device: str | None = None) -> tuple[list[str], list[tuple[Path, list[float]]], list[tuple[Path, str]]]:
    """Class probabilities for each image file (directories are searched, sorted).

    An image that cannot be read is skipped, as in training and evaluation, and listed
    with the reason; the others are predicted.

    Returns:
        (classes, [(path, probabilities in class order)], [(skipped path, reason)]).

    Raises:
        PrepError: no images, or none of them readable.
    """
    import torch

    from prep.data.collate import to_device_normalized
    from prep.engine.loop import pick_device
    from prep.images import ImageDecodeError, load_rgb
    from prep.layout import is_image_name
    from prep.training import trainer_registration

    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and is_image_name(p.name) and not p.name.startswith("."))
        elif item.is_file():
            files.append(item)
        else:
            raise PrepError(f"{item} is neither an image nor a folder")
    if not files:
        raise PrepError("No images to predict")
    model, state = load_model(checkpoint, device)
    task = trainer_registration(state["options"]["plugin"]).value.task
    if task != "classification":
        raise PrepError(f"prep predict writes class probabilities, for classification models; {checkpoint} is a {task} model")
    transform = _eval_transform(state)
    target = pick_device(device)
    size = state["options"]["image_size"]  # decoded as in training
    results: list[tuple[Path, list[float]]] = []
    skipped: list[tuple[Path, str]] = []
    with torch.no_grad():
        for start in range(0, len(files), batch_size):
            chunk, pixels = [], []
            for path in files[start : start + batch_size]:
                try:
                    pixels.append(torch.from_numpy(transform(image=load_rgb(path, size))["image"]))
                    chunk.append(path)
                except ImageDecodeError as exc:
                    skipped.append((path, str(exc)))
            if not chunk:
                continue
            probabilities = model(to_device_normalized(torch.stack(pixels), state["mean"], state["std"], target)).float().softmax(dim=1)
            results += list(zip(chunk, probabilities.cpu().tolist()))
    if not results:
        raise PrepError(f"None of the {len(files)} images could be read (first: {skipped[0][1]})")
    return state["classes"], results, skipped


def write_predictions(path: Path, classes: list[str], results: list[tuple[Path, list[float]]], *, kaggle_submission: bool = False) -> Path:
    """CSV of ``file,label,<p(class)>...``; or, for Kaggle's dogs-vs-cats, ``id,label`` with
    label = P(dog) (P of the second class when there is no ``dog``).

    Raises:
        PrepError: a Kaggle submission for a model that is not two-class.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        if kaggle_submission:
            if len(classes) != 2:
                raise PrepError(f"--kaggle-submission needs a two-class model; this one has {len(classes)}")
            positive = classes.index("dog") if "dog" in classes else 1
            writer.writerow(["id", "label"])
            for image, probabilities in results:
                writer.writerow([image.stem, f"{probabilities[positive]:.6f}"])
        else:
            writer.writerow(["file", "label", *classes])
            for image, probabilities in results:
                best = max(range(len(classes)), key=probabilities.__getitem__)
                writer.writerow([str(image), classes[best], *(f"{p:.6f}" for p in probabilities)])
    return path
