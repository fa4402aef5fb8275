"""prep split of multi-label CSVs (Planet's image_name,tags; the Human Protein Atlas's
Id,Target): recognised, stratified over tags by iterative stratification, written as
<split>/images/ with <split>/labels.csv, journaled like every other layout."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from prep.cli import app
from prep.split.iterative import iterative_parts

from conftest import snapshot

runner = CliRunner()


def _raw(root: Path, rows: list[tuple[str, str]], *, header=("image_name", "tags"), folder="train-jpg", ext=".jpg") -> Path:
    """A Kaggle-shaped download: images in ``folder`` and ``labels.csv`` naming them by id."""
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True)
    for name, _ in rows:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / folder / f"{name}{ext}")
    with (root / "labels.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return root


def _labels(path: Path) -> dict[str, str]:
    rows = list(csv.reader(path.read_text().splitlines()))
    assert rows[0] == ["image", "tags"]
    return {image: tags for image, tags in rows[1:]}


def _split(raw: Path, out: Path, *more: str):
    return runner.invoke(app, ["split", str(raw), "--labels", "labels.csv", "--out", str(out), "--mode", "copy", "--json", *more])


def _skewed(count: int = 60) -> list[tuple[str, str]]:
    """Common tags on most rows, and a rare tag on rows 7, 23 and 41 only."""
    rows = []
    for i in range(count):
        tags = ["clear" if i % 5 else "haze", "primary"] + (["water"] if i % 3 == 0 else []) + (["blooming"] if i in (7, 23, 41) else [])
        rows.append((f"train_{i}", " ".join(tags)))
    return rows


def test_a_planet_csv_is_split_into_images_and_labels_per_split(tmp_path: Path):
    raw = _raw(tmp_path / "planet", _skewed())
    result = _split(raw, tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layout"] == "multilabel-csv" and "tags separated by ' '" in report["description"]
    assert report["images"] == {"train": 48, "valid": 12} and report["totals"] == {"train": 48, "valid": 12}
    assert report["splits"]["valid"]["blooming"] == 1 and report["splits"]["train"]["blooming"] == 2
    for split, count in report["images"].items():
        labels = _labels(tmp_path / "out" / split / "labels.csv")
        images = sorted(p.name for p in (tmp_path / "out" / split / "images").iterdir())
        assert sorted(labels) == images and len(images) == count
    every = {**_labels(tmp_path / "out" / "train" / "labels.csv"), **_labels(tmp_path / "out" / "valid" / "labels.csv")}
    given = {f"{name}.jpg": " ".join(sorted(tags.split())) for name, tags in _skewed()}
    assert every == given  # every image with its own tags, sorted


def test_a_protein_atlas_csv_and_its_numbered_tags(tmp_path: Path):
    rows = [(f"{i:04x}", " ".join(str(t) for t in sorted({i % 4, (i * 7) % 11}))) for i in range(40)]
    raw = _raw(tmp_path / "hpa", rows, header=("Id", "Target"), folder="train", ext=".png")
    result = _split(raw, tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["layout"] == "multilabel-csv"
    assert sorted(report["splits"]["train"]) == sorted({t for _, tags in rows for t in tags.split()}, key=str)
    labels = _labels(tmp_path / "out" / "valid" / "labels.csv")
    assert all(name.endswith(".png") for name in labels)


def test_class_names_with_spaces_stay_single_label_and_the_options_decide(tmp_path: Path):
    names = ["Common wheat", "Common Chickweed", "Black-grass", "Loose Silky-bent"]
    rows = [(f"p{i}", names[i % 4]) for i in range(32)]
    raw = _raw(tmp_path / "plants", rows)
    single = _split(raw, tmp_path / "single")
    assert single.exit_code == 0, single.output
    assert json.loads(single.stdout)["layout"] == "csv-labels"
    assert (tmp_path / "single" / "train" / "Common wheat").is_dir()
    forced = _split(raw, tmp_path / "forced", "--multi-label")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["layout"] == "multilabel-csv"
    assert "Common" in json.loads(forced.stdout)["splits"]["train"]
    planet = _raw(tmp_path / "planet", _skewed())
    kept = _split(planet, tmp_path / "kept", "--single-label")
    assert kept.exit_code == 0 and json.loads(kept.stdout)["layout"] == "csv-labels"  # each combination a class


def test_another_separator_is_found_or_given(tmp_path: Path):
    rows = [(f"x{i}", "|".join(["a", "b"] if i % 2 else ["a", "c"]) if i % 3 else "b") for i in range(30)]
    raw = _raw(tmp_path / "pipes", rows)
    result = _split(raw, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "separated by '|'" in json.loads(result.stdout)["description"]
    assert set(json.loads(result.stdout)["splits"]["train"]) == {"a", "b", "c"}


def test_iterative_stratification_puts_every_tag_in_every_part_and_is_seeded():
    tags = [frozenset(t.split()) for _, t in _skewed(90)]
    sizes, keys = [1] * len(tags), [str(i) for i in range(len(tags))]
    parts = iterative_parts(tags, sizes, keys, ("train", "valid", "test"), {"train": 0.6, "valid": 0.2, "test": 0.2}, "42:tags", at_least_one=("valid", "test"))
    assert Counter(parts) == {"train": 54, "valid": 18, "test": 18}
    for part in ("valid", "test"):
        held = Counter(tag for t, p in zip(tags, parts) if p == part for tag in t)
        assert set(held) == {"clear", "haze", "primary", "water", "blooming"}
        assert abs(held["water"] - 6) <= 1  # a third of the rows hold water: about 6 of 18
    again = iterative_parts(tags, sizes, keys, ("train", "valid", "test"), {"train": 0.6, "valid": 0.2, "test": 0.2}, "42:tags", at_least_one=("valid", "test"))
    other = iterative_parts(tags, sizes, keys, ("train", "valid", "test"), {"train": 0.6, "valid": 0.2, "test": 0.2}, "7:tags", at_least_one=("valid", "test"))
    assert again == parts and other != parts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_rare_tag_reaches_validation_whatever_the_seed(tmp_path: Path, seed: int):
    raw = _raw(tmp_path / "planet", _skewed())
    result = _split(raw, tmp_path / "out", "--seed", str(seed))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"]["valid"]["blooming"] >= 1
    assert json.loads(result.stdout)["missing_classes"] == {}


def test_a_tag_too_rare_for_validation_is_named_in_one_line(tmp_path: Path):
    rows = _skewed()
    rows[10] = (rows[10][0], rows[10][1] + " selective_logging")
    raw = _raw(tmp_path / "planet", rows)
    result = runner.invoke(app, ["split", str(raw), "--labels", "labels.csv", "--out", str(tmp_path / "out"), "--mode", "copy"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "selective_logging" in line and "valid holds" in line]
    assert lines == ["valid holds no image tagged selective_logging: too few images carry it to reach every split, so its scores there will be n/a"]


def test_folds_of_a_multilabel_pool_share_every_common_tag(tmp_path: Path):
    raw = _raw(tmp_path / "planet", _skewed())
    result = _split(raw, tmp_path / "out", "--folds", "3")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fold_sizes"] == {"0": 20, "1": 20, "2": 20}
    assert all(report["folds"][f]["blooming"] == 1 for f in "012")  # three images, one per fold
    assert all(abs(report["folds"][f]["water"] - 20 / 3) <= 1 for f in "012")
    assert (tmp_path / "out" / "folds.csv").is_file() and (tmp_path / "out" / "train" / "labels.csv").is_file()
    assert not (tmp_path / "out" / "valid").exists()


def test_undo_dry_run_and_a_second_run_treat_labels_csv_as_part_of_the_split(tmp_path: Path):
    raw = _raw(tmp_path / "planet", _skewed(20))
    before = snapshot(raw)
    dry = runner.invoke(app, ["split", str(raw), "--labels", "labels.csv", "--dry-run", "--json"])
    assert dry.exit_code == 0 and snapshot(raw) == before
    done = runner.invoke(app, ["split", str(raw), "--labels", "labels.csv"])
    assert done.exit_code == 0, done.output
    assert (raw / "train" / "labels.csv").is_file() and not (raw / "train-jpg" / "train_0.jpg").exists()
    again = runner.invoke(app, ["split", str(raw), "--labels", "labels.csv", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["status"] == "already-done"
    undone = runner.invoke(app, ["split", "--undo", str(raw)])
    assert undone.exit_code == 0, undone.output
    assert snapshot(raw) == before  # the images back, labels.csv files gone, the CSV untouched


def test_a_labels_csv_already_in_the_output_is_never_replaced(tmp_path: Path):
    raw = _raw(tmp_path / "planet", _skewed(20))
    (tmp_path / "out" / "valid").mkdir(parents=True)
    (tmp_path / "out" / "valid" / "labels.csv").write_text("mine\n")
    result = _split(raw, tmp_path / "out")
    assert result.exit_code != 0 and "labels.csv" in result.output and "Traceback" not in result.output
    assert (tmp_path / "out" / "valid" / "labels.csv").read_text() == "mine\n"
    assert not (tmp_path / "out" / "train").exists()


@pytest.mark.parametrize("cell, extra, message", [
    ("clear  primary", (), "tag 2 of 'clear  primary' is empty"),
    ("clear,,primary", ("--tag-separator", ","), "tag 2 of 'clear,,primary' is empty"),
    ("clear, ,primary", ("--tag-separator", ","), "tag 2 of 'clear, ,primary' is empty"),
    ("clear ../etc", (), "Tag '../etc' from"),
    ("clear a/b", (), "contains a path separator"),
    ("clear bad\x07tag", (), "contains a control character"),
    ("No Finding|Hernia", ("--tag-separator", "|"), "the tag 'No Finding' holds a space"),
    ("   ", (), "no tags"),
])
def test_a_bad_tag_is_named_with_its_line_and_nothing_moves(tmp_path: Path, cell: str, extra: tuple, message: str):
    separator = extra[1] if extra else " "
    rows = [(name, separator.join(tags.split())) for name, tags in _skewed(12)]
    rows[4] = (rows[4][0], cell)
    raw = _raw(tmp_path / "planet", rows)
    before = snapshot(raw)
    result = runner.invoke(app, ["split", str(raw), "--labels", "labels.csv", "--multi-label", *extra])
    assert result.exit_code != 0 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "line 6" in lines[0], lines
    assert snapshot(raw) == before


def test_an_image_listed_twice_with_other_tags_is_refused(tmp_path: Path):
    rows = _skewed(12) + [("train_3", "cloudy")]
    raw = _raw(tmp_path / "planet", rows[:12])
    with (raw / "labels.csv").open("a", newline="") as file:
        csv.writer(file).writerow(rows[12])
    before = snapshot(raw)
    result = runner.invoke(app, ["split", str(raw), "--labels", "labels.csv"])
    assert result.exit_code != 0
    assert "line 14: id 'train_3' is tagged 'cloudy' here but 'clear primary water' on line 5" in result.output
    assert snapshot(raw) == before
    same = _raw(tmp_path / "same", _skewed(12))
    with (same / "labels.csv").open("a", newline="") as file:
        csv.writer(file).writerow(("train_3", "water primary clear"))  # the same tags in another order
    assert runner.invoke(app, ["split", str(same), "--labels", "labels.csv", "--out", str(tmp_path / "o")]).exit_code == 0


def test_cells_that_separate_tags_two_ways_are_ambiguous(tmp_path: Path):
    rows = [(f"x{i}", "a b" if i < 5 else "c|d") for i in range(12)]
    raw = _raw(tmp_path / "mixed", rows)
    before = snapshot(raw)
    result = runner.invoke(app, ["split", str(raw), "--labels", "labels.csv"])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1
    assert "line 2 separates its labels with ' ' and line 7 with '|'; say which separates tags with --tag-separator" in result.output
    assert snapshot(raw) == before
    given = runner.invoke(app, ["split", str(raw), "--labels", "labels.csv", "--tag-separator", "|", "--out", str(tmp_path / "o")])
    assert given.exit_code != 0 and "the tag 'a b' holds a space" in given.output  # then 'a b' is one tag, with a space
