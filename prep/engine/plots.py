"""Pictures of a run: learning curves and the confusion matrix, as PNG (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_curves(records: Sequence[dict[str, Any]], path: Path, metric: str = "acc", title: str = "accuracy", suptitle: str | None = None) -> Path:
    """Loss, one metric (``train_<metric>`` and ``valid_<metric>``) and the learning rate
    per epoch, side by side, under ``suptitle`` (the run's name)."""
    plt = pyplot()

    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    epochs = [r["epoch"] for r in records]
    for axis, name in zip(axes, ("loss", metric)):
        for split in ("train", "valid"):
            key = f"{split}_{name}"
            points = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=split)
        axis.set_title("loss" if name == "loss" else title)
        axis.legend()
    lrs = [(e, r["lr"]) for e, r in zip(epochs, records) if r.get("lr") is not None]
    if lrs:
        axes[2].plot(*zip(*lrs), marker="o", color="tab:green")
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("epoch")
        _whole_epochs(axis, epochs)
        axis.grid(alpha=0.3)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _whole_epochs(axis, epochs: Sequence[int]) -> None:
    """Ticks at whole epochs only (one epoch would otherwise get ticks at 0.96 ... 1.04)."""
    from matplotlib.ticker import MaxNLocator

    if len(epochs) <= 12:
        axis.set_xticks(list(epochs))
        if len(epochs) == 1:
            axis.set_xlim(epochs[0] - 1, epochs[0] + 1)
    else:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str | None = None) -> Path:
    """The confusion matrix with counts in each cell, rows true classes, columns
    predictions, titled with what was measured and the accuracy."""
    plt = pyplot()
    size = max(4.0, 0.6 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), labels=classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axis.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    total = sum(sum(row) for row in matrix)
    accuracy = sum(matrix[i][i] for i in range(len(matrix))) / total if total else 0.0
    axis.set_title(f"{title + chr(10) if title else ''}accuracy {accuracy:.3f} over {total} images", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


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


def plot_lr_range_test(lrs: Sequence[float], losses: Sequence[float], suggestion: float | None, path: Path) -> Path:
    """The range test's smoothed loss against the learning rate (log scale), with the
    suggested rate marked."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(lrs, losses)
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss (smoothed)")
    if suggestion is not None:
        y = losses[list(lrs).index(suggestion)]
        axis.plot([suggestion], [y], marker="o", markersize=9, color="tab:red", label=f"suggested lr {suggestion:.1e}")
        axis.legend()
        axis.set_title(f"Learning-rate range test: suggested lr {suggestion:.1e}")
    else:
        axis.set_title("Learning-rate range test: the loss never fell (no suggestion)")
    # The loss explodes at the end; the interesting part is below where it started.
    low, high = min(losses, default=0.0), max(losses[: max(1, len(losses) // 10)], default=1.0)
    if high > low:
        axis.set_ylim(low - 0.05 * (high - low), high + 0.3 * (high - low))
    axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
