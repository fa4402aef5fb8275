"""Out-of-fold predictions: each training image predicted by the one fold model that did not
train on it, and the score over all of them (the honest estimate of a cross-validation).

The numbers are the task's own validation metrics (``Task.metrics``), accumulated over every
fold's held-out images at once, so the OOF score is what one validation over the whole pool
would measure. A task may add a row per image (``out_of_fold_rows``: classification, the
probability of every class; segmentation, the image's Dice and IoU) and numbers computed
from the rows (``out_of_fold_score``: classification, the log-loss).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from prep.data.index import DatasetIndex
    from prep.engine.task import Task

OOF_FILE = "oof.csv"
OOF_MASKS = "oof-masks"  # segmentation, with --oof-masks: each training image's out-of-fold mask


@dataclass
class OutOfFold:
    """The out-of-fold pass: a row per training image (``path`` relative to the dataset,
    ``fold``, then the task's columns), the score, and the task and classes it was made with."""

    rows: list[dict[str, Any]]
    score: dict[str, Any]
    task: "Task"
    classes: list[str]
    images: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


def out_of_fold(
    index: "DatasetIndex", fold_dirs: list[Path], *, batch_size: int = 64, workers: int | None = None,
    device: str | None = None, cache: str = "auto", progress: Progress = NO_PROGRESS,
) -> OutOfFold:
    """Predict every fold's held-out images with that fold's model (``fold_dirs[k]`` holds
    fold k's run) and score them together.

    Raises:
        CheckpointError: a fold without a checkpoint. PrepError: bad data, as in training.
    """
    import torch

    from prep.data.cache_plan import cache_datasets
    from prep.data.loader import create_loader
    from prep.data.resolution import source_side
    from prep.engine.distributed import pick_device
    from prep.engine.epoch import batch_on_device, detached
    from prep.engine.run_folder import run_checkpoint
    from prep.inference.checkpoints import eval_transform, load_model, model_task
    from prep.train.prepare import collate_registration

    target = pick_device(device)
    rows: list[dict[str, Any]] = []
    metrics = task = classes = None
    skipped: dict[str, str] = {}
    for fold, fold_dir in enumerate(fold_dirs):
        model, state = load_model(run_checkpoint(fold_dir) or fold_dir / "last.pt", device)  # none: load_model names it
        task, classes = model_task(state), state["classes"]
        metrics = metrics or task.metrics(classes, train=False)
        transform = eval_transform(state, task.layout)
        view = index.fold_view(fold)
        side = source_side(transform)
        dataset = task.dataset(view, "valid", classes=classes, transform=transform, decode_side=side)
        pool = task.dataset(index, "train", classes=classes, transform=transform, decode_side=side)
        # Training left the pool decoded at this size in the folds' cache: it is read from there.
        cache_datasets(cache, index.root, {"valid": dataset}, pools={"valid": pool}, workers=workers)
        paths = [_relative(Path(dataset.sample_files(i)[0]), index.root) for i in range(len(dataset))]
        collate = collate_registration(task.collate, classes)
        loader = create_loader(dataset, batch_size, train=False, collate_fn=collate.call, collate_origin=collate.origin, workers=workers, device=target)
        position = 0
        with torch.no_grad(), progress.task(f"Out-of-fold predictions, fold {fold}", len(loader)) as advance:
            for raw in loader:
                advance(1)
                lost = {_relative(Path(s.path), index.root) for s in raw.skipped}
                skipped.update({_relative(Path(s.path), index.root): s.reason for s in raw.skipped})
                count = len(raw.inputs) + len(raw.skipped)
                kept = [p for p in paths[position : position + count] if p not in lost]
                position += count
                batch = batch_on_device(raw, task, classes, collate.origin, state["mean"], state["std"], target)
                if not batch.size:
                    continue
                outputs = detached(model(batch.images))
                metrics.update(outputs, batch.targets)
                extra = task.out_of_fold_rows(outputs, batch.targets, classes) if hasattr(task, "out_of_fold_rows") else [{}] * batch.size
                rows += [{"path": p, "fold": fold, **row} for p, row in zip(kept, extra)]
    score = {k: v for k, v in metrics.compute().items() if v is None or isinstance(v, (int, float))}
    if hasattr(task, "out_of_fold_score"):
        score.update(task.out_of_fold_score(rows, classes))
    rows.sort(key=lambda row: row["path"])
    return OutOfFold(rows, score, task, classes, len(rows), skipped)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def write_oof_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``oof.csv``, written atomically: the columns of the first row, in its order (those
    whose name starts with ``_`` left out)."""
    from prep.util.files import atomic_write_bytes

    buffer = io.StringIO()
    # Keys starting with "_" are a task's own (segmentation keeps small masks for its gallery).
    columns = [key for key in rows[0] if not key.startswith("_")] if rows else ["path", "fold"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if not k.startswith("_")})
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 keeps its bytes
    return path
