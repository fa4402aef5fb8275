"""``cross_validate``: the function behind ``prep train --fold all``.

It trains the K models of a dataset split with ``prep split --folds K`` one after another,
each into ``RUN/fold-<k>/`` (a normal run folder), then predicts every training image with
the model that did not see it (``RUN/oof.csv``, ``prep.crossval.oof``), ranks the images
whose labels look wrong (``RUN/suspects.csv`` and ``suspects.png``, the task's
``label_suspects``) and writes ``RUN/summary.json``.

What the folds share is made once: the dataset's listing and masks' scan (one
``DatasetIndex``), the decoded cache (one store of the whole pool, ``prep.data.cache_plan``)
and the folds' normalisation statistics (``prep.stats.fold_stats``). ``--resume`` skips the
folds that finished, continues the one that was stopped from its last.pt, and starts the rest.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from prep.engine.config import TrainConfig
from prep.engine.run_folder import CV_FILE, CV_FORMAT, FINISHED, fold_folder, is_cross_validation, read_cross_validation, read_summary, run_checkpoint
from prep.errors import FoldsError, UsageError
from prep.layout import SEGMENTATION
from prep.train.options import TrainOptions, options_as_data
from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from prep.data.index import DatasetIndex


# Told of each fold as it ends: (fold, folds, its summary, whether it had finished before).
FoldListener = Callable[[int, int, dict[str, Any], bool], None]


def fold_dir(run_dir: Path, fold: int) -> Path:
    """The run folder of fold ``fold`` (``prep.engine.run_folder.fold_folder``)."""
    return fold_folder(run_dir, fold)


def _check_folder(run_dir: Path, resume: bool, folds: int, data: Path) -> None:
    """Refuse to start over a cross-validation (or anyone's files) unless resuming, and to
    resume what is not one, or one of another dataset.

    Raises:
        RunExistsError, CheckpointError, FoldsError: with what to do instead.
    """
    from prep.engine.checkpoint import CheckpointError
    from prep.engine.run_folder import RunExistsError

    if resume:
        if not is_cross_validation(run_dir):
            raise CheckpointError(f"Nothing to resume in {run_dir}: it holds no cross-validation ({CV_FILE}). Start it without --resume.")
        recorded = read_cross_validation(run_dir)
        if recorded["folds"] != folds or Path(recorded["data"]) != data:
            raise FoldsError(
                f"{run_dir} is a cross-validation of {recorded['data']} in {recorded['folds']} folds, not of {data} in {folds}; "
                f"choose another --run-dir"
            )
        return
    if is_cross_validation(run_dir):
        raise RunExistsError(f"{run_dir} already holds a cross-validation; continue it with --resume, or choose another --run-dir")
    if run_dir.is_dir() and any(not entry.name.startswith(".") for entry in run_dir.iterdir()):
        raise RunExistsError(f"{run_dir} holds files that are not a prep cross-validation's; choose an empty or new --run-dir")


def _finished(folder: Path) -> dict[str, Any] | None:
    """The summary of a fold that ran to its end, or None."""
    summary = read_summary(folder)
    return summary if summary is not None and summary.get("status") in FINISHED and (folder / "last.pt").is_file() else None


def cross_validate(
    root: "Path | DatasetIndex", options: TrainOptions, *, config: TrainConfig | None = None,
    callbacks: Sequence[object] = (), progress: Progress = NO_PROGRESS, on_fold: FoldListener | None = None,
    oof_masks: bool = False,
) -> dict[str, Any]:
    """Train every fold of a dataset split into folds, then score them out of fold.

    Args:
        root: a dataset split with ``prep split --folds K``, or its ``DatasetIndex``.
        options: as for ``prep.train.train``; ``run_dir`` is the cross-validation's folder
            (default ``runs/<plugin>-<arch>-cv-<time>``), ``resume`` continues it.
        on_fold: told of each fold's end.
        oof_masks: segmentation: also write each training image's out-of-fold mask, at the
            image's own size, into ``RUN/oof-masks/`` (as ``prep predict`` writes masks).

    Returns:
        ``summary.json``'s content (``folds``: each fold's status, best score and folder;
        ``mean`` and ``std`` of the folds' best scores; ``oof``: the out-of-fold score;
        ``suspects``), plus ``run_dir`` and ``is_main``.

    Raises:
        FoldsError: the dataset has no folds, or the folder holds another cross-validation.
        RunExistsError: the folder holds a run and ``resume`` is off. PrepError: as ``train``.
    """
    from prep.data.cache_plan import release_ram_cache
    from prep.data.index import DatasetIndex
    from prep.engine.distributed import World
    from prep.train.run import new_run_dir, point_latest_at, train

    started = time.perf_counter()
    index = DatasetIndex.of(root)
    count = index.fold_count
    if not count:
        index.fold_view(0)  # raises the FoldsError that says how to split into folds
    if oof_masks and index.kind != SEGMENTATION:
        raise UsageError(f"--oof-masks writes segmentation masks, but {index.root} is a {index.kind} dataset (oof.csv holds its predictions)")
    data = index.root.resolve()
    run_dir = options.run_dir or new_run_dir(options.plugin, options.arch, "cv")
    world = World.from_env()
    is_main = world.is_main
    if is_main:  # the others would find the record it writes next; if it stops here, torchrun stops them
        _check_folder(run_dir, options.resume, count, data)
    if is_main and not options.resume:
        options_data = options_as_data(replace(options, run_dir=run_dir, resume=False))
        _write_json(run_dir / CV_FILE, {"format": CV_FORMAT, "data": str(data), "folds": count, "options": options_data})
    if is_main:
        point_latest_at(run_dir)
    summaries: list[dict[str, Any]] = []
    images, training_s = 0, 0.0
    try:
        for fold in range(count):
            folder = fold_dir(run_dir, fold)
            done = _finished(folder) if options.resume else None
            if done is not None:
                summaries.append(done)
                if on_fold is not None:
                    on_fold(fold, count, done, True)
                continue
            resume = options.resume and (folder / "last.pt").is_file()
            summary = train(
                index, replace(options, fold=fold, run_dir=folder, resume=resume), config=config, callbacks=callbacks,
                progress=progress, keep_cache=True,
            )
            images += summary["setup"]["images"]["train"] * summary["epochs"]
            training_s += summary["elapsed_s"]
            summaries.append(summary)
            if on_fold is not None and is_main:
                on_fold(fold, count, summary, False)
            if summary["status"] == "interrupted":
                return _summary(run_dir, summaries, count, "interrupted", None, None, started, is_main, images, training_s)
        if not is_main:  # under torchrun, the first process scores the folds and speaks for the job
            return {"status": "completed", "is_main": False, "run_dir": str(run_dir)}
        oof, suspects = _score_out_of_fold(index, run_dir, count, options, progress)
        if oof_masks:
            _write_oof_masks(index, run_dir, count, options, progress)
    finally:
        if world.local_rank == 0:  # the process that built it, which also reads it for the OOF pass
            release_ram_cache(index.root)
    return _summary(run_dir, summaries, count, "completed", oof, suspects, started, is_main, images, training_s)


def _batch_size(options: TrainOptions) -> int:
    """The folds' batch size, for predicting their held-out images too."""
    from prep.train.options import batch_size_of
    from prep.train.prepare import trainer_registration

    return batch_size_of(options, trainer_registration(options.plugin).value)


