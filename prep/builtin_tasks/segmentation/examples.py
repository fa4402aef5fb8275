"""``examples.png``: what a segmentation model makes of a few samples, next to the truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch


def write_examples(
    model: torch.nn.Module, dataset: Any, classes: Sequence[str], mean, std, device, path: Path, count: int = 6, *, title: str,
) -> Path | None:
    """Predict ``count`` samples spread over ``dataset`` and draw them, with their wrong
    pixels (false positives apart from false negatives), under ``title`` and how many
    samples these are (None when the dataset is empty).

    The dataset gives ``(uint8 H x W x 3, class indices H x W)`` samples, as the task's do;
    its class table, when it has one, gives the colours.
    """
    from prep.data.collate import to_device_normalized
    from prep.data.datasets import CorruptSample
    from prep.builtin_tasks.segmentation.metrics import SegmentationMetrics, predicted_classes
    from prep.masks.overlay import class_colours, write_overlay_grid

    if len(dataset) == 0:
        return None
    shown = min(count, len(dataset))
    picks = sorted({round(i * (len(dataset) - 1) / max(shown - 1, 1)) for i in range(shown)})
    samples = [s for s in (dataset[i] for i in picks) if not isinstance(s, CorruptSample)]
    if not samples:
        return None
    table = getattr(getattr(dataset, "decode_mask", None), "table", None)
    colours = class_colours(len(classes), table.colours if table is not None else None)
    was_training = model.training
    model.eval()
    rows = []
    with torch.no_grad():
        for image, truth in samples:
            outputs = model(to_device_normalized(image.unsqueeze(0), mean, std, device))
            predicted = predicted_classes(outputs, tuple(truth.shape))[0].cpu().numpy()
            scores = SegmentationMetrics(len(classes), train=False)  # the caption is the record's image_dice
            scores.update(outputs, truth.unsqueeze(0).to(device))
            rows.append((image.numpy(), truth.numpy(), predicted, f"Dice {scores.compute()['image_dice']:.3f}"))
    model.train(was_training)
    heading = f"{title}\ntruth, prediction and errors on {len(rows)} of {len(dataset)} images"
    return write_overlay_grid(rows, classes, colours, path, title=heading, show_errors=True)
