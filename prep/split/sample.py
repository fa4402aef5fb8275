"""Synthetic datasets shaped exactly like the Kaggle downloads, for demos and tests.

``classification`` mimics dogs-vs-cats: ``train/cat.0.jpg ... dog.N.jpg`` and an unlabeled
``test1/1.jpg ...``. ``segmentation`` mimics Carvana: ``train/<id>_<view>.jpg`` with
``train_masks/<id>_<view>_mask.png``. Images are JPEGs 300-500 px wide with varied aspect
ratios and textured backgrounds (20-40 KB each, as in the real download). The classes
differ in shape and palette, so a small CNN learns them in a few epochs.
"""

from __future__ import annotations

import random
from pathlib import Path

from prep.errors import TargetExistsError, UsageError, check_choice
from prep.util.progress import NO_PROGRESS, Progress

KINDS = ("classification", "segmentation")


def _background(rng: random.Random, width: int, height: int):
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(rng.getrandbits(32))
    base = np.array([rng.randint(60, 200) for _ in range(3)], dtype=np.float32)
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    gradient = base + 50 * (ys - 0.5) * np.array([rng.uniform(-1, 1) for _ in range(3)], dtype=np.float32)
    noise = gen.normal(0, 8, (height, width, 3)).astype(np.float32)
    pixels = np.clip(gradient + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _classification_image(rng: random.Random, label: str):
    from PIL import ImageDraw

    width = rng.randint(300, 500)
    height = int(width * rng.uniform(0.65, 1.25))
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 4)):
        size = rng.randint(width // 6, width // 3)
        x, y = rng.randint(0, width - size), rng.randint(0, height - size)
        if label == "cat":  # warm round shapes
            colour = (rng.randint(200, 255), rng.randint(90, 160), rng.randint(0, 60))
            draw.ellipse((x, y, x + size, y + size), fill=colour)
        else:  # cool angular shapes
            colour = (rng.randint(0, 60), rng.randint(90, 160), rng.randint(200, 255))
            draw.rectangle((x, y, x + size, y + size // 2), fill=colour)
    return image


def _car_image(rng: random.Random):
    from PIL import Image, ImageDraw

    width, height = 480, 320
    image = _background(rng, width, height)
    mask = Image.new("L", (width, height), 0)
    body_w, body_h = rng.randint(220, 340), rng.randint(80, 120)
    x, y = rng.randint(10, width - body_w - 10), rng.randint(90, height - body_h - 20)
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    for target, fill in ((ImageDraw.Draw(image), colour), (ImageDraw.Draw(mask), 255)):
        target.rounded_rectangle((x, y, x + body_w, y + body_h), radius=20, fill=fill)
        target.ellipse((x + body_w // 5, y - body_h // 2, x + 4 * body_w // 5, y + body_h // 2), fill=fill)
    return image, mask


def write_sample(folder: Path, n: int = 200, seed: int = 0, kind: str = "classification", progress: Progress = NO_PROGRESS) -> int:
    """Write a synthetic Kaggle-shaped dataset into ``folder``; return the files written.

    Args:
        folder: created if missing; must not already hold the files.
        n: images per class (classification, plus n // 4 unlabeled test images) or cars
            (segmentation, 4 views each).
        seed: the same seed writes the same bytes.
        kind: ``classification`` or ``segmentation``.

    Raises:
        UsageError: unknown kind or n < 1.
        TargetExistsError: the folder already has a ``train`` folder.
    """
    check_choice("--kind", kind, KINDS)
    if n < 1:
        raise UsageError("--n must be at least 1")
    if (folder / "train").exists():
        raise TargetExistsError(f"{folder / 'train'} already exists; choose an empty folder.")
    rng = random.Random(seed)
    train = folder / "train"
    train.mkdir(parents=True)
    written = 0
    if kind == "classification":
        (folder / "test1").mkdir(exist_ok=True)
        jobs = [(train / f"{label}.{i}.jpg", label) for i in range(n) for label in ("cat", "dog")]
        jobs += [(folder / "test1" / f"{i + 1}.jpg", rng.choice(("cat", "dog"))) for i in range(n // 4)]
        with progress.task("Writing sample images", len(jobs)) as advance:
            for path, label in jobs:
                _classification_image(rng, label).save(path, quality=85)
                written += 1
                advance(1)
        return written
    masks = folder / "train_masks"
    masks.mkdir()
    with progress.task("Writing sample images", n * 4) as advance:
        for _ in range(n):
            car = f"{rng.getrandbits(48):012x}"
            for view in range(1, 5):
                image, mask = _car_image(rng)
                image.save(train / f"{car}_{view:02d}.jpg", quality=85)
                mask.save(masks / f"{car}_{view:02d}_mask.png")
                written += 2
                advance(1)
    return written
