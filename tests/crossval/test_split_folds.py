"""``prep split --folds K``: folds that partition the training pool, stratified, seeded, with
groups and identical files kept in one fold, for every layout; through the API and the CLI."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prep.cli import app
from prep.data.index import DatasetIndex
from prep.errors import FoldsError, TooFewSamplesError, UsageError
from prep.layout import FOLDS_FILE
from prep.split.api import split_dataset, undo_split
from prep.split.folds import assign_folds, read_folds
from prep.split.journal import JOURNAL_NAME, Journal, Status
from prep.split.plan import SplitOptions
from prep.split.splitters import SplitSize, Unit

from conftest import write_colour_images

runner = CliRunner()


def folds_of(root: Path) -> dict[str, int]:
    return read_folds(root)


def flat_dataset_with_duplicates(root: Path, classes=("cat", "dog", "fox"), per_class=(14, 11, 6)) -> Path:
    """Kaggle's flat layout (label before the first dot), with patients in the names
    (``cat.p3.1.png``) and two byte-identical copies."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True)
    for name, count in zip(classes, per_class):
        for i in range(count):
            pixels = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"{name}.p{i // 2}.{i}.png")
    shutil.copy(root / "cat.p0.0.png", root / "cat.copy.png")
    shutil.copy(root / "dog.p1.3.png", root / "dog.copy.png")
    return root


def test_folds_partition_the_training_pool_and_are_stratified(tmp_path: Path):
    raw = flat_dataset_with_duplicates(tmp_path / "raw")
    report = split_dataset(raw, SplitOptions(folds=3, test=SplitSize(0.2, False), out=tmp_path / "out", mode="copy", valid=SplitSize(0, False)))
    out = tmp_path / "out"
    folds = folds_of(out)
    train_images = {p.relative_to(out).as_posix() for p in (out / "train").rglob("*.png")}
    assert set(folds) == train_images  # every training image in exactly one fold
    assert not (out / "valid").exists() and (out / "test").is_dir()
    test_images = {p.name for p in (out / "test").rglob("*.png")}
    assert not test_images & {Path(p).name for p in folds}  # the test split is held out first
    assert sorted(set(folds.values())) == [0, 1, 2]
    # Stratified: each class is spread over the folds within one sample.
    for label in ("cat", "dog", "fox"):
        per_fold = Counter(f for p, f in folds.items() if p.startswith(f"train/{label}/"))
        assert max(per_fold.values()) - min(per_fold.values()) <= 1, (label, per_fold)
    assert report.folds == {str(f): dict(Counter(p.split("/")[1] for p, g in folds.items() if g == f)) for f in range(3)}
    assert sum(report.fold_sizes.values()) == len(folds)
    # Each fold's view: train is the other folds, valid this one, and they never meet.
    index = DatasetIndex.open(out)
    classes = index.class_names()
    for fold in range(3):
        view = index.fold_view(fold)
        train = {p.relative_to(out).as_posix() for p, _ in view.classification_samples("train", classes)}
        valid = {p.relative_to(out).as_posix() for p, _ in view.classification_samples("valid", classes)}
        assert valid == {p for p, f in folds.items() if f == fold}
        assert train == set(folds) - valid


def test_groups_and_identical_files_stay_in_one_fold(tmp_path: Path):
    raw = flat_dataset_with_duplicates(tmp_path / "raw")
    split_dataset(raw, SplitOptions(folds=3, group_pattern=r"^(\w+\.p\d+)\.", out=tmp_path / "out", mode="copy", valid=SplitSize(0, False)))
    folds = folds_of(tmp_path / "out")
    by_group: dict[str, set[int]] = {}
    for path, fold in folds.items():
        name = Path(path).name
        if ".p" in name:
            by_group.setdefault(name.split(".")[0] + name.split(".")[1], set()).add(fold)
    assert by_group and all(len(f) == 1 for f in by_group.values()), by_group
    # The copies sit with their originals.
    fold_of_name = {Path(p).name: f for p, f in folds.items()}
    assert fold_of_name["cat.copy.png"] == fold_of_name["cat.p0.0.png"]
    assert fold_of_name["dog.copy.png"] == fold_of_name["dog.p1.3.png"]


def test_the_same_seed_gives_the_same_folds_and_another_seed_others(tmp_path: Path):
    raw = flat_dataset_with_duplicates(tmp_path / "raw")
    texts = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        split_dataset(raw, SplitOptions(folds=4, seed=seed, out=tmp_path / name, mode="copy", valid=SplitSize(0, False)))
        texts.append((tmp_path / name / FOLDS_FILE).read_text())
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_fold_assignment_is_fixed_for_a_seed_on_every_machine():
    """String seeds go through SHA-512 in random.Random: these folds are the same on any
    machine and Python version; a change to the dealing would show here first."""
    units = [Unit(f"{label}/{i}.png", label, 1) for label in ("a", "b") for i in range(5)]
    dealt = assign_folds(units, 5, 42)
    assert sorted(dealt[:5]) == sorted(dealt[5:]) == [0, 1, 2, 3, 4]  # one of each class per fold
    assert dealt == [3, 0, 2, 1, 4, 2, 0, 3, 1, 4]
    big = [Unit(f"u{i}", "a", size) for i, size in enumerate([3, 1, 1, 1, 2, 2])]
    folds = assign_folds(big, 2, 0)
    assert sum(u.size for u, f in zip(big, folds) if f == 0) == sum(u.size for u, f in zip(big, folds) if f == 1) == 5


