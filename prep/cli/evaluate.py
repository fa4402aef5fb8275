"""``prep evaluate``: a trained model's metrics on held-out images, and a picture of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from prep.cli import options, output


def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="A best.pt or last.pt, a run folder, or a cross-validation's folder (its folds' models averaged)."),
    data: Optional[List[Path]] = typer.Argument(None, help="Held-out images: a split dataset, or for classification also one with only valid/ or test/, or class folders (FOLDER/<class>/...) (default: the dataset the model was trained on, else the one prep split made here). More checkpoints (.pt) first make an ensemble with CHECKPOINT."),
    split: Optional[str] = typer.Option(None, "--split", help="valid (val) | test | train, when DATA is a split dataset (default: valid, else test)."),
    tta: str = typer.Option("none", "--tta", help="none | flip (average each prediction with the mirror image's)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    workers: options.Workers = None,
    device: options.Device = None,
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the PNG: the confusion matrix (confusion.png), the tags' scores (tags.png) or, for segmentation, samples with truth and prediction (examples.png); default: beside the model, in evaluate-DATA[-SPLIT]/."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Multi-label: every tag's decision threshold (default: each tag's threshold tuned on the validation split)."),
    cam: bool = typer.Option(False, "--cam", help="Also write cam.png beside the picture: Grad-CAM overlays of each class's most confident right answers and mistakes (classification, one CNN model)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON (with top-5 accuracy for more than 5 classes, and per-class precision and recall)."),
    complete_folds: bool = typer.Option(False, "--complete-folds", help="A cross-validation with a missing or unfinished fold: evaluate the complete folds instead of stopping."),
) -> None:
    """A model's metrics on held-out images, and a PNG of them.

    Classification: accuracy, per-class recall and precision, and a confusion matrix;
    with --cam, where the model looked (Grad-CAM).
    Multi-label: F2, F1 (per image), macro F1, mAP and each tag's scores, with a chart of them.
    Segmentation: Dice, IoU, per-image Dice, pixel accuracy and per-class Dice/IoU, with an
    overlay of samples.
    """
    from prep.cli.predict import leading_checkpoints
    from prep.errors import UsageError
    from prep.inference.checkpoints import model_task, peek_checkpoint
    from prep.inference.ensemble import resolve_members
    from prep.inference.evaluate import evaluate_checkpoint, picture_name

    models, rest = leading_checkpoints(checkpoint, list(data or []))
    if len(rest) > 1:
        raise UsageError(f"prep evaluate takes one held-out folder, not {len(rest)}: {', '.join(map(str, rest))}")
    state = peek_checkpoint(resolve_members(models, complete_folds)[0])  # options and classes only
    task = model_task(state)
    root = rest[0] if rest else _trained_on(state)
    picture = picture_name(task)
    # Beside the model, as the run's own pictures are: runs/<name>/evaluate-<data>[-<split>]/.
    beside = models[0] if models[0].is_dir() else models[0].parent
    pictures = beside / "-".join(["evaluate", Path(root).resolve().name, *([split] if split else [])])
    out = out or (pictures / f"{picture}.png" if picture else None)
    cam_png = ((out.parent if out else pictures) / "cam.png") if cam else None
    metrics = evaluate_checkpoint(
        models, root, split, tta=tta, batch_size=batch_size, workers=workers, device=device, out_png=out, complete_folds=complete_folds, cam_png=cam_png, threshold=threshold,
    )
    if as_json:
        output.stdout.print_json(json.dumps(metrics))
        return
    lines = task.report_lines(metrics) if hasattr(task, "report_lines") else report_lines(metrics)
    for line in lines:
        output.stdout.print(output.escape(line))


def _trained_on(state: dict) -> Path:
    """The dataset a checkpoint was trained on, when it is still there; else the one this
    folder remembers (``prep.cli.workspace``)."""
    from prep.cli.workspace import resolve_dataset

    recorded = Path(state["data"]) if state.get("data") else None
    return recorded if recorded is not None and (recorded / "train").is_dir() else resolve_dataset(None)


def report_lines(report: dict) -> list[str]:
    """Evaluate's result in words, for a task that does not say it its own way: its numbers
    and the loss, a line per class of its ``per_class`` table, and its picture."""
    shown = {"split", "images", "tta", "models", "loss", "classes", "per_class"}
    numbers = [f"{key} {_number(value)}" for key, value in report.items() if key not in shown and _is_number(value)]
    numbers.append(f"loss {report['loss']:.4f}")
    lines = [f"{report['split']}: {', '.join(numbers)} over {report['images']} images"]
    for name, scores in (report.get("per_class") or {}).items():
        lines.append(f"  {name}: " + ", ".join(f"{key} {_number(value)}" for key, value in scores.items()))
    lines += [f"Picture: {value}" for key, value in report.items() if key.endswith("_png")]
    return lines


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
