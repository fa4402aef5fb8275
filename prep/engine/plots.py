"""Pictures of any run, whatever its task: learning curves and the learning-rate range test,
as PNG. The tasks draw their own (``prep.builtin_tasks.*.plots``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from prep.util.figures import pyplot


def plot_curves(
    records: Sequence[dict[str, Any]], path: Path, metric: str = "acc", title: str = "accuracy", suptitle: str | None = None,
    train_loss_note: str | None = None,
) -> Path:
    """Loss, one metric (``train_<metric>`` and ``valid_<metric>``) and the learning rate
    per epoch, side by side, under ``suptitle`` (the run's name), with the epoch that
    ``best.pt`` holds marked (the last record whose ``improved`` is true).

    ``train_loss_note`` says how the training loss differs from the validation's
    (``training_loss_note``: label smoothing, mixup ...): the two are then not on one scale.
    """
    plt = pyplot()

    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    epochs = [r["epoch"] for r in records]
    best = best_epoch(records)
    for axis, name in zip(axes, ("loss", metric)):
        for split in ("train", "valid"):
            key = f"{split}_{name}"
            points = [(e, r[key]) for e, r in zip(epochs, records) if r.get(key) is not None]
            label = f"train ({train_loss_note})" if split == "train" and name == "loss" and train_loss_note else split
            if points:
                axis.plot(*zip(*points), marker="o", label=label)
        axis.set_title("loss" if name == "loss" else title)
    lrs = [(e, r["lr"]) for e, r in zip(epochs, records) if r.get("lr") is not None]
    if lrs:
        axes[2].plot(*zip(*lrs), marker="o", color="tab:green")
    axes[2].set_title("learning rate (at each epoch's start)")
    for axis in axes:
        if best is not None:
            axis.axvline(best, color="tab:red", linestyle="--", alpha=0.6, label=f"best.pt (epoch {best})")
        axis.set_xlabel("epoch")
        _whole_epochs(axis, epochs)
        axis.grid(alpha=0.3)
    for axis in axes[:2]:
        axis.legend(fontsize=8)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def best_epoch(records: Sequence[dict[str, Any]]) -> int | None:
    """The epoch whose weights ``best.pt`` holds: the last that improved on the monitored
    value (None for records from before prep logged ``improved``)."""
    improved = [r["epoch"] for r in records if r.get("improved")]
    return improved[-1] if improved else None


def best_record(records: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The record of the epoch ``best.pt`` holds (the last one for records from before prep
    logged ``improved``), and which it is, in words for a picture's title:
    ``validation of best.pt (epoch 3 of 5)``."""
    best, last = best_epoch(records), records[-1]
    if best is None:
        return last, f"validation, epoch {last['epoch']}"
    return next(r for r in records if r["epoch"] == best), f"validation of best.pt (epoch {best} of {last['epoch']})"


def training_loss_note(run_dir: Path) -> str | None:
    """How the run's training loss differs from its validation loss, from its
    ``config.yaml`` (``label smoothing 0.1, mixup``), or None when it does not."""
    import yaml

    try:
        train = (yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}).get("train") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    notes = []
    if train.get("label_smoothing"):
        notes.append(f"label smoothing {train['label_smoothing']:g}")
    notes += [name for name in ("mixup", "cutmix") if train.get(name)]
    if train.get("loss"):
        notes.append(f"loss {train['loss']}")
    return ", ".join(notes) or None


def _whole_epochs(axis, epochs: Sequence[int]) -> None:
    """Ticks at whole epochs only (one epoch would otherwise get ticks at 0.96 ... 1.04)."""
    from matplotlib.ticker import MaxNLocator

    if len(epochs) <= 12:
        axis.set_xticks(list(epochs))
        if len(epochs) == 1:
            axis.set_xlim(epochs[0] - 1, epochs[0] + 1)
    else:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))


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