def test_segmentation_folds_spread_the_images_of_a_rare_class(tmp_path: Path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        mask = np.zeros((16, 16), np.uint8)
        mask[:6] = 1
        if i % 6 == 0:
            mask[10:, 10:] = 2  # a rare class, in 5 masks
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(raw / "images" / f"s{i:02d}.png")
        Image.fromarray(mask).save(raw / "masks" / f"s{i:02d}.png")
    report = split_dataset(raw, SplitOptions(folds=5, out=tmp_path / "out", mode="copy", valid=SplitSize(0, False)))
    folds = folds_of(tmp_path / "out")
    assert len(folds) == 30 and all(p.startswith("train/images/") for p in folds)
    rare = Counter(folds[f"train/images/s{i:02d}.png"] for i in range(0, 30, 6))
    assert sorted(rare.values()) == [1, 1, 1, 1, 1]  # one image of the rare class in every fold
    assert {report.folds[str(f)]["class 2"] for f in range(5)} == {1}
    assert report.rare_classes == {}


def test_too_small_a_class_and_too_large_a_group_stop_before_anything_moves(tmp_path: Path):
    raw = flat_dataset_with_duplicates(tmp_path / "raw")
    before = sorted(p.name for p in raw.iterdir())
    with pytest.raises(TooFewSamplesError, match=r"'fox' \(6\)"):
        split_dataset(raw, SplitOptions(folds=7, valid=SplitSize(0, False)))
    with pytest.raises(TooFewSamplesError, match="larger than a fold"):
        split_dataset(raw, SplitOptions(folds=3, group_pattern=r"^(\w+)\.", valid=SplitSize(0, False)))
    with pytest.raises(UsageError, match="leave out --valid"):
        split_dataset(raw, SplitOptions(folds=3))
    with pytest.raises(UsageError, match="at least 2 folds"):
        split_dataset(raw, SplitOptions(folds=1, valid=SplitSize(0, False)))
    assert sorted(p.name for p in raw.iterdir()) == before and not (raw / JOURNAL_NAME).exists()


def test_undo_and_an_interrupted_split_keep_the_manifest_right(tmp_path: Path):
    raw = flat_dataset_with_duplicates(tmp_path / "raw")
    before = sorted(p.name for p in raw.iterdir())
    split_dataset(raw, SplitOptions(folds=3, valid=SplitSize(0, False)))
    written = (raw / FOLDS_FILE).read_text()
    journal = Journal.load(raw / JOURNAL_NAME)
    assert sum(e.fold is not None for e in journal.entries) == len(read_folds(raw))
    # As if killed after the files moved but before folds.csv was written: a re-run finishes it.
    (raw / FOLDS_FILE).unlink()
    journal.status = Status.IN_PROGRESS
    journal.save()
    with pytest.raises(Exception, match="stopped half-way"):
        DatasetIndex.open(raw)
    assert split_dataset(raw, SplitOptions(folds=3, valid=SplitSize(0, False))).status == "resumed"
    assert (raw / FOLDS_FILE).read_text() == written
    undo_split(raw)
    assert sorted(p.name for p in raw.iterdir()) == before


def test_a_manifest_that_no_longer_matches_train_is_named(tmp_path: Path):
    raw = flat_dataset_with_duplicates(tmp_path / "raw")
    split_dataset(raw, SplitOptions(folds=3, out=tmp_path / "out", mode="copy", valid=SplitSize(0, False)))
    out = tmp_path / "out"
    shutil.copy(out / "train" / "cat" / "cat.p0.0.png", out / "train" / "cat" / "new.png")
    with pytest.raises(FoldsError, match=r"new\.png is in train/ but in no fold"):
        DatasetIndex.open(out).fold_view(0)
    (out / "train" / "cat" / "new.png").unlink()
    (out / "train" / "dog" / "dog.p0.0.png").unlink()
    with pytest.raises(FoldsError, match=r"names train/dog/dog\.p0\.0\.png, which train/ no longer holds"):
        DatasetIndex.open(out).fold_view(0)


def test_split_folds_through_the_cli(tmp_path: Path):
    raw = tmp_path / "raw"
    write_colour_images(raw, 6, 0, classes=["amber", "blue", "red"])
    result = runner.invoke(app, ["split", str(raw), "--folds", "3", "--out", str(tmp_path / "out"), "--mode", "copy"])
    assert result.exit_code == 0, result.output
    assert "Train samples per fold and class" in result.output and "fold 2" in result.output
    assert "prep train --fold all" in result.output
    rows = list(csv.DictReader((tmp_path / "out" / FOLDS_FILE).open()))
    assert len(rows) == 18 and {r["fold"] for r in rows} == {"0", "1", "2"}
    as_json = runner.invoke(app, ["split", str(raw), "--folds", "3", "--out", str(tmp_path / "out2"), "--mode", "copy", "--json"])
    assert json.loads(as_json.stdout)["fold_sizes"] == {"0": 6, "1": 6, "2": 6}
    refused = runner.invoke(app, ["split", str(raw), "--folds", "7", "--out", str(tmp_path / "out3"), "--mode", "copy"])
    assert refused.exit_code == 1 and "'amber' (6)" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "out3").exists()


def test_a_label_csv_dataset_splits_into_folds(tmp_path: Path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    lines = ["id,label"]
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(raw / "images" / f"{i:03d}.png")
        lines.append(f"{i:03d},{'spotted' if i % 3 else 'plain'}")
    (raw / "labels.csv").write_text("\n".join(lines) + "\n")
    report = split_dataset(raw / "images", SplitOptions(folds=4, labels_csv=raw / "labels.csv", out=tmp_path / "out", mode="copy", valid=SplitSize(0, False)))
    assert report.layout == "csv-labels"
    assert report.folds == {str(f): {"plain": 1, "spotted": 2} for f in range(4)}
    assert len(folds_of(tmp_path / "out")) == 12
