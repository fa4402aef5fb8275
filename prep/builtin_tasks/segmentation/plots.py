"""The segmentation task's pictures: IoU and Dice per class, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from prep.util.figures import pyplot


def plot_per_class(series: dict[str, Sequence[float | None]], classes: Sequence[str], path: Path, title: str) -> Path:
    """Grouped bars: one group per class, one bar per series (``IoU``, ``Dice``); a missing
    value (a class neither present nor predicted) is drawn as no bar and marked n/a."""
    plt = pyplot()
    width = 0.8 / max(len(series), 1)
    figure, axis = plt.subplots(figsize=(max(5.0, 0.9 * len(classes) + 2), 4))
    for offset, (name, values) in enumerate(series.items()):
        xs = [i + (offset - (len(series) - 1) / 2) * width for i in range(len(classes))]
        axis.bar(xs, [v or 0.0 for v in values], width, label=name)
        for x, value in zip(xs, values):
            axis.text(x, (value or 0.0) + 0.01, "n/a" if value is None else f"{value:.2f}", ha="center", va="bottom", fontsize=7)
    axis.set_xticks(range(len(classes)), labels=classes, rotation=30 if len(classes) > 4 else 0, ha="right" if len(classes) > 4 else "center")
    axis.set_ylim(0, 1.1)
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
