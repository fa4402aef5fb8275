"""DatasetIndex: a dataset listed once per command, its masks read once, and standing for the
dataset's root wherever a path is expected."""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import PIL.Image
import pytest

from prep.data.index import DatasetIndex
from prep.errors import DatasetNotFoundError
from prep.testing import make_classification_dataset, make_segmentation_dataset, train_briefly


def _count_listings_and_mask_reads(monkeypatch: pytest.MonkeyPatch, root: Path) -> tuple[collections.Counter, list[str]]:
    """Every listing of a folder of ``root``, and every mask file opened, from now on."""
    listings: collections.Counter = collections.Counter()
    masks: list[str] = []
    real_scandir, real_open = os.scandir, PIL.Image.open

    def scandir(path="."):
        listings[os.path.relpath(os.path.abspath(path), root)] += 1
        return real_scandir(path)

    def image_open(fp, *args, **kwargs):
        if "/masks/" in str(fp):
            masks.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(PIL.Image, "open", image_open)
    return listings, masks


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_one_training_lists_each_folder_once_and_reads_every_mask_once_before_the_first_batch(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    if task == "segmentation":
        root = make_segmentation_dataset(tmp_path / "data").resolve()
        options = dict(plugin="unet", arch="unet-resnet18")
    else:
        root = make_classification_dataset(tmp_path / "data").resolve()
        options = dict(plugin="resnet-finetune", arch="resnet18")
    listings, masks = _count_listings_and_mask_reads(monkeypatch, root)
    # No stats.json: normalisation computes it, which reads the dataset once more (and used to
    # list it again); no cache, so that every image is read by the batches themselves.
    summary = train_briefly(options.pop("plugin"), root, tmp_path / "run", normalize="dataset", cache="off", **options)
    assert summary["status"] == "completed"
    inside = {folder: n for folder, n in listings.items() if not folder.startswith("..")}
    assert inside["."] == 1  # the root, listed once (6 times for classification, 7 for segmentation before)
    assert max(inside.values()) == 1, inside  # and so is every folder in it
    if task == "segmentation":
        counts = collections.Counter(masks)
        train = [str(p) for p in (root / "train" / "masks").iterdir()]
        valid = [str(p) for p in (root / "valid" / "masks").iterdir()]
        # Before the first batch, one read of each mask (there were three); then the epoch's
        # batches read each training mask once more, and validation (and the examples
        # picture) each validation mask.
        assert sorted(counts) == sorted(train + valid)
        assert all(counts[m] == 2 for m in train), {m: counts[m] for m in train}
        assert all(counts[m] in (2, 3) for m in valid), {m: counts[m] for m in valid}


def test_an_index_stands_for_the_root_wherever_a_path_is_expected(tmp_path: Path):
    root = make_classification_dataset(tmp_path / "data")
    index = DatasetIndex.open(root)
    assert os.fspath(index) == str(root) and str(index) == str(root) and Path(index) == root
    assert index / "train" == root / "train" and index.name == "data" and index.is_dir()
    assert sorted(p.name for p in index.iterdir()) == ["train", "valid"]
    assert DatasetIndex.of(index) is index and DatasetIndex.of(root).root == root
    assert index.kind == "classification" and index.class_names() == ["cat", "dog"]
    assert len(index.classification_samples("val", ["cat", "dog"])) == 8  # val reads as valid
    # A dataset that keeps its root can go to a loader's worker process: the index pickles.
    assert pickle.loads(pickle.dumps(index)).class_names() == ["cat", "dog"]


def test_a_split_that_is_not_there_and_a_folder_that_is_not_a_dataset_are_one_line(tmp_path: Path):
    root = make_classification_dataset(tmp_path / "data")
    with pytest.raises(DatasetNotFoundError, match=r"has no test split \(it has train, valid\)"):
        DatasetIndex.open(root).folder("test")
    with pytest.raises(DatasetNotFoundError, match="has no train/ folder; run prep split on it first"):
        DatasetIndex.open(root / "train")
    with pytest.raises(DatasetNotFoundError, match="is not a folder"):
        DatasetIndex.open(tmp_path / "nowhere")


def test_the_masks_are_read_once_for_the_task_and_for_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from prep.stats.dataset_stats import compute_dataset_stats

    root = make_segmentation_dataset(tmp_path / "data", classes=3).resolve()
    index = DatasetIndex.open(root)
    _, masks = _count_listings_and_mask_reads(monkeypatch, root)
    assert index.mask_classes().names == ["class_0", "class_1", "class_2"]
    stats = compute_dataset_stats(index, workers=1)
    assert len(masks) == 12 and len(set(masks)) == 12  # every mask once, for both
    assert stats["masks"]["values"] == [0, 1, 2] and stats["masks"]["classes"] == ["class_0", "class_1", "class_2"]
