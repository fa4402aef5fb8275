"""``prep evaluate --cam``: Grad-CAM pictures (``prep.inference.cam``) of the held-out
images a classifier was most sure of, right and wrong, for each class.

Each class's row shows its ``PER_KIND`` most confident right answers, then its ``PER_KIND``
most confident mistakes (images of the class given another), each with the map of the class
the model chose: where it found the evidence for its answer. A wrong answer whose map sits on
the background, a watermark or a frame is the picture's point. With more than ``MOST_CLASSES``
classes, the rows are the classes with the most mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from prep.inference.cam import CamLayer

PER_KIND = 2
MOST_CLASSES = 8


@dataclass(frozen=True)
class Scored:
    """A held-out image: its index in the dataset, given and predicted class, and the
    probability of the prediction."""

    index: int
    label: int
    predicted: int
    confidence: float


def draw_cam(
    model: torch.nn.Module, layer: CamLayer, loader: Any, dataset: Any, classes: Sequence[str], *, mean, std,
    device: torch.device, path: Path, title: str,
) -> dict[str, Any]:
    """Write the picture to ``path``; ``cam_png`` (its path) and ``cam_layer`` (the module
    explained). ``loader`` reads ``dataset`` in order (evaluate's), for the scoring pass."""
    scored = score_images(model, loader, dataset, device, mean, std)
    rows = choose_rows(scored, len(classes))
    chosen = [item for _, right, wrong in rows for item in (*right, *wrong)]
    maps = _maps(model, layer, dataset, chosen, mean, std, device)
    present = len({s.label for s in scored})
    shown = f"{len(rows)} of {present} classes, those with the most mistakes" if len(rows) < present else f"{len(scored)} images"
    drawn = draw(rows, maps, dataset, classes, path, title=f"{title}, Grad-CAM at {layer.name}", shown=shown)
    return {"cam_png": str(drawn), "cam_layer": layer.name}


def score_images(model: torch.nn.Module, loader: Any, dataset: Any, device: torch.device, mean, std) -> list[Scored]:
    """Every readable image's prediction, with its index in ``dataset``, which ``loader``
    reads in order (the collate function leaves unreadable images out, and says which)."""
    from prep.data.collate import to_device_normalized

    scored: list[Scored] = []
    position = 0
    model.eval()
    with torch.no_grad():
        for raw in loader:
            lost = len(raw.skipped)
            skipped_paths = {Path(s.path) for s in raw.skipped}
            indices = [
                i for i in range(position, position + len(raw.inputs) + lost)
                if Path(dataset.sample_files(i)[0]) not in skipped_paths
            ]
            position += len(raw.inputs) + lost
            if not len(raw.inputs):
                continue
            probabilities = torch.softmax(model(to_device_normalized(raw.inputs, mean, std, device)).float(), dim=1).cpu()
            confidence, predicted = probabilities.max(dim=1)
            labels = torch.as_tensor(raw.targets)
            labels = labels.argmax(dim=1) if labels.is_floating_point() else labels
            for i, label, guess, sure in zip(indices, labels.tolist(), predicted.tolist(), confidence.tolist()):
                scored.append(Scored(i, int(label), int(guess), float(sure)))
    return scored


def choose_rows(scored: Sequence[Scored], num_classes: int) -> list[tuple[int, list[Scored], list[Scored]]]:
    """(class, most confident right answers, most confident mistakes) for the classes shown:
    every class with an image, or the ``MOST_CLASSES`` with the most mistakes."""
    by_class: dict[int, list[Scored]] = {c: [] for c in range(num_classes)}
    for item in scored:
        by_class[item.label].append(item)
    rows = []
    for c, items in by_class.items():
        if not items:
            continue
        ranked = sorted(items, key=lambda s: (-s.confidence, s.index))
        right = [s for s in ranked if s.predicted == c][:PER_KIND]
        wrong = [s for s in ranked if s.predicted != c][:PER_KIND]
        rows.append((c, right, wrong, sum(s.predicted != c for s in items)))
    if len(rows) > MOST_CLASSES:
        rows = sorted(sorted(rows, key=lambda r: -r[3])[:MOST_CLASSES], key=lambda r: r[0])
    return [(c, right, wrong) for c, right, wrong, _ in rows]


def _maps(model, layer: CamLayer, dataset, chosen: Sequence[Scored], mean, std, device) -> dict[int, tuple[Any, Any]]:
    """Each chosen image's pixels (as the model saw them, before normalisation) and its map
    of the predicted class, by dataset index."""
    from prep.data.collate import to_device_normalized
    from prep.inference.cam import grad_cam

    found: dict[int, tuple[Any, Any]] = {}
    for start in range(0, len(chosen), 16):
        part = chosen[start : start + 16]
        pixels = torch.stack([dataset[s.index][0] for s in part])
        cams = grad_cam(model, layer, to_device_normalized(pixels, mean, std, device), torch.tensor([s.predicted for s in part]))
        for s, image, cam in zip(part, pixels, cams):
            found[s.index] = (image.numpy(), cam.numpy())
    return found


def draw(rows, maps, dataset, classes: Sequence[str], path: Path, *, title: str, shown: str) -> Path:
    """The titled grid: a row per class, its right answers then its mistakes."""
    from prep.util.figures import pyplot

    plt = pyplot()
    columns = 2 * PER_KIND
    height = 2.9 * max(1, len(rows)) + 0.7  # inches: images with two caption lines, and the title
    figure, axes = plt.subplots(max(1, len(rows)), columns, figsize=(2.5 * columns, height), squeeze=False, layout="constrained")
    for axis in axes.ravel():
        axis.axis("off")
    for axes_row, (c, right, wrong) in zip(axes, rows):
        cells = [(s, True) for s in right] + [None] * (PER_KIND - len(right)) + [(s, False) for s in wrong] + [None] * (PER_KIND - len(wrong))
        for k, (axis, cell) in enumerate(zip(axes_row, cells)):
            if cell is None:
                kind = "right answers" if k < PER_KIND else "mistakes"
                more = "more " if (right if k < PER_KIND else wrong) else ""
                axis.text(0.5, 0.5, f"no {more}{kind}\nfor {classes[c]}", ha="center", va="center", fontsize=8, color="gray", transform=axis.transAxes)
                continue
            item, is_right = cell
            image, cam = maps[item.index]
            axis.imshow(image)
            axis.imshow(cam, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            name = Path(dataset.sample_files(item.index)[0]).name
            said = f"{classes[c]}: right ({item.confidence:.2f})" if is_right else f"{classes[c]}, said {classes[item.predicted]} ({item.confidence:.2f})"
            axis.set_title(f"{said[:34]}\n{name[:30]}", fontsize=8, color="darkgreen" if is_right else "darkred")
    figure.suptitle(
        f"Where the model looked: {title}\n"
        f"each class's most confident right answers (left) and mistakes (right), {shown}; red = evidence for its answer",
        fontsize=10,
    )
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
