"""Auditing segmentation masks: which values they store, and whether those are class ids
(the values come from the dataset's one reading of its masks, ``prep.masks.scan``)."""

from __future__ import annotations

from pathlib import Path

from prep.masks.scan import StoredValues


def audit(summary: StoredValues, classes: int | None, unpaired_images: list[Path]) -> dict:
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
