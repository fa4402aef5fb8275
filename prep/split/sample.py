"""Synthetic datasets shaped exactly like the Kaggle downloads, for demos and tests.

``classification`` mimics dogs-vs-cats: ``train/cat.0.jpg ... dog.N.jpg`` and an unlabeled
``test1/1.jpg ...``. ``segmentation`` mimics Carvana: ``train/<id>_<view>.jpg`` with
``train_masks/<id>_<view>_mask.png``. Images are JPEGs 300-500 px wide with varied aspect
ratios and textured backgrounds (20-40 KB each, as in the real download). The classes
differ in shape and palette, so a small CNN learns them in a few epochs. ``multilabel``
mimics Planet ("Understanding the Amazon from Space"): ``train-jpg/train_<i>.jpg`` (256 x
256) tagged in ``train_v2.csv`` (``image_name,tags``, space-separated: one weather tag and
the land's), and unlabeled ``test-jpg/test_<i>.jpg``; each tag draws its own feature (a
river for water, grey lines for road, tan fields for agriculture, ...), two of them rare.
"""

from __future__ import annotations

import random
from pathlib import Path

from prep.errors import TargetExistsError, UsageError, check_choice
from prep.util.progress import NO_PROGRESS, Progress

KINDS = ("classification", "segmentation", "multilabel")
PLANET_CSV = "train_v2.csv"
WEATHER = (("clear", 0.7), ("partly_cloudy", 0.15), ("haze", 0.08), ("cloudy", 0.07))
# Land tags and how often they occur (Planet's proportions, roughly; the last two are rare).
LAND = (
    ("primary", 0.9), ("agriculture", 0.3), ("road", 0.22), ("water", 0.18), ("habitation", 0.1),
    ("cultivation", 0.1), ("bare_ground", 0.05), ("blooming", 0.03), ("selective_logging", 0.03),
)


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


def _planet_tags(rng: random.Random) -> list[str]:
    draw, weather = rng.random(), WEATHER[-1][0]
    for name, share in WEATHER:
        if draw < share:
            weather = name
            break
        draw -= share
    if weather == "cloudy":  # as in Planet: nothing else can be seen
        return [weather]
    land = [name for name, share in LAND if rng.random() < share]
    return [weather] + (land or ["primary"])


def _planet_image(rng: random.Random, tags: list[str]):
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    side = 256
    gen = np.random.default_rng(rng.getrandbits(32))
    base = (34, 92, 40) if "primary" in tags else (120, 110, 80)
    pixels = np.clip(np.array(base, np.float32) + gen.normal(0, 14, (side, side, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    features = {
        "agriculture": lambda: [draw.rectangle(_box(rng, side, 40, 90), fill=(196, 178, 112)) for _ in range(rng.randint(2, 3))],
        "cultivation": lambda: [draw.rectangle(_box(rng, side, 14, 26), fill=(150, 96, 52)) for _ in range(rng.randint(4, 6))],
        "bare_ground": lambda: draw.ellipse(_box(rng, side, 50, 80), fill=(176, 124, 84)),
        "habitation": lambda: [draw.rectangle(_box(rng, side, 6, 10), fill=(220, 60, 50)) for _ in range(rng.randint(8, 14))],
        "water": lambda: draw.line([(0, rng.randint(20, 230))] + [(x, rng.randint(40, 210)) for x in range(64, 257, 64)], fill=(40, 80, 190), width=14),
        "road": lambda: [draw.line((rng.randint(0, 255), 0, rng.randint(0, 255), 255), fill=(200, 200, 200), width=4) for _ in range(2)],
        "selective_logging": lambda: [draw.line(_box(rng, side, 30, 60), fill=(110, 70, 30), width=2) for _ in range(5)],
        "blooming": lambda: [draw.ellipse(_box(rng, side, 5, 9), fill=(230, 120, 220)) for _ in range(20)],
    }
    for tag in tags:
        if tag in features:
            features[tag]()
    if "haze" in tags:
        image = Image.blend(image, Image.new("RGB", image.size, (210, 210, 215)), 0.45).filter(ImageFilter.GaussianBlur(2))
    elif "partly_cloudy" in tags:
        clouds = ImageDraw.Draw(image)
        for _ in range(rng.randint(2, 3)):
            clouds.ellipse(_box(rng, side, 50, 90), fill=(245, 245, 245))
    elif "cloudy" in tags:
        image = Image.blend(image, Image.new("RGB", image.size, (240, 240, 240)), 0.85)
    return image


def _box(rng: random.Random, side: int, smallest: int, largest: int) -> tuple[int, int, int, int]:
    size = rng.randint(smallest, largest)
    x, y = rng.randint(0, side - size), rng.randint(0, side - size)
    return x, y, x + size, y + size


def _write_planet(folder: Path, n: int, rng: random.Random, progress: Progress) -> int:
    import csv

    train, test = folder / "train-jpg", folder / "test-jpg"
    train.mkdir(parents=True)
    test.mkdir(exist_ok=True)
    rows = [(f"train_{i}", _planet_tags(rng)) for i in range(n)]
    jobs = [(train / f"{name}.jpg", tags) for name, tags in rows] + [(test / f"test_{i}.jpg", _planet_tags(rng)) for i in range(max(1, n // 4))]
    with progress.task("Writing sample images", len(jobs)) as advance:
        for path, tags in jobs:
            _planet_image(rng, tags).save(path, quality=90)
            advance(1)
    with (folder / PLANET_CSV).open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(("image_name", "tags"))
        writer.writerows((name, " ".join(tags)) for name, tags in rows)
    return len(jobs) + 1


def write_sample(folder: Path, n: int = 200, seed: int = 0, kind: str = "classification", progress: Progress = NO_PROGRESS) -> int:
    """Write a synthetic Kaggle-shaped dataset into ``folder``; return the files written.

    Args:
        folder: created if missing; must not already hold the files.
        n: images per class (classification, plus n // 4 unlabeled test images), cars
            (segmentation, 4 views each) or tagged images (multilabel, plus n // 4 test images).
        seed: the same seed writes the same bytes.
        kind: ``classification``, ``segmentation`` or ``multilabel``.

    Raises:
        UsageError: unknown kind or n < 1.
        TargetExistsError: the folder already has a ``train`` (or ``train-jpg``) folder.
    """
    check_choice("--kind", kind, KINDS)
    if n < 1:
        raise UsageError("--n must be at least 1")
    rng = random.Random(seed)
    if kind == "multilabel":
        if (folder / "train-jpg").exists() or (folder / PLANET_CSV).exists():
            raise TargetExistsError(f"{folder} already holds a sample (train-jpg/ or {PLANET_CSV}); choose an empty folder.")
        return _write_planet(folder, n, rng, progress)
    if (folder / "train").exists():
        raise TargetExistsError(f"{folder / 'train'} already exists; choose an empty folder.")
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
