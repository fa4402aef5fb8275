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


# The error view's colours: what the model added, what it missed, and a wrong class.
FALSE_POSITIVE = (255, 0, 255)
FALSE_NEGATIVE = (0, 230, 255)
WRONG_CLASS = (255, 220, 0)


def errors(image: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``image`` darkened, with each wrong pixel coloured by its kind of error: a false
    positive (a class predicted on the truth's background), a false negative (a class the
    model left as background) or a wrong class. Ignored pixels (negative truth) are no error."""
    out = image.astype(np.float32) * 0.45
    judged = truth >= 0
    positive, negative = (predicted > 0) & (truth == 0), (predicted == 0) & (truth > 0)
    swapped = (predicted > 0) & (truth > 0) & (predicted != truth)
    for where, colour in ((positive, FALSE_POSITIVE), (negative, FALSE_NEGATIVE), (swapped, WRONG_CLASS)):
        out[where & judged] = colour
    return out.clip(0, 255).astype(np.uint8)


def write_overlay_grid(
    rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, str]], classes: Sequence[str], colours: np.ndarray, path: Path, title: str,
    *, show_errors: bool = False,
) -> Path:
    """One row per sample: the image, the truth and the prediction overlaid, with a caption;
    with ``show_errors``, a fourth picture of the wrong pixels (``errors``).

    Args:
        rows: ``(image, truth, prediction, caption)``; masks are class indices.
        classes: the class names, for the legend.
        colours: ``classes x 3`` uint8.
    """
    from matplotlib.patches import Patch

    from prep.util.figures import pyplot

    plt = pyplot()
    columns = 4 if show_errors else 3
    figure, axes = plt.subplots(len(rows), columns, figsize=(3 * columns, 3 * len(rows) + 0.9), squeeze=False)
    for row, (image, truth, predicted, caption) in zip(axes, rows):
        pictures = [("image", image), ("truth", overlay(image, truth, colours)), (f"prediction: {caption}", overlay(image, predicted, colours))]
        if show_errors:
            wrong = int(((predicted != truth) & (truth >= 0)).sum())
            pictures.append((f"errors: {wrong / max(int((truth >= 0).sum()), 1):.1%} of pixels", errors(image, truth, predicted)))
        for axis, (name, picture) in zip(row, pictures):
            axis.imshow(picture)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(name, fontsize=9)
    handles = [Patch(color=np.asarray(colours[i]) / 255, label=name) for i, name in enumerate(classes) if i > 0]
    if show_errors:
        handles += [
            Patch(color=np.asarray(FALSE_POSITIVE) / 255, label="false positive"),
            Patch(color=np.asarray(FALSE_NEGATIVE) / 255, label="false negative"),
        ] + ([Patch(color=np.asarray(WRONG_CLASS) / 255, label="wrong class")] if len(classes) > 2 else [])
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.05, 1, 0.96))
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
