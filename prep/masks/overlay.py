"""Pictures of segmentations: image, truth and prediction side by side, as PNG.

Classes are tinted with their colour (the class table's, else a fixed palette) and
outlined with a white line inside a black one, which stays visible on any image and any
class colour. The background (the first class) is left untinted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

# Distinct, colour-blind-friendly colours (Okabe-Ito, then more) for classes without one.
PALETTE = (
    (0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (120, 120, 120), (153, 0, 0), (0, 102, 51), (102, 51, 153),
)
TINT = 0.45


def class_colours(count: int, colours: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """``count x 3`` uint8: the given colours, else the palette (repeated past its end)."""
    if colours is not None:
        return np.array(colours, dtype=np.uint8)
    return np.array([PALETTE[i % len(PALETTE)] for i in range(count)], dtype=np.uint8)


def _edges(mask: np.ndarray) -> np.ndarray:
    """Pixels whose class differs from a 4-neighbour's."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    return edge


def _grow(edge: np.ndarray) -> np.ndarray:
    grown = edge.copy()
    grown[:-1] |= edge[1:]
    grown[1:] |= edge[:-1]
    grown[:, :-1] |= edge[:, 1:]
    grown[:, 1:] |= edge[:, :-1]
    return grown


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``image`` (``H x W x 3`` uint8) with the classes of ``mask`` (``H x W`` indices;
    negative: ignored) tinted and outlined."""
    out = image.astype(np.float32)
    classes = np.clip(mask, 0, len(colours) - 1)
    tinted = (mask > 0)[..., None]
    out = np.where(tinted, (1 - TINT) * out + TINT * colours[classes].astype(np.float32), out)
    edge = _edges(mask)
    out[_grow(edge)] = 0  # the black outer line
    out[edge] = 255  # the white inner line
    return out.clip(0, 255).astype(np.uint8)


def write_overlay_grid(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]], classes: Sequence[str], colours: np.ndarray, path: Path, title: str) -> Path:
    """One row per sample: the image, the truth and the prediction overlaid, with a caption.

    Args:
        rows: ``(image, truth, prediction, caption)``; masks are class indices.
        classes: the class names, for the legend.
        colours: ``classes x 3`` uint8.
    """
    from prep.util.figures import pyplot

    plt = pyplot()
    figure, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows) + 0.6), squeeze=False)
    for row, (image, truth, predicted, caption) in zip(axes, rows):
        for axis, picture, name in zip(row, (image, overlay(image, truth, colours), overlay(image, predicted, colours)), ("image", "truth", "prediction")):
            axis.imshow(picture)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"{name}: {caption}" if name == "prediction" else name, fontsize=9)
    from matplotlib.patches import Patch

    handles = [Patch(color=np.asarray(colours[i]) / 255, label=name) for i, name in enumerate(classes) if i > 0]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0.04, 1, 0.97))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
