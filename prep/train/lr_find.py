"""``lr_find``: the function behind ``prep lr-find``, the learning-rate range test run with a
trainer's model, recipe and data, exactly as ``prep train`` would set them up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prep.util.progress import NO_PROGRESS, Progress
from prep.train.options import TrainOptions


def lr_find(
    root: Path, options: TrainOptions, out_png: Path, *, start_lr: float = 1e-7, end_lr: float = 10.0,
    steps: int = 100, progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """Run the range test (``prep.engine.lr_finder``) on the train split and draw it.

    Nothing is trained for good and no run folder is made; only ``out_png`` is written (and
    ``stats.json`` when a from-scratch model needs the dataset's statistics).

    Returns:
        ``suggestion`` (a learning rate, or None when the loss never fell), ``stopped``,
        ``steps`` (taken), ``png``, ``setup`` (weights, normalisation, recipe ...), and
        the curve as ``lrs`` and ``losses``.

    Raises:
        UsageError: bad range or options. Everything ``prep.train.prepare.prepare_run`` raises.
    """
    from prep.engine.lr_finder import range_test
    from prep.engine.plots import plot_lr_range_test
    from prep.train.prepare import prepare_run

    run = prepare_run(root, options, progress=progress, with_valid=False)
    norm = run.normalization
    test = range_test(
        run.model, run.train_loader, run.task, run.settings.loss, run.classes, config=run.config, mean=norm.mean, std=norm.std,
        device=run.device, head=run.head, start_lr=start_lr, end_lr=end_lr, steps=steps, progress=progress,
        precision=run.settings.precision,
    )
    out_png.parent.mkdir(parents=True, exist_ok=True)
    plot_lr_range_test(test.lrs, test.losses, test.suggestion, out_png)
    return {
        "suggestion": test.suggestion, "stopped": test.stopped, "steps": len(test.lrs), "png": str(out_png),
        "setup": run.describe(), "lrs": test.lrs, "losses": test.losses,
    }
