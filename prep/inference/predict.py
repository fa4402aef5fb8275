"""``predict_images``: the function behind ``prep predict``, a trained model's predictions for
image files, for any task.

A task with a ``predict`` method writes its own (segmentation: masks, or a run-length
submission; see ``prep.engine.task.Task``). Any other task's model is taken to output class
scores, ``N x classes`` logits, as a classifier's do: prep writes each image's class
probabilities (softmax) to a CSV, or a two-class Kaggle submission of one class's
probability. A model whose outputs are not class scores is refused with one line that says so.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.errors import PrepError, TargetExistsError, UsageError
from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PredictOptions:
    """What ``prep predict`` was asked. Each task reads the options that apply to it.

    Attributes:
        out: the file or folder to write (None: the task's default).
        kaggle_submission: the competition's submission format instead of prep's own.
        tta: ``none`` or ``flip`` (average each prediction with the mirror image's).
        batch_size: images per forward pass. device: where to run (None: CUDA when present).
        positive, clip: class scores: the class whose probability a two-class submission
            holds (default ``dog``), and the bounds [clip, 1 - clip] probabilities are kept in.
        threshold: a binary segmentation's foreground threshold (None: 0.5), or every tag's
            of a multi-label model (None: the thresholds tuned on its validation split).
        tile, overlap, rle_order: segmentation (see ``prep predict --help``).
        complete_folds: a cross-validation missing a fold predicts with its complete folds
            instead of refusing.
    """

    out: Path | None = None
    kaggle_submission: bool = False
    tta: str = "none"
    batch_size: int = 64
    device: str | None = None
    positive: str | None = None
    clip: float = 0.0
    threshold: float | None = None  # None: the task's default (segmentation 0.5; multi-label: the tuned ones)
    tile: int | None = None
    overlap: int = 64
    rle_order: str = "row"
    complete_folds: bool = False  # a cross-validation with a missing fold: predict with the others


@dataclass
class PredictRequest:
    """What a task's ``predict`` receives: the checkpoint, its state (read without its
    weights), the image files and the options. ``model`` loads the model on first use, so
    that a task checks its options before that wait.

    Attributes:
        files: the images, folders searched, sorted. inputs: what the user named (a task
            may mirror its folders in its outputs).
        progress: draws a bar over the images.
    """

    checkpoint: Path
    state: dict[str, Any]
    files: list[Path]
    inputs: list[Path]
    options: PredictOptions
    progress: Progress = NO_PROGRESS
    skipped: list[tuple[str, str]] = field(default_factory=list)
    members: list[Path] = field(default_factory=list)  # an ensemble's checkpoints (``checkpoint`` is the first)

    @cached_property
    def model(self) -> "torch.nn.Module":
        """The checkpoint's model, or the ensemble of ``members`` (``prep.inference.ensemble``)."""
        from prep.inference.ensemble import load_ensemble

        return load_ensemble(self.members or [self.checkpoint], self.options.device)[0]

    @cached_property
    def device(self) -> "torch.device":
        from prep.engine.distributed import pick_device

        return pick_device(self.options.device)

    def eval_transform(self, layout: str) -> Any:
        """The evaluation pipeline of the checkpoint's run (see ``prep.inference.checkpoints``)."""
        from prep.inference.checkpoints import eval_transform

        return eval_transform(self.state, layout)

    def report(self, written: int, what: str, out: Path) -> dict[str, Any]:
        """What ``predict_images`` returns: ``written`` (how many ``what``), ``out``, ``skipped``
        (``[file, reason]`` for each unreadable image) and ``classes``.

        Raises:
            PrepError: nothing was written, because no image could be read.
        """
        if not written:
            raise PrepError(f"None of the {len(self.files)} images could be read (first: {self.skipped[0][1]})")
        return {"written": written, "what": what, "out": str(out), "skipped": self.skipped, "classes": self.state["classes"]}


def predict_images(checkpoint: "Path | list[Path]", inputs: list[Path], options: PredictOptions = PredictOptions(), *, progress: Progress = NO_PROGRESS) -> dict[str, Any]:
    """Predict the images of ``inputs`` (files, and folders searched) with a checkpoint's
    model, through its task's ``predict`` (else as class scores); return what was written
    (``PredictRequest.report``, with ``models``: how many were averaged). An unreadable image
    is skipped and listed; nothing existing is ever replaced.

    ``checkpoint`` may also be a run folder, a cross-validation's folder (every fold's model)
    or a list of these: their models predict as one ensemble (``prep.inference.ensemble``).

    Raises:
        PrepError: no images, or none of them readable; a model whose outputs are not class
            scores and whose task has no ``predict``.
        EnsembleError: models that cannot be averaged, or a cross-validation missing a fold.
        TargetExistsError: an output exists already (nothing is written then).
        UsageError: options that do not fit the model (checked before the model is loaded).
    """
    from prep.inference.checkpoints import model_task, peek_checkpoint
    from prep.inference.tta import check_tta

    from prep.inference.ensemble import check_members, resolve_members

    check_tta(options.tta)
    if options.threshold is not None:
        check_threshold(options.threshold)
    members = resolve_members(checkpoint if isinstance(checkpoint, list) else [checkpoint], options.complete_folds)
    states = [peek_checkpoint(member) for member in members]  # options and classes only
    check_members(members, states)
    state = states[0] if len(states) == 1 else {**states[0], "task_states": [s.get("task_state") for s in states]}
    task = model_task(state)
    request = PredictRequest(members[0], state, image_files(inputs), list(inputs), options, progress, members=members)
    report = task.predict(request) if hasattr(task, "predict") else predict_class_scores(request, task.layout)
    return {**report, "models": len(members)}


def predict_class_scores(request: PredictRequest, layout: str) -> dict[str, Any]:
    """Class probabilities for each image, written as ``write_predictions`` does (default
    ``predictions.csv``): what every task without a ``predict`` of its own gets."""
    options, classes = request.options, request.state["classes"]
    # Everything the options ask is checked before the work, not after it.
    out = refuse_existing(options.out or Path("predictions.csv"))
    check_clip(options.clip)
    if options.threshold is not None:
        raise UsageError("--threshold is for segmentation and multi-label models; a classifier's prediction is its most probable class")
    if options.kaggle_submission:
        positive_class(classes, options.positive)
    results = class_probabilities(request, layout)
    path = write_predictions(out, classes, results, kaggle_submission=options.kaggle_submission, positive=options.positive, clip=options.clip)
    return request.report(len(results), "predictions", path)


def class_probabilities(request: PredictRequest, layout: str, scores: str = "softmax") -> list[tuple[Path, list[float]]]:
    """``(file, probabilities in class order)`` for each readable image, decoded as in the
    run's validation; with ``tta="flip"`` averaged with the mirror image's. ``scores``: the
    softmax over the classes, or (``sigmoid``, multi-label) each output's sigmoid.

    Raises:
        PrepError: the model's outputs are not class scores (``N x classes``).
    """
    import torch

    from prep.data.collate import to_device_normalized
    from prep.data.resolution import source_side
    from prep.images.decode import ImageDecodeError, load_rgb_at_side
    from prep.inference.tta import with_tta

    options, state, classes = request.options, request.state, request.state["classes"]
    transform = request.eval_transform(layout)
    side = source_side(transform)  # decoded as in training's validation
    predictor = with_tta(request.model, options.tta, scores)
    results: list[tuple[Path, list[float]]] = []
    with torch.no_grad(), request.progress.task("Predicting", len(request.files)) as advance:
        for start in range(0, len(request.files), options.batch_size):
            chunk, pixels = [], []
            for path in request.files[start : start + options.batch_size]:
                try:
                    pixels.append(torch.from_numpy(transform(image=load_rgb_at_side(path, side))["image"]))
                    chunk.append(path)
                except ImageDecodeError as exc:
                    request.skipped.append((str(path), str(exc)))
            advance(len(request.files[start : start + options.batch_size]))
            if not chunk:
                continue
            outputs = predictor(to_device_normalized(torch.stack(pixels), state["mean"], state["std"], request.device))
            if not isinstance(outputs, torch.Tensor) or tuple(outputs.shape) != (len(chunk), len(classes)):
                shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
                raise PrepError(
                    f"{request.checkpoint}'s model returns {shape} for {len(chunk)} images, not class scores "
                    f"({len(chunk)} x {len(classes)}); its task needs a predict method to say what to write (see the plugin guide)"
                )
            probabilities = outputs.float().sigmoid() if scores == "sigmoid" else outputs.float().softmax(dim=1)
            results += list(zip(chunk, probabilities.cpu().tolist()))
    return results


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


def refuse_existing(path: Path) -> Path:
    """``path``, when nothing is there yet: predictions never replace a file.

    Raises:
        TargetExistsError: the file exists.
    """
    if path.exists():
        raise TargetExistsError(f"{path} already exists; choose another --out or move it away")
    return path


def positive_class(classes: list[str], positive: str | None) -> int:
    """The index of the class whose probability a two-class Kaggle submission holds:
    ``positive``, else ``dog`` (dogs-vs-cats).

    Raises:
        UsageError: not two classes, or no such class.
    """
    if len(classes) != 2:
        raise UsageError(f"--kaggle-submission needs a two-class model; this one has {len(classes)}")
    wanted = positive or "dog"
    if wanted not in classes:
        hint = f"--positive {positive} is not one of" if positive else "It writes P(dog), but there is no dog among"
        raise UsageError(f"{hint} the model's classes {', '.join(classes)}; name the class with --positive CLASS")
    return classes.index(wanted)


def check_threshold(threshold: float) -> float:
    """``threshold`` when it is a probability strictly between 0 and 1.

    Raises:
        UsageError: outside (0, 1), or not a number.
    """
    import math

    if not (0 < threshold < 1) or math.isnan(threshold):
        raise UsageError(f"--threshold must be between 0 and 1 (exclusive), not {threshold:g}")
    return threshold


def check_clip(clip: float) -> float:
    """``clip`` when it leaves a probability range to write.

    Raises:
        UsageError: below 0, or 0.5 and above.
    """
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
    atomic_write_bytes(path, text.getvalue().encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 keeps its bytes
    return path
