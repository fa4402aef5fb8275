"""``compute_dataset_stats``: the function behind ``prep stats``, and stats.json.

``DATA/stats.json`` schema (``format`` is ``prep-stats/1``):

* ``mean``, ``std``: three floats each, RGB, values in [0, 1], over every train pixel;
* ``exact``: false when ``fast`` or ``sample`` made them approximate;
* ``fast``, ``sample``: the options used; ``images``, ``pixels``: what was decoded;
* ``splits``: split -> class -> images (classification), split -> tag -> images holding
  it (multi-label, with ``tags``, ``images_per_split``, ``tag_shares``, ``tags_per_image``
  and ``co_occurrence``: see ``tag_stats``), or split -> images (segmentation);
* ``classes``, ``class_balance`` (class -> share of train, and ``max_over_min``);
* ``sizes``: ``width`` and ``height`` each with ``min``, ``median``, ``max`` and a
  ``histogram`` (``edges``, ``counts``), from the train images' headers;
* ``modes``, ``formats``: image counts by Pillow mode and file format;
* ``failed``: train images that could not be decoded, each ``{file, reason}``;
* ``masks`` (segmentation only): see ``prep.stats.mask_audit.audit``, plus the masks read as
  training reads them: ``classes`` (names), ``class_pixels`` (name -> share of pixels),
  ``class_table`` (its path, or null) and ``problem`` (what would stop training, or null);
* ``prep_version``, ``created``, ``seconds``.
"""

from __future__ import annotations

import os
import random
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from prep.util.version import __version__
from prep.data.index import DatasetIndex
from prep.stats.balance import ClassBalance
from prep.errors import DatasetNotFoundError, StatsNotFoundError
from prep.layout import MULTILABEL, SEGMENTATION
from prep.util.files import atomic_write_json
from prep.images.decode import ImageDecodeError, decode_image
from prep.util.parallel import map_chunks
from prep.util.progress import NO_PROGRESS, Progress
from prep.stats.channels import PixelSummary
from prep.stats.mask_audit import audit

STATS_FILE = "stats.json"
STATS_FORMAT = "prep-stats/1"
CHUNK = 32
CALIBRATE_EVERY = 16  # --fast decodes one image in this many fully (see prep.stats.channels)


def calibrates(path: str) -> bool:
    """Whether ``--fast`` also decodes this image fully, to measure the detail it loses: a
    sixteenth of the images, the same ones on every run and machine, wherever the dataset
    lies (chosen by the file's name and its folder's, not the whole path)."""
    folder, name = os.path.split(path)
    return zlib.crc32(f"{os.path.basename(folder)}/{name}".encode()) % CALIBRATE_EVERY == 0


def summarize_images(paths: list[str], fast: bool) -> PixelSummary:
    """Decode each image exactly as training does and add up its pixels (a worker's job)."""
    summary = PixelSummary()
    for path in paths:
        try:
            # --fast: a half-scale DCT decode of JPEGs (other formats decode fully).
            image = decode_image(path, min_side=1 if fast else None, max_reduction=2)
            if fast and image.format == "JPEG" and calibrates(path):
                summary.add_calibration(image.pixels, decode_image(path).pixels)
        except (ImageDecodeError, OSError, ValueError) as exc:
            summary.failed.append({"file": path, "reason": str(exc)})
            continue
        summary.add_pixels(image.pixels)
        summary.widths.append(image.width)
        summary.heights.append(image.height)
        summary.modes[image.mode] += 1
        summary.formats[image.format] += 1
    return summary


def _size_summary(values: list[int]) -> dict[str, Any]:
    if not values:
        return {}
    counts, edges = np.histogram(values, bins=10)
    return {
        "min": int(min(values)), "median": float(np.median(values)), "max": int(max(values)),
        "histogram": {"edges": [round(float(e), 1) for e in edges], "counts": [int(c) for c in counts]},
    }


