"""The classification task's pictures: the confusion matrix, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from prep.util.figures import pyplot


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str | None = None) -> Path:
    """The confusion matrix with counts in each cell, rows true classes, columns
    predictions, each row's recall at its right, titled with what was measured, the
    accuracy and the balanced accuracy (the mean recall)."""
    plt = pyplot()
    size = max(4.0, 0.6 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues", aspect="auto")  # auto: the recall axis on the right must share its limits
    axis.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), labels=classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axis.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    recalls = [row[i] / sum(row) if sum(row) else None for i, row in enumerate(matrix)]
    right = axis.twinx()
    for side in (axis, right):
        side.set_ylim(len(classes) - 0.5, -0.5)
    right.set_yticks(range(len(classes)), labels=["n/a" if r is None else f"{r:.2f}" for r in recalls])
    right.set_ylabel("recall")
    total = sum(sum(row) for row in matrix)
    accuracy = sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0
    present = [r for r in recalls if r is not None]
    balanced = f", balanced accuracy {sum(present) / len(present):.3f}" if present else ""
    axis.set_title(f"{title + chr(10) if title else ''}accuracy {accuracy:.3f}{balanced} over {total} images", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
