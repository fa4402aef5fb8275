"""The training images whose labels look wrong, found by confident learning on out-of-fold
probabilities (Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 70, 2021), written from the paper.

Each class j gets a threshold t_j: the mean probability the held-out models give class j over
the images labelled j (its mean self-confidence). An image is counted as confidently of class
j when its probability of j reaches t_j; among several such classes, the most probable. An
image confidently of another class than its label is a suspect: these are the off-diagonal
cells of the paper's confident joint. Suspects are ranked by the normalised margin
p(given) - max over other classes p(other), most negative first: the held-out models' case
against the label, strongest first.

``suspects.csv`` ranks every training image: the suspects first, then the others by the same
margin (``suspect`` says which is which), so that a weaker model's near-misses are still near
the top. The gallery shows the first 25 suspects.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

GALLERY = 25
MANY = 0.1  # a share of suspects above which the models, not the labels, are the likelier fault
SUSPECTS_CSV = "suspects.csv"
SUSPECTS_PNG = "suspects.png"
PROBABILITY = "prob_"  # oof.csv's column prefix for a class's probability


def find_suspects(probabilities: np.ndarray, labels: np.ndarray) -> tuple[list[tuple[int, int, float]], list[tuple[int, int, float]]]:
    """(row, class, normalised margin) for each image confidently of another class than its
    label (the suspects, with that class), most implausible label first; then every other
    image (with its most probable class), in the same order.

    Args:
        probabilities: ``images x classes`` out-of-fold probabilities.
        labels: each image's given class index.
    """
    n, c = probabilities.shape
    thresholds = np.full(c, np.inf)
    for j in range(c):
        own = probabilities[labels == j, j]
        if len(own):
            thresholds[j] = own.mean()
    confident = probabilities >= thresholds  # images x classes
    masked = np.where(confident, probabilities, -np.inf)
    chosen = masked.argmax(axis=1)
    suspect = confident.any(axis=1) & (chosen != labels)
    others = probabilities.copy()
    others[np.arange(n), labels] = -np.inf
    margin = probabilities[np.arange(n), labels] - others.max(axis=1)
    predicted = probabilities.argmax(axis=1)
    found = sorted(((i, int(chosen[i]), float(margin[i])) for i in range(n) if suspect[i]), key=lambda item: (item[2], item[0]))
    rest = sorted(((i, int(predicted[i]), float(margin[i])) for i in range(n) if not suspect[i]), key=lambda item: (item[2], item[0]))
    return found, rest


def label_suspects(rows: Sequence[dict[str, Any]], classes: list[str], *, root: Path, out_dir: Path) -> dict[str, Any]:
    """Write ``suspects.csv`` (every image ranked, the suspects first) and ``suspects.png``
    (the first 25 suspects) into ``out_dir`` from oof.csv's rows; return what was found,
    with a sentence about it."""
    from prep.util.files import atomic_write_bytes

    index = {name: i for i, name in enumerate(classes)}
    probabilities = np.array([[float(row[PROBABILITY + name]) for name in classes] for row in rows]).reshape(len(rows), len(classes))
    labels = np.array([index[row["label"]] for row in rows], dtype=np.int64)
    found, rest = find_suspects(probabilities, labels) if len(rows) else ([], [])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "path", "given_label", "predicted_label", "confidence", "given_label_probability", "margin", "fold", "suspect"])
    for rank, (i, j, margin) in enumerate(found + rest, start=1):
        row = rows[i]
        writer.writerow([
            rank, row["path"], row["label"], classes[j], f"{probabilities[i, j]:.4f}", f"{probabilities[i, labels[i]]:.4f}",
            f"{margin:.4f}", row["fold"], int(rank <= len(found)),
        ])
    csv_path = out_dir / SUSPECTS_CSV
    atomic_write_bytes(csv_path, buffer.getvalue().encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 keeps its bytes
    png = None
    if found:
        shown = [(root / rows[i]["path"], rows[i]["label"], classes[j], float(probabilities[i, j])) for i, j, _ in found[:GALLERY]]
        png = draw_suspects(shown, out_dir / SUSPECTS_PNG, total=len(found), images=len(rows))
    share = f" ({len(found) / len(rows):.1%})" if rows else ""
    accuracy = float((probabilities.argmax(axis=1) == labels).mean()) if len(rows) else 0.0
    # Confident learning judges labels by the models: models that are often wrong flag many good labels.
    caution = (
        f". That is more than a tenth: the held-out models (OOF accuracy {accuracy:.3f}) are likely too weak "
        f"to judge labels yet; train longer or from pretrained weights"
        if rows and len(found) > MANY * len(rows) else ""
    )
    about = (
        f"Suspect labels: {len(found)} of {len(rows)} training images{share} look mislabeled to the held-out models "
        f"(confident learning): {csv_path}" + (f", the first {min(GALLERY, len(found))} in {png}" if png else "") + caution
        if found else f"Suspect labels: none of the {len(rows)} training images looks mislabeled to the held-out models ({csv_path})"
    )
    return {"count": len(found), "images": len(rows), "csv": str(csv_path), "png": str(png) if png else None, "about": about}


def draw_suspects(shown: Sequence[tuple[Path, str, str, float]], path: Path, *, total: int, images: int) -> Path:
    """A titled gallery: each suspect with its given label and what the models say."""
    from prep.images.decode import ImageDecodeError, decode_image
    from prep.util.figures import pyplot

    plt = pyplot()
    columns = min(5, len(shown))
    rows = math.ceil(len(shown) / columns)
    height = 3.3 * rows + 0.8  # inches: each image with its three caption lines, and the title
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, height), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (file, given, predicted, confidence) in zip(axes.ravel(), shown):
        try:
            axis.imshow(decode_image(str(file), min_side=256).pixels)
        except (ImageDecodeError, OSError, ValueError):
            axis.text(0.5, 0.5, "unreadable", ha="center", va="center")
        axis.set_title(f"{file.name[:28]}\ngiven: {given}\nmodels: {predicted} ({confidence:.2f})", fontsize=8, color="darkred")
    figure.suptitle(
        f"Labels that look wrong: {len(shown)} of {total} suspects among {images} training images\n"
        f"(out-of-fold confident learning, most implausible first)", fontsize=11,
    )
    # Room above the first row's captions for the two-line title.
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.8 / height))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
