"""Each cross-validation fold's normalisation, from that fold's training part only, with the
pool's images read once for all folds.

Fold k trains on every fold but k, so its mean and std come from those folds' pixels alone:
computed on the whole pool they would leak the validation images into training. Per-channel
histograms add up exactly (``prep.stats.channels``), so one pass records a histogram per
fold, and fold k's statistics are those of the sum of the others' (K passes would read the
pool K - 1 times over). The histograms are kept in ``DATA/.prep/fold-stats.json``, tied to
the exact bytes of ``folds.csv``; a dataset on a read-only disk computes them again per run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from prep.errors import DatasetNotFoundError
from prep.layout import FOLDS_FILE
from prep.stats.channels import PixelSummary
from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from prep.data.index import DatasetIndex

FOLD_STATS_FILE = Path(".prep") / "fold-stats.json"
FOLD_STATS_FORMAT = "prep-fold-stats/1"

log = logging.getLogger(__name__)


def _folds_digest(root: Path) -> str:
    return hashlib.sha256((root / FOLDS_FILE).read_bytes()).hexdigest()


def _histogram_job(chunk: list[str]) -> np.ndarray:
    from prep.stats.dataset_stats import summarize_images

    return summarize_images(chunk, False).histogram


def fold_histograms(parent: "DatasetIndex", workers: int | None = None, progress: Progress = NO_PROGRESS) -> list[np.ndarray]:
    """A ``3 x 256`` histogram of the pixels of each fold's images, read once (kept in the
    index for the folds that follow, and in ``.prep/fold-stats.json`` for later runs)."""
    def compute() -> list[np.ndarray]:
        root = parent.root
        digest = _folds_digest(root)
        saved = _read_saved(root / FOLD_STATS_FILE, digest)
        if saved is not None:
            return saved
        from prep.util.parallel import map_chunks

        manifest = parent.fold_manifest()
        count = max(manifest.values()) + 1
        histograms = []
        with progress.task(f"Reading train images for {count} folds' statistics", len(manifest)) as advance:
            for fold in range(count):
                images = sorted(str(root / rel) for rel, f in manifest.items() if f == fold)
                parts = map_chunks(
                    _histogram_job, images, chunk_size=32, workers=workers or os.cpu_count() or 1, min_items=33,
                    advance=advance,
                )
                histograms.append(sum(parts, np.zeros((3, 256), dtype=np.int64)))
        _save(root / FOLD_STATS_FILE, digest, histograms)
        return histograms

    return parent.once("fold histograms", compute)


def fold_mean_std(index: "DatasetIndex", workers: int | None = None, progress: Progress = NO_PROGRESS) -> tuple[list[float], list[float]]:
    """The mean and std of fold ``index.fold``'s training part: every other fold's pixels.

    Raises:
        DatasetNotFoundError: the training part holds no readable image.
    """
    histograms = fold_histograms(index.parent, workers, progress)
    train = sum(h for fold, h in enumerate(histograms) if fold != index.fold)
    mean, std = PixelSummary(histogram=train).mean_std()
    if not np.isfinite(mean).all():
        raise DatasetNotFoundError(f"Fold {index.fold}'s training part in {index.root} holds no readable image to compute statistics from")
    return mean, std


def _read_saved(path: Path, digest: str) -> list[np.ndarray] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FOLD_STATS_FORMAT or data.get("folds_csv_sha256") != digest:
            return None
        return [np.asarray(h, dtype=np.int64).reshape(3, 256) for h in data["histograms"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(path: Path, digest: str, histograms: list[np.ndarray]) -> None:
    from prep.util.files import atomic_write_json

    data = {"format": FOLD_STATS_FORMAT, "folds_csv_sha256": digest, "histograms": [h.tolist() for h in histograms]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own per process: torchrun's processes may all write it at once.
        atomic_write_json(path, data, tmp=path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    except OSError as exc:  # a read-only dataset: the statistics are simply computed again next time
        log.info("Could not keep the folds' statistics in %s: %s", path, exc)
