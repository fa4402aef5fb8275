"""``prep evaluate`` and ``prep predict``: using a trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from prep.cli import output


def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="A best.pt or last.pt from a run folder."),
    data: Optional[Path] = typer.Argument(None, help="The split dataset (default: the one the model was trained on, else the one prep split made here)."),
    split: str = typer.Option("valid", "--split", help="valid (val) | test | train."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    workers: Optional[int] = typer.Option(None, "--workers", min=0),
    device: Optional[str] = typer.Option(None, "--device"),
    out: Path = typer.Option(Path("confusion.png"), "--out", help="Where to write the confusion matrix PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Accuracy (acc), loss, per-class accuracy and a confusion matrix PNG on a split."""
    from prep.inference import evaluate_checkpoint
    from prep.layout import canonical_split_name

    metrics = evaluate_checkpoint(checkpoint, data, canonical_split_name(split), batch_size=batch_size, workers=workers, device=device, out_png=out)
    if as_json:
        output.stdout.print_json(json.dumps(metrics))
        return
    output.stdout.print(f"{metrics['split']}: acc {metrics['acc']:.4f}, loss {metrics['loss']:.4f} over {metrics['images']} images")
    for name, acc in metrics["per_class_acc"].items():
        output.stdout.print(f"  {name}: {'-' if acc is None else f'{acc:.4f}'}")
    output.stdout.print(f"Confusion matrix: {metrics['confusion_png']}")


def predict_command(
    checkpoint: Path = typer.Argument(..., help="A best.pt or last.pt from a run folder."),
    images: List[Path] = typer.Argument(..., help="Image files or folders."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV to write."),
    kaggle_submission: bool = typer.Option(False, "--kaggle-submission", help="Write Kaggle's id,label with label = P(dog)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None, "--device"),
) -> None:
    """Batched predictions for images, as CSV (or a Kaggle dogs-vs-cats submission)."""
    from prep.inference import predict, write_predictions

    classes, results, skipped = predict(checkpoint, images, batch_size=batch_size, device=device)
    for image, reason in skipped:
        output.warn(f"Skipped an unreadable image: {reason}")
    path = write_predictions(out, classes, results, kaggle_submission=kaggle_submission)
    unreadable = f"; skipped {len(skipped)} unreadable image{'s' if len(skipped) != 1 else ''}" if skipped else ""
    output.info(f"Wrote {len(results)} predictions to {path}{unreadable}")
