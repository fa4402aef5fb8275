"""Auditing segmentation masks: which values they hold, and whether those are class ids."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class MaskSummary:
    """Value frequencies over a set of masks; summaries combine with ``+``."""

    pixels_per_value: Counter = field(default_factory=Counter)
    masks: int = 0
    not_single_channel: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def __add__(self, other: "MaskSummary") -> "MaskSummary":
        return MaskSummary(
            self.pixels_per_value + other.pixels_per_value, self.masks + other.masks,
            self.not_single_channel + other.not_single_channel, self.failed + other.failed,
        )


def summarize_masks(paths: list[str]) -> MaskSummary:
    """Read each mask's raw values (no colour conversion) and count them."""
    from PIL import Image

    summary = MaskSummary()
    for path in paths:
        try:
            with Image.open(path) as mask:
                if mask.mode not in ("L", "P", "1", "I;16", "I"):
                    summary.not_single_channel.append(path)
                    continue
                values = np.asarray(mask).astype(np.int64).ravel()
        except (OSError, ValueError) as exc:
            summary.failed.append({"file": path, "reason": str(exc)})
            continue
        counts = np.bincount(values)
        summary.pixels_per_value.update({int(v): int(c) for v, c in enumerate(counts) if c})
        summary.masks += 1
    return summary


def audit(summary: MaskSummary, classes: int | None, unpaired_images: list[Path]) -> dict:
    """The mask section of stats.json.

    Args:
        summary: value counts over all masks.
        classes: the expected number of classes, if known; values >= it are out of range.
        unpaired_images: images that have no mask.
    """
    values = sorted(summary.pixels_per_value)
    total = sum(summary.pixels_per_value.values()) or 1
    binary_255 = bool(values) and set(values) <= {0, 255} and 255 in values
    expected = range(classes) if classes else range(len(values))
    out_of_range = [v for v in values if v not in expected and not (binary_255 and v == 255)]
    advice = []
    if binary_255:
        advice.append("masks are stored as 0/255: prep reads them as classes 0 and 1, nothing to do")
    if out_of_range:
        advice.append(f"values {out_of_range[:10]} are not class ids 0..{len(expected) - 1}")
    if unpaired_images:
        advice.append(f"{len(unpaired_images)} images have no mask")
    return {
        "masks": summary.masks,
        "values": values,
        "pixel_frequency": {str(v): summary.pixels_per_value[v] / total for v in values},
        "binary_0_255": binary_255,
        "out_of_range": out_of_range,
        "images_without_masks": [str(p) for p in unpaired_images],
        "not_single_channel": summary.not_single_channel,
        "failed": summary.failed,
        "advice": advice,
    }
