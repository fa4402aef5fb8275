"""Segmentation's out-of-fold rows and suspects: each held-out image's Dice and IoU, and the
pairs the held-out models agree with least, with their overlays.

An image's Dice (and IoU) is the mean over the foreground classes that its truth or its
prediction holds, 1 when neither holds any (Kaggle's per-image Dice, ``image_dice`` in the
metrics). A pair is a suspect when its Dice is an outlier below the others: under Tukey's
lower fence, Q1 - 1.5 (Q3 - Q1) of all pairs' Dice, far worse than the held-out model does on
a typical image, which is where a wrong or missing mask shows. The fence follows the spread
of the scores, so a weak model's broad scores flag only what stands out from them. Every
pair is listed in ``suspects.csv``, lowest Dice first; the gallery shows the first 25.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

GALLERY = 25
WEAK_MEDIAN = 0.5  # a median out-of-fold Dice below which suspects say more about the models than the masks
THUMBNAIL = 128  # the longest side the predictions are kept at for the gallery
SUSPECTS_CSV = "suspects.csv"
SUSPECTS_PNG = "suspects.png"


def _thumbnail(mask: "np.ndarray") -> np.ndarray:
    height, width = mask.shape
    step = max(1, -(-max(height, width) // THUMBNAIL))
    return np.ascontiguousarray(mask[::step, ::step])


def out_of_fold_rows(outputs: Any, targets: "torch.Tensor", classes: list[str]) -> list[dict[str, Any]]:  # noqa: F821
    """Each image's Dice and IoU, with small copies of its truth and prediction (under keys
    starting with ``_``, which oof.csv leaves out) for the suspects' gallery."""
    import torch

    from prep.builtin_tasks.segmentation.metrics import predicted_classes
    from prep.masks.read import IGNORE_INDEX

    c = len(classes)
    predicted = predicted_classes(outputs, tuple(targets.shape[-2:]))
    rows = []
    for truth, guess in zip(targets, predicted):
        valid = truth != IGNORE_INDEX
        t, p = truth[valid], guess[valid]
        confusion = torch.bincount(t * c + p, minlength=c * c).view(c, c).double()
        tp = confusion.diagonal()
        fp, fn = confusion.sum(dim=0) - tp, confusion.sum(dim=1) - tp
        present = ((tp + fp + fn) > 0)[1:]
        dice = (2 * tp / (2 * tp + fp + fn).clamp(min=1))[1:]
        iou = (tp / (tp + fp + fn).clamp(min=1))[1:]
        count = int(present.sum())
        rows.append({
            "dice": float(dice[present].sum() / count) if count else 1.0,
            "iou": float(iou[present].sum() / count) if count else 1.0,
            "_truth": _thumbnail(truth.cpu().numpy().astype(np.int16)),
            "_predicted": _thumbnail(guess.cpu().numpy().astype(np.int16)),
        })
    return rows


def label_suspects(rows: Sequence[dict[str, Any]], classes: list[str], *, root: Path, out_dir: Path, colours=None) -> dict[str, Any]:
    """Write ``suspects.csv`` (every pair, lowest Dice first) and ``suspects.png`` (the
    first 25 suspects overlaid); return what was found, with a sentence about it."""
    from prep.util.files import atomic_write_bytes

    ranked = sorted(range(len(rows)), key=lambda i: (rows[i]["dice"], rows[i]["path"]))
    scores = [row["dice"] for row in rows]
    q1, median, q3 = (float(v) for v in np.percentile(scores, [25, 50, 75])) if rows else (0.0, 0.0, 0.0)
    fence = q1 - 1.5 * (q3 - q1)
    suspects = [i for i in ranked if rows[i]["dice"] < fence]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "path", "dice", "iou", "fold", "suspect"])
    chosen = set(suspects)
    for rank, i in enumerate(ranked, start=1):
        row = rows[i]
        writer.writerow([rank, row["path"], f"{row['dice']:.4f}", f"{row['iou']:.4f}", row["fold"], int(i in chosen)])
    csv_path = out_dir / SUSPECTS_CSV
    atomic_write_bytes(csv_path, buffer.getvalue().encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 keeps its bytes
    png = None
    if suspects:
        png = draw_suspects([rows[i] for i in suspects[:GALLERY]], classes, root, out_dir / SUSPECTS_PNG, total=len(suspects), images=len(rows), colours=colours)
    # A weak model's misses look like wrong masks: say so rather than blame the masks.
    caution = (
        f". The held-out models are weak (median Dice {median:.3f}), so these may be their misses rather than "
        f"wrong masks; train longer before trusting the list"
        if rows and median < WEAK_MEDIAN else ""
    )
    about = (
        f"Suspect masks: {len(suspects)} of {len(rows)} pairs score an out-of-fold Dice far below the others "
        f"(under {fence:.3f}; median {median:.3f}): {csv_path}" + (f", the first {min(GALLERY, len(suspects))} overlaid in {png}" if png else "") + caution
        if suspects else f"Suspect masks: no pair's out-of-fold Dice is far below the others' (median {median:.3f}); all ranked in {csv_path}"
    )
    return {
        "count": len(suspects), "images": len(rows), "median_dice": median, "fence": fence, "csv": str(csv_path),
        "png": str(png) if png else None, "about": about,
    }


def draw_suspects(shown: Sequence[dict[str, Any]], classes: list[str], root: Path, path: Path, *, total: int, images: int, colours=None) -> Path:
    """Each suspect pair: the image, its mask and the held-out model's prediction overlaid."""
    from PIL import Image

    from prep.images.decode import ImageDecodeError, decode_image
    from prep.masks.overlay import class_colours, write_overlay_grid

    palette = class_colours(len(classes), colours)
    grid = []
    for row in shown:
        truth, predicted = row["_truth"], row["_predicted"]
        try:
            pixels = decode_image(str(root / row["path"])).pixels
            image = np.asarray(Image.fromarray(pixels).resize((truth.shape[1], truth.shape[0]), Image.BILINEAR))
        except (ImageDecodeError, OSError, ValueError):
            image = np.zeros((*truth.shape, 3), dtype=np.uint8)
        grid.append((image, truth, predicted, f"{Path(row['path']).name[:30]}, Dice {row['dice']:.3f}"))
    title = f"Masks that look wrong: {len(shown)} of {total} suspects among {images} pairs (lowest out-of-fold Dice first)"
    return write_overlay_grid(grid, classes, palette, path, title)
