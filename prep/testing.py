"""A small test kit for plugin authors (and prep's own tests).

    from prep.testing import installed_plugin, make_classification_dataset, train_briefly

    def test_my_trainer(tmp_path):
        data = make_classification_dataset(tmp_path / "data")
        summary = train_briefly("my-trainer", data, tmp_path / "run")
        assert summary["status"] == "completed"

* ``make_classification_dataset``, ``make_multilabel_dataset`` and ``make_segmentation_dataset``
  write tiny split datasets (as ``prep split`` leaves them) whose classes a model can tell
  apart within an epoch or two;
* ``train_briefly`` trains one short epoch with a registered trainer, on CPU, in one process;
* ``installed_plugin`` registers a module or object of hook implementations for the length of
  a ``with`` block, as if it were an installed plugin.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from prep.layout import IMAGES_DIR, MASKS_DIR

# A fill colour per class: distinct enough that one epoch separates them.
_PALETTE = [(230, 80, 30), (30, 90, 230), (40, 200, 60), (220, 200, 40), (160, 40, 200), (40, 200, 200)]


def make_classification_dataset(
    root: Path, classes: Sequence[str] = ("cat", "dog"), *, per_class: int | Mapping[str, int] = 8,
    valid_per_class: int | Mapping[str, int] = 4, size: int = 32, seed: int = 0,
) -> Path:
    """Write ``root/train/<class>/*.png`` and ``root/valid/<class>/*.png``: noisy images with
    a square of each class's own colour; ``per_class`` and ``valid_per_class`` are counts
    for every class, or per class name (an imbalanced dataset).

    Returns:
        ``root``.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("valid", valid_per_class)):
        for index, name in enumerate(classes):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count if isinstance(count, int) else count[name]):
                pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                side = size // 2
                y, x = rng.integers(0, size - side, 2)
                pixels[y : y + side, x : x + side] = _PALETTE[index % len(_PALETTE)]
                Image.fromarray(pixels).save(folder / f"{name}_{i}.png")
    return Path(root)


def make_multilabel_dataset(
    root: Path, tags: Sequence[str] = ("red", "blue", "green"), *, per_split: Mapping[str, int] | None = None,
    size: int = 32, seed: int = 0,
) -> Path:
    """Write ``root/<split>/images/*.png`` and ``root/<split>/labels.csv``: noisy images
    holding a square of each of their tags' colours, every image at least one tag, every
    tag in every split.

    Returns:
        ``root``.
    """
    import numpy as np
    from PIL import Image

    from prep.split.tag_manifest import labels_text
    from prep.layout import LABELS_FILE, TAG_SEPARATOR

    rng = np.random.default_rng(seed)
    for split, count in (per_split or {"train": 12, "valid": 6}).items():
        images = Path(root) / split / IMAGES_DIR
        images.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            held = [t for t in range(len(tags)) if rng.random() < 0.5]
            held = sorted(set(held) | {i % len(tags)})  # every image a tag, every tag an image
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            side = size // 3
            for tag in held:
                y, x = rng.integers(0, size - side, 2)
                pixels[y : y + side, x : x + side] = _PALETTE[tag % len(_PALETTE)]
            Image.fromarray(pixels).save(images / f"{i}.png")
            rows.append((f"{i}.png", TAG_SEPARATOR.join(tags[t] for t in held)))
        (Path(root) / split / LABELS_FILE).write_text(labels_text(rows), encoding="utf-8")
    return Path(root)


def make_segmentation_dataset(
    root: Path, *, per_split: dict[str, int] | None = None, size: int = 32, classes: int = 2, seed: int = 0,
) -> Path:
    """Write ``root/<split>/images/*.png`` and ``root/<split>/masks/*.png``: noisy images with
    bright rectangles, and masks of their class ids (0 is background; with ``classes`` > 2
    each rectangle takes the id of its colour).

    Returns:
        ``root``.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (per_split or {"train": 8, "valid": 4}).items():
        images, masks = Path(root) / split / IMAGES_DIR, Path(root) / split / MASKS_DIR
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), dtype=np.uint8)
            for class_id in range(1, classes):
                h, w = rng.integers(size // 4, size // 2, 2)
                y, x = rng.integers(0, size - h), rng.integers(0, size - w)
                pixels[y : y + h, x : x + w] = _PALETTE[(class_id - 1) % len(_PALETTE)]
                mask[y : y + h, x : x + w] = class_id
            Image.fromarray(pixels).save(images / f"{i}.png")
            Image.fromarray(mask).save(masks / f"{i}.png")
    return Path(root)


def train_briefly(trainer: str, data: Path, run_dir: Path, **options: Any) -> dict[str, Any]:
    """Train one short epoch with the registered trainer ``trainer`` on ``data``: on CPU, in
    this process, offline (``weights="none"``), 32 px images without augmentation. ``options`` are ``prep.TrainOptions``
    fields that replace these settings (``epochs=2``, ``collate="mixup"`` ...).

    Returns:
        The run's summary (as ``prep train --json`` prints it).
    """
    from prep.train.options import TrainOptions
    from prep.train.run import train

    settings = dict(plugin=trainer, weights="none", epochs=1, image_size=32, batch_size=8, preset="none", workers=0, device="cpu", run_dir=Path(run_dir))
    return train(Path(data), TrainOptions(**{**settings, **options}))


@contextmanager
def installed_plugin(plugin: object, name: str) -> Iterator[None]:
    """Register ``plugin`` (a module or an object with hook implementations) while the block
    runs, with the registries refilled so that its ``register_*`` hooks count too."""
    from prep.plugins import temporary_plugin

    with temporary_plugin(plugin, name):
        yield
