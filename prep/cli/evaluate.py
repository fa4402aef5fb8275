"""``prep evaluate`` and ``prep predict``: using a trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from prep.cli import output


def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="A best.pt or last.pt from a run folder."),
    data: Optional[Path] = typer.Argument(None, help="Held-out images: class folders (FOLDER/<class>/...), or a split dataset, also one with only valid/ or test/ (default: the dataset the model was trained on, else the one prep split made here)."),
    split: Optional[str] = typer.Option(None, "--split", help="valid (val) | test | train, when DATA is a split dataset (default: valid, else test)."),
    tta: str = typer.Option("none", "--tta", help="none | flip (average each prediction with the mirror image's)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Loader processes (default: all cores)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the PNG: the confusion matrix (default confusion.png) or, for segmentation, samples with truth and prediction (default examples.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON (with top-5 accuracy for more than 5 classes, and per-class precision and recall)."),
) -> None:
    """A model's metrics on held-out images, and a PNG of them.

    Classification: accuracy, per-class recall and precision, and a confusion matrix.
    Segmentation: Dice, IoU, per-image Dice, pixel accuracy and per-class Dice/IoU, with an
    overlay of samples.
    """
    from prep.inference.checkpoints import checkpoint_task, evaluate_checkpoint

    segmentation = checkpoint_task(checkpoint) == "segmentation"
    out = out or Path("examples.png" if segmentation else "confusion.png")
    metrics = evaluate_checkpoint(checkpoint, data, split, tta=tta, batch_size=batch_size, workers=workers, device=device, out_png=out)
    if as_json:
        output.stdout.print_json(json.dumps(metrics))
        return
    if segmentation:
        output.stdout.print(
            f"{metrics['split']}: dice {_number(metrics['dice'])}, iou {_number(metrics['iou'])}, image_dice {_number(metrics['image_dice'])}, "
            f"pixel_acc {_number(metrics['pixel_acc'])}, loss {metrics['loss']:.4f} over {metrics['images']} images"
        )
        for name, scores in metrics["per_class"].items():
            output.stdout.print(output.escape(f"  {name}: dice {_number(scores['dice'])}, iou {_number(scores['iou'])}"))
        output.stdout.print(f"Samples with truth and prediction: {metrics.get('examples_png')}")
        return
    top5 = f", top-5 acc {metrics['top5_acc']:.4f}" if "top5_acc" in metrics else ""
    output.stdout.print(output.escape(f"{metrics['split']}: acc {metrics['acc']:.4f}{top5}, loss {metrics['loss']:.4f} over {metrics['images']} images"))
    for name, scores in metrics["per_class"].items():
        output.stdout.print(output.escape(
            f"  {name}: recall {_number(scores['recall'])}, precision {_number(scores['precision'])} ({scores['images']} images)"
        ))
    output.stdout.print(f"Confusion matrix: {metrics['confusion_png']}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def predict_command(
    checkpoint: Path = typer.Argument(..., help="A best.pt or last.pt from a run folder."),
    images: List[Path] = typer.Argument(..., help="Image files or folders."),
    out: Optional[Path] = typer.Option(None, "--out", help="Classification: the CSV (default predictions.csv). Segmentation: the folder for the masks (default masks/), or the CSV with --kaggle-submission (default submission.csv)."),
    kaggle_submission: bool = typer.Option(False, "--kaggle-submission", help="Classification: Kaggle's id,label with label = P(dog). Segmentation: Carvana's img,rle_mask."),
    rle_order: str = typer.Option("row", "--rle-order", help="Segmentation submissions: row (Carvana: pixels numbered along rows) | column (numbered down the columns)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Segmentation, binary: the foreground probability from which a pixel is foreground."),
    tta: str = typer.Option("none", "--tta", help="none | flip (average each prediction with the mirror image's)."),
    tile: Optional[int] = typer.Option(None, "--tile", min=16, help="Segmentation: predict large images window by window at their own resolution, in windows of this side."),
    overlap: int = typer.Option(64, "--overlap", min=0, help="Segmentation with --tile: pixels shared by neighbouring windows."),
    positive: Optional[str] = typer.Option(None, "--positive", help="Classification, --kaggle-submission: the class whose probability is written (default: dog)."),
    clip: float = typer.Option(0.0, "--clip", help="Classification: keep probabilities within [CLIP, 1 - CLIP] (0.005 spares a log-loss score the cost of a confident mistake)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)."),
) -> None:
    """Predict images: class probabilities or masks, or a Kaggle submission.

    Classification: a CSV of class probabilities (or Kaggle dogs-vs-cats' id,label).
    Segmentation: masks at each image's own size (or a Kaggle RLE submission).
    """
    from prep.inference.checkpoints import (
        check_clip, model_task, peek_checkpoint, positive_class, predict, predict_segmentation, refuse_existing,
        write_predictions,
    )

    state = peek_checkpoint(checkpoint)  # options and classes only, read once
    if model_task(state) == "segmentation":
        from prep.builtin_tasks.segmentation.predict import MaskOptions

        target = out or Path("submission.csv" if kaggle_submission else "masks")
        report = predict_segmentation(
            checkpoint, images, target, kaggle_submission=kaggle_submission, rle_order=rle_order,
            options=MaskOptions(threshold, tta, tile, overlap), batch_size=batch_size, device=device,
            progress=output.RichProgress(),
        )
        for file, reason in report["skipped"]:
            output.warn(f"Skipped an unreadable image: {reason}")
        what = "rows of run-length-encoded masks" if kaggle_submission else "masks"
        output.info(f"Wrote {report['written']} {what} to {report['out']}")
        return
    # Everything the options ask is checked before the work, not after it.
    target = refuse_existing(out or Path("predictions.csv"))
    check_clip(clip)
    if kaggle_submission:
        positive_class(state["classes"], positive)
    classes, results, skipped = predict(checkpoint, images, tta=tta, batch_size=batch_size, device=device)
    for image, reason in skipped:
        output.warn(f"Skipped an unreadable image: {reason}")
    path = write_predictions(target, classes, results, kaggle_submission=kaggle_submission, positive=positive, clip=clip)
    unreadable = f"; skipped {len(skipped)} unreadable image{'s' if len(skipped) != 1 else ''}" if skipped else ""
    output.info(f"Wrote {len(results)} predictions to {path}{unreadable}")
