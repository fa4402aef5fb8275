"""A picture of what training will see: sample images, each with augmented versions."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from prep.augment.presets import build_pipeline
from prep.data.index import DatasetIndex
from prep.layout import MULTILABEL, SEGMENTATION
from prep.util.files import atomic_write_bytes
from prep.images.decode import load_rgb

def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with each region of the mask outlined, two pixels wide, in black and
    white: an outline shows on any colour, where a tint turns a cyan car grey and
    vanishes on a red one."""
    out = image.copy()
    edge = _edges(mask)
    thick = edge | np.roll(edge, 1, axis=0) | np.roll(edge, 1, axis=1)
    out[thick] = 0
    out[edge] = 255
    return out


def _edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask whose right or lower neighbour belongs to another region."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    return edge


def render_preview(
    root: Path,
    out: Path,
    *,
    preset: str = "medium",
    images: int = 4,
    versions: int = 5,
    image_size: int = 160,
    split: str = "train",
    seed: int = 0,
) -> Path:
    """Draw a grid PNG: one row per sample image, the eval view first, then augmented views.

    Segmentation masks are overlaid in red, after the same augmentation as their image.

    Returns:
        The path written.
    """
    from PIL import Image, ImageDraw

    from prep.masks.read import mask_ids

    index = DatasetIndex.of(root)
    layout = index.kind  # what the presets call the task: masks follow geometric transforms
    if split not in index.splits:
        from prep.errors import DatasetNotFoundError

        raise DatasetNotFoundError(f"{root} has no {split} split (it has {', '.join(index.splits)}); choose one with --split")
    if layout == SEGMENTATION:
        pairs = index.segmentation_pairs(split)[0]
        chosen = random.Random(seed).sample(pairs, min(images, len(pairs)))
        table = index.class_table()  # colour-coded masks need it
        rows = [(load_rgb(i), mask_ids(m, table).astype("uint16"), i.name) for i, m in chosen]
    elif layout == MULTILABEL:  # each image named with its tags
        tags = index.class_names()
        samples = index.multilabel_samples(split, tags)
        chosen = random.Random(seed).sample(samples, min(images, len(samples)))
        rows = [(load_rgb(p), None, f"{p.name}: {' '.join(tags[t] for t in held)}") for p, held in chosen]
    else:
        samples = index.classification_samples(split, index.class_names())
        chosen = random.Random(seed).sample(samples, min(images, len(samples)))
        rows = [(load_rgb(p), None, f"{p.parent.name}/{p.name}") for p, _ in chosen]
    train_pipeline = build_pipeline(preset, image_size, train=True, task=layout, seed=seed)
    eval_pipeline = build_pipeline(preset, image_size, train=False, task=layout)
    pad, label_h = 6, 18
    width = pad + (versions + 1) * (image_size + pad)
    height = label_h + pad + len(rows) * (image_size + label_h + pad)
    canvas = Image.new("RGB", (width, height), (245, 245, 245))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 3), f"preset {preset}: eval view, then {versions} augmented views", fill=(0, 0, 0))
    for r, (pixels, mask, name) in enumerate(rows):
        top = label_h + pad + r * (image_size + label_h + pad)
        draw.text((pad, top), name, fill=(0, 0, 0))
        for c in range(versions + 1):
            pipeline = eval_pipeline if c == 0 else train_pipeline
            result = pipeline(image=pixels, mask=mask) if mask is not None else pipeline(image=pixels)
            tile = result["image"] if mask is None else _overlay(result["image"], result["mask"])
            canvas.paste(Image.fromarray(tile), (pad + c * (image_size + pad), top + label_h))
    import io

    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue(), durable=False)
    return out
