"""The classification task's pictures: the confusion matrix, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from prep.util.figures import pyplot


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str | None = None) -> Path:
    """The confusion matrix twice, side by side: counts, and each row as shares of its true
    class (its diagonal is the class's recall), rows true classes, columns predictions;
    titled with what was measured, the accuracy and the balanced accuracy (the mean recall)."""
    plt = pyplot()
    side = max(3.5, 0.55 * len(classes) + 2)
    figure, (counts_axis, shares_axis) = plt.subplots(1, 2, figsize=(2 * side + 1, side + 1), layout="constrained")
    totals = [sum(row) for row in matrix]
    shares = [[count / total if total else 0.0 for count in row] for row, total in zip(matrix, totals)]
    peak = max((max(row) for row in matrix), default=0)
    _draw_matrix(counts_axis, matrix, classes, lambda v: str(v), lambda v: v > peak / 2, "counts")
    _draw_matrix(shares_axis, shares, classes, lambda v: f"{v:.2f}", lambda v: v > 0.5, "share of each true class (diagonal: recall)", vmax=1.0)
    recalls = [row[i] / totals[i] if totals[i] else None for i, row in enumerate(matrix)]
    total = sum(totals)
    accuracy = sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0
    present = [r for r in recalls if r is not None]
    balanced = f", balanced accuracy {sum(present) / len(present):.3f}" if present else ""
    figure.suptitle(f"{title + chr(10) if title else ''}accuracy {accuracy:.3f}{balanced} over {total} images", fontsize=10)
    figure.savefig(path, dpi=100, bbox_inches="tight")  # square cells leave the layout short of room for the labels
    plt.close(figure)
    return path


def _draw_matrix(axis, values, classes, text, dark, title: str, vmax: float | None = None) -> None:
    axis.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    axis.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), labels=classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=9)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            axis.text(j, i, text(value), ha="center", va="center", color="white" if dark(value) else "black", fontsize=8)
