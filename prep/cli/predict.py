"""``prep predict``: a trained model's predictions for images, or a Kaggle submission."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from prep.cli import options, output


def predict_command(
    checkpoint: Path = typer.Argument(..., help="A best.pt or last.pt, a run folder, or a cross-validation's folder (its folds' models averaged)."),
    images: List[Path] = typer.Argument(..., help="Image files or folders; more checkpoints (.pt) first make an ensemble with CHECKPOINT."),
    out: Optional[Path] = typer.Option(None, "--out", help="Classification and multi-label: the CSV (default predictions.csv; multi-label with --kaggle-submission: submission.csv). Segmentation: the folder for the masks (default masks/), or the CSV with --kaggle-submission (default submission.csv)."),
    kaggle_submission: bool = typer.Option(False, "--kaggle-submission", help="Classification: Kaggle's id,label with label = P(dog). Multi-label: Planet's image_name,tags (space-separated). Segmentation: Carvana's img,rle_mask."),
    rle_order: str = typer.Option("row", "--rle-order", help="Segmentation submissions: row (Carvana: pixels numbered along rows) | column (numbered down the columns)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Binary segmentation: the foreground probability from which a pixel is foreground (default 0.5). Multi-label: every tag's (default: each tag's threshold tuned on the validation split)."),
    tta: str = typer.Option("none", "--tta", help="none | flip (average each prediction with the mirror image's)."),
    tile: Optional[int] = typer.Option(None, "--tile", min=16, help="Segmentation: predict large images window by window at their own resolution, in windows of this side."),
    overlap: int = typer.Option(64, "--overlap", min=0, help="Segmentation with --tile: pixels shared by neighbouring windows."),
    positive: Optional[str] = typer.Option(None, "--positive", help="Classification, --kaggle-submission: the class whose probability is written (default: dog)."),
    clip: float = typer.Option(0.0, "--clip", help="Classification: keep probabilities within [CLIP, 1 - CLIP] (0.005 spares a log-loss score the cost of a confident mistake)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    device: options.Device = None,
    complete_folds: bool = typer.Option(False, "--complete-folds", help="A cross-validation with a missing or unfinished fold: predict with the complete folds instead of stopping."),
) -> None:
    """Predict images: class probabilities or masks, or a Kaggle submission.

    Classification: a CSV of class probabilities (or Kaggle dogs-vs-cats' id,label).
    Multi-label: each image's tags and their probabilities (or Planet's image_name,tags).
    Segmentation: masks at each image's own size (or a Kaggle RLE submission).
    """
    from prep.inference.predict import PredictOptions, predict_images

    models, images = leading_checkpoints(checkpoint, images)
    options = PredictOptions(
        out=out, kaggle_submission=kaggle_submission, tta=tta, batch_size=batch_size, device=device, positive=positive,
        clip=clip, threshold=threshold, tile=tile, overlap=overlap, rle_order=rle_order, complete_folds=complete_folds,
    )
    report = predict_images(models, images, options, progress=output.RichProgress())
    for _, reason in report["skipped"]:
        output.warn(f"Skipped an unreadable image: {reason}")
    skipped = len(report["skipped"])
    unreadable = f"; skipped {skipped} unreadable image{'s' if skipped != 1 else ''}" if skipped else ""
    averaged = f" (the average of {report['models']} models)" if report["models"] > 1 else ""
    thresholds = f"; thresholds {report['thresholds']}" if report.get("thresholds") else ""
    output.info(output.escape(f"Wrote {report['written']} {report['what']}{averaged} to {report['out']}{unreadable}{thresholds}"))


def leading_checkpoints(first: Path, rest: List[Path]) -> tuple[list[Path], list[Path]]:
    """The models named first on the command line (``first``, then every ``.pt`` file that
    follows it), and what comes after them."""
    models = [first]
    while rest and rest[0].suffix == ".pt":
        models.append(rest.pop(0))
    return models, rest