def compute_dataset_stats(
    root: Path,
    *,
    workers: int | None = None,
    fast: bool = False,
    sample: int | None = None,
    seed: int = 0,
    mask_classes: int | None = None,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """Statistics of a split dataset; mean and std come from the train split only.

    Args:
        root: a dataset made by ``prep split`` (``train/`` and optionally ``valid/``,
            ``test/``), or its ``DatasetIndex``, whose listings and mask reading it shares.
        workers: processes decoding images (default: all cores).
        fast: decode JPEGs at half scale; mean and std become approximate.
        sample: decode only this many randomly chosen train images (approximate).
        seed: chooses the sample.
        mask_classes: for segmentation, the number of classes, to flag out-of-range values.
        progress: receives progress updates.

    Returns:
        The stats.json content (see the module docstring).

    Raises:
        DatasetNotFoundError: no train split.
    """
    started = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    import cv2  # noqa: F401 - imported once here, inherited by the forked workers
    import PIL.Image  # noqa: F401
    index = DatasetIndex.of(root)
    segmentation = index.kind == SEGMENTATION
    stats: dict[str, Any] = {"format": STATS_FORMAT, "prep_version": __version__, "dataset": str(index.root)}
    unpaired: list[Path] = []
    if segmentation:
        per_split = {}
        for name in index.splits:
            pairs, missing = index.segmentation_pairs(name)
            per_split[name] = len(pairs)
            unpaired += missing
            if name == "train":
                train_images = [str(i) for i, _ in pairs] + [str(i) for i in missing]
        stats["splits"] = per_split
    elif index.kind == MULTILABEL:
        stats.update(tag_stats(index))
        train_images = [str(path) for path, _ in index.multilabel_samples("train", stats["tags"])]
    else:
        classes = index.class_names()
        counts = {}
        for name in index.splits:
            samples = index.classification_samples(name, classes)
            counts[name] = {c: 0 for c in classes}
            for _, class_index in samples:
                counts[name][classes[class_index]] += 1
            if name == "train":
                train_images = [str(p) for p, _ in samples]
        stats["splits"] = counts
        stats["classes"] = classes
        train_total = sum(counts["train"].values()) or 1
        shares = {c: n / train_total for c, n in counts["train"].items()}
        balance = ClassBalance(tuple(classes), tuple(counts["train"][c] for c in classes))
        stats["class_balance"] = {"shares": shares, "max_over_min": balance.ratio, "imbalanced": balance.imbalanced, "about": balance.describe()}
        stats["absent"] = {split: [c for c, n in per_class.items() if n == 0] for split, per_class in counts.items()}
    if not train_images:
        raise DatasetNotFoundError(f"{index.splits['train']} holds no images to compute statistics from")
    if sample is not None and sample < len(train_images):
        train_images = sorted(random.Random(seed).sample(sorted(train_images), sample))
    with progress.task("Reading train images", len(train_images)) as advance:
        parts = map_chunks(summarize_images, train_images, fast, chunk_size=CHUNK, workers=workers, min_items=CHUNK + 1, advance=advance)
    pixels = sum(parts, PixelSummary())
    mean, std = pixels.mean_std()
    stats.update(
        mean=mean, std=std, exact=not fast and sample is None, fast=fast, sample=sample,
        images=pixels.images, pixels=pixels.pixels,
        sizes={"width": _size_summary(pixels.widths), "height": _size_summary(pixels.heights)},
        modes=dict(pixels.modes), formats=dict(pixels.formats), failed=pixels.failed,
    )
    if segmentation:
        stats["masks"] = {**audit(index.mask_scan(workers, progress).stored, mask_classes, unpaired), **_mask_classes(index)}
    stats["created"] = time.time()
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats


def tag_stats(index: DatasetIndex) -> dict[str, Any]:
    """A multi-label dataset's tags: images holding each tag per split (``splits``, with
    ``images`` per split), the training split's balance and tags per image, how often two
    tags come together there (``co_occurrence``, a row per tag), and the tags a split lacks."""
    tags = index.class_names()
    splits, images = {}, {}
    for name in index.splits:
        samples = index.multilabel_samples(name, tags)
        held = [0] * len(tags)
        for _, sample_tags in samples:
            for tag in sample_tags:
                held[tag] += 1
        splits[name] = dict(zip(tags, held))
        images[name] = len(samples)
    train = index.multilabel_samples("train", tags)
    together = [[0] * len(tags) for _ in tags]
    for _, sample_tags in train:
        for a in sample_tags:
            for b in sample_tags:
                together[a][b] += 1
    per_image = [len(sample_tags) for _, sample_tags in train]
    balance = ClassBalance(tuple(tags), tuple(splits["train"][t] for t in tags))
    return {
        "tags": tags, "splits": splits, "images_per_split": images,
        "tag_shares": {t: splits["train"][t] / max(images["train"], 1) for t in tags},
        "tags_per_image": {"mean": sum(per_image) / len(per_image) if per_image else 0.0, "min": min(per_image, default=0), "max": max(per_image, default=0)},
        "co_occurrence": together,
        "class_balance": {"max_over_min": balance.ratio, "imbalanced": balance.imbalanced, "about": balance.describe()},
        "absent": {split: [t for t, n in counts.items() if n == 0] for split, counts in splits.items()},
    }


def _mask_classes(index: DatasetIndex) -> dict[str, Any]:
    """The masks read as training reads them (``prep.masks.scan``): the classes, each one's
    share of the pixels, and what would stop training, if anything."""
    from prep.errors import PrepError
    from prep.layout import CLASS_TABLE

    table = index.root / CLASS_TABLE
    result: dict[str, Any] = {"class_table": str(table) if table.is_file() else None, "problem": None}
    try:
        found = index.mask_classes()
    except PrepError as exc:
        return {**result, "classes": [], "class_pixels": {}, "problem": str(exc)}
    pixels = found.scan.pixels
    counted = sum(pixels[i] for i in found.mapping.ids) or 1
    result["classes"] = found.names
    result["class_pixels"] = {name: pixels.get(i, 0) / counted for name, i in zip(found.names, found.mapping.ids)}
    per_split = {split: index.mask_class_pixels(split) for split in index.splits}
    result["split_class_pixels"] = {split: dict(zip(found.names, counts)) for split, counts in per_split.items()}
    # The classes each split lacks: their scores there are undefined, which stats says now.
    result["absent"] = {split: [n for n, c in zip(found.names, counts) if c == 0] for split, counts in per_split.items()}
    train = per_split.get("train")
    if train is not None:
        balance = ClassBalance(tuple(found.names), tuple(train), "pixels")
        result["class_balance"] = {"max_over_min": balance.ratio, "imbalanced": balance.imbalanced, "about": balance.describe()}
    return result


def write_stats(root: Path, stats: dict[str, Any]) -> Path:
    """Write ``root/stats.json`` atomically; return its path."""
    path = root / STATS_FILE
    atomic_write_json(path, stats, indent=2)
    return path


def stats_kind(root: Path) -> str | None:
    """How ``root/stats.json`` was computed, in words (``exact``, ``approximate: --fast``,
    ``approximate: --sample 500``), or None when there is no readable one."""
    import json

    try:
        data = json.loads((root / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("exact", True):
        return "exact"
    return "approximate: " + ("--fast" if data.get("fast") else f"--sample {data.get('sample')}")


def read_mean_std(root: Path | str) -> tuple[list[float], list[float]]:
    """The normalisation constants that ``prep stats`` wrote for ``root`` (for trainers).

    Raises:
        StatsNotFoundError: there is no usable stats.json; the message says to run prep stats.
    """
    import json

    path = Path(root) / STATS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        mean, std = data["mean"], data["std"]
        if len(mean) != 3 or len(std) != 3 or not all(float(s) > 0 for s in std):
            raise ValueError("mean and std must be three numbers each, std positive")
        return [float(m) for m in mean], [float(s) for s in std]
    except FileNotFoundError:
        raise StatsNotFoundError(f"{path} does not exist; run: prep stats {root}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StatsNotFoundError(f"{path} is not usable ({exc}); run prep stats {root} again") from None