def _score_out_of_fold(index: "DatasetIndex", run_dir: Path, count: int, options: TrainOptions, progress: Progress):
    from prep.crossval.oof import OOF_FILE, out_of_fold, write_oof_csv

    oof = out_of_fold(
        index, [fold_dir(run_dir, k) for k in range(count)], batch_size=_batch_size(options), workers=options.workers,
        device=options.device, cache=options.cache, progress=progress,
    )
    write_oof_csv(run_dir / OOF_FILE, oof.rows)
    suspects = None
    if hasattr(oof.task, "label_suspects"):
        suspects = oof.task.label_suspects(oof.rows, oof.classes, root=index.root, out_dir=run_dir)
    return oof, suspects


def _write_oof_masks(index: "DatasetIndex", run_dir: Path, count: int, options: TrainOptions, progress: Progress) -> None:
    """Each fold's held-out images' masks, predicted by its model, into RUN/oof-masks/:
    written beside it, then put in the place of the masks an earlier pass wrote (they are
    this run's own, derived files)."""
    import shutil

    from prep.crossval.oof import OOF_MASKS
    from prep.inference.predict import PredictOptions, predict_images

    partial = run_dir / f".{OOF_MASKS}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for fold in range(count):
        pairs, unpaired = index.fold_view(fold).segmentation_pairs("valid")
        images = [image for image, _ in pairs] + unpaired
        if images:
            predict_images(
                run_checkpoint(fold_dir(run_dir, fold)), images,
                PredictOptions(out=partial, batch_size=_batch_size(options), device=options.device), progress=progress,
            )
    shutil.rmtree(run_dir / OOF_MASKS, ignore_errors=True)
    partial.rename(run_dir / OOF_MASKS)


def _best(summary: dict[str, Any]) -> tuple[str | None, float | None]:
    """The monitored key of a fold's summary and its best value."""
    key = next((k for k in summary if k.startswith("best_") and k != "best_epoch"), None)
    return (key[len("best_"):], summary[key]) if key else (None, None)


def _summary(run_dir, summaries, count, status, oof, suspects, started, is_main, images, training_s) -> dict[str, Any]:
    folds = []
    for fold, summary in enumerate(summaries):
        monitor, best = _best(summary)
        folds.append({
            "fold": fold, "status": summary["status"], "epochs": summary["epochs"], "monitor": monitor, "best": best,
            "best_epoch": summary.get("best_epoch"), "run_dir": str(fold_dir(run_dir, fold)),
        })
    scores = [f["best"] for f in folds if f["best"] is not None]
    mean = sum(scores) / len(scores) if scores else None
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores)) if scores else None
    elapsed = time.perf_counter() - started
    result: dict[str, Any] = {
        "status": status, "folds_total": count, "folds": folds, "monitor": folds[0]["monitor"] if folds else None,
        "mean": mean, "std": std, "elapsed_s": round(elapsed, 1),
        # Over the folds trained by this call: a resumed run's earlier folds are not timed here.
        "training_images_per_s": round(images / training_s, 1) if training_s else None,
    }
    if oof is not None:
        result["oof"] = {"images": oof.images, **oof.score, "csv": str(run_dir / "oof.csv"), "skipped_images": oof.skipped}
        result["classes"] = oof.classes
    if suspects is not None:
        result["suspects"] = suspects
    if is_main:
        _write_json(run_dir / "summary.json", result)
    return {**result, "run_dir": str(run_dir), "is_main": is_main}


def _write_json(path: Path, value: Any) -> None:
    from prep.util.files import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, value, indent=2)
