"""Every dataset layout that prep split understands, through the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prep.errors import LabelsFileError, LayoutError, UnsafeLabelError
from prep.split.api import split_dataset
from prep.split.plan import SplitOptions
from prep.split.splitters import SplitSize

from conftest import jpeg_bytes, snapshot, write


def files_under(root: Path, split: str) -> dict[str, set[str]]:
    folder = root / split
    return {d.name: {f.name for f in d.iterdir()} for d in sorted(folder.iterdir())} if folder.is_dir() else {}


def test_kaggle_flat_in_train_folder(flat_dataset: Path):
    report = split_dataset(flat_dataset)
    assert report.layout == "filename-labels"
    assert report.splits == {"train": {"cat": 16, "dog": 16}, "valid": {"cat": 4, "dog": 4}}
    assert report.unlabeled == 5
    train, valid = files_under(flat_dataset, "train"), files_under(flat_dataset, "valid")
    assert set(train) == {"cat", "dog"} and len(train["cat"]) == 16 and len(valid["dog"]) == 4
    assert all(n.startswith("cat.") for n in train["cat"] | valid["cat"])
    assert sorted(p.name for p in (flat_dataset / "test1").iterdir()) == [f"{i}.jpg" for i in range(1, 6)]
    # nothing left loose in train/
    assert not [p for p in (flat_dataset / "train").iterdir() if p.is_file()]


def test_flat_at_root_with_label_separators(tmp_path: Path):
    root = tmp_path / "flat"
    for i in range(5):
        write(root / f"cat_{i}.png", jpeg_bytes(i, fmt="PNG"))
        write(root / f"dog-{i}.png", jpeg_bytes(50 + i, fmt="PNG"))
    report = split_dataset(root, SplitOptions(valid=SplitSize(0.4, False)))
    assert report.splits["valid"] == {"cat": 2, "dog": 2}
    assert (root / "train" / "cat").is_dir() and (root / "valid" / "dog").is_dir()


def test_label_pattern(tmp_path: Path):
    root = tmp_path / "pets"
    for i in range(4):
        write(root / f"img_{i}_label-tabby.jpg", jpeg_bytes(i))
        write(root / f"img_{i}_label-siamese.jpg", jpeg_bytes(100 + i))
    report = split_dataset(root, SplitOptions(label_pattern=r"label-(\w+)\.jpg$", valid=SplitSize(0.25, False)))
    assert set(report.splits["train"]) == {"tabby", "siamese"}


def test_named_label_parser_before_last_underscore(tmp_path: Path):
    root = tmp_path / "oxford"
    for i in range(4):
        write(root / f"american_bulldog_{i}.jpg", jpeg_bytes(i))
        write(root / f"Abyssinian_{i}.jpg", jpeg_bytes(100 + i))
    report = split_dataset(root, SplitOptions(label_parser="before-last-underscore", valid=SplitSize(0.25, False)))
    assert set(report.splits["valid"]) == {"american_bulldog", "Abyssinian"}


@pytest.mark.parametrize("prefix", ["", "PetImages/"])
def test_class_folders(tmp_path: Path, prefix: str):
    root = tmp_path / "src"
    for i in range(10):
        write(root / f"{prefix}Cat/{i}.jpg", jpeg_bytes(i))
        write(root / f"{prefix}Dog/{i}.jpg", jpeg_bytes(100 + i))
    write(root / f"{prefix}Cat/Thumbs.db", b"junk")
    report = split_dataset(root)
    assert report.layout == "class-folders"
    assert report.splits == {"train": {"Cat": 8, "Dog": 8}, "valid": {"Cat": 2, "Dog": 2}}
    assert report.ignored == 1
    assert (root / "train" / "Cat").is_dir() and (root / "valid" / "Dog").is_dir()
    # Thumbs.db is never a sample: it stays where it was
    assert (root / f"{prefix}Cat" / "Thumbs.db").exists()


def test_class_folders_under_train_split_in_place(tmp_path: Path):
    root = tmp_path / "src"
    for i in range(10):
        write(root / "train" / "a" / f"{i}.jpg", jpeg_bytes(i))
        write(root / "train" / "b" / f"{i}.jpg", jpeg_bytes(100 + i))
    report = split_dataset(root)
    assert report.splits["valid"] == {"a": 2, "b": 2}
    assert len(list((root / "train" / "a").iterdir())) == 8


def test_already_split_dataset_is_recognised(tmp_path: Path):
    root = tmp_path / "done"
    write(root / "train" / "cat" / "1.jpg", jpeg_bytes(1))
    write(root / "val" / "cat" / "2.jpg", jpeg_bytes(2))
    with pytest.raises(LayoutError, match="already split"):
        split_dataset(root)


@pytest.mark.parametrize("with_extension", [True, False])
def test_label_csv(tmp_path: Path, with_extension: bool):
    root = tmp_path / "csvdata"
    rows = ["id,has_cactus"]
    for i in range(10):
        write(root / "train" / f"{i:04x}.jpg", jpeg_bytes(i))
        rows.append(f"{i:04x}{'.jpg' if with_extension else ''},{i % 2}")
    write(root / "train" / "unlisted.jpg", jpeg_bytes(99))
    (root / "train_labels.csv").write_text("\n".join(rows) + "\n")
    report = split_dataset(root, SplitOptions(labels_csv=Path("train_labels.csv")))
    assert report.layout == "csv-labels"
    assert report.splits == {"train": {"0": 4, "1": 4}, "valid": {"0": 1, "1": 1}}
    assert report.unlabeled == 1 and (root / "train" / "unlisted.jpg").exists()


def test_label_csv_explicit_columns_and_missing_files(tmp_path: Path):
    root = tmp_path / "breeds"
    rows = ["id,breed,extra"]
    for i in range(6):
        write(root / "train" / f"x{i}.jpg", jpeg_bytes(i))
        rows.append(f"x{i},{'husky' if i % 2 else 'pug'},z")
    rows.append("ghost,pug,z")
    csv = root / "labels.csv"
    csv.write_text("\n".join(rows))
    with pytest.raises(LabelsFileError, match="--label-column"):
        split_dataset(root, SplitOptions(labels_csv=csv))
    report = split_dataset(root, SplitOptions(labels_csv=csv, label_column="breed", valid=SplitSize(0.34, False)))
    assert set(report.splits["train"]) == {"husky", "pug"}
    assert report.missing == ["ghost"]


def test_label_csv_conflicting_rows(tmp_path: Path):
    root = tmp_path / "c"
    write(root / "a.jpg", jpeg_bytes(1))
    (root / "l.csv").write_text("id,label\na,x\na,y\n")
    with pytest.raises(LabelsFileError, match="line 3"):
        split_dataset(root, SplitOptions(labels_csv=root / "l.csv"))


@pytest.mark.parametrize("bad", ["../escape", "/etc", "a/b", "..", "C:evil"])
def test_csv_path_traversal_labels_are_refused(tmp_path: Path, bad: str):
    root = tmp_path / "evil"
    for i in range(4):
        write(root / f"{i}.jpg", jpeg_bytes(i))
    (root / "l.csv").write_text("id,label\n" + "".join(f"{i},{bad if i == 0 else 'ok'}\n" for i in range(4)))
    before = snapshot(tmp_path)
    with pytest.raises(UnsafeLabelError, match="line 2"):
        split_dataset(root, SplitOptions(labels_csv=root / "l.csv"))
    assert snapshot(tmp_path) == before


def test_label_pattern_capturing_dotdot_is_refused(tmp_path: Path):
    root = tmp_path / "p"
    write(root / "a..b.jpg", jpeg_bytes(1))
    write(root / "c..d.jpg", jpeg_bytes(2))
    with pytest.raises(UnsafeLabelError, match=r"'\.\.'"):
        split_dataset(root, SplitOptions(label_pattern=r"^a?(\.\.)"))


@pytest.mark.parametrize("mask_ext", ["png", "gif"])
def test_segmentation_carvana_layout(tmp_path: Path, mask_ext: str):
    root = tmp_path / "carvana"
    for car in range(5):
        for view in (1, 2):
            write(root / "train" / f"car{car}_{view:02d}.jpg", jpeg_bytes(car * 10 + view))
            write(root / "train_masks" / f"car{car}_{view:02d}_mask.{mask_ext}", jpeg_bytes(500 + car * 10 + view, fmt=mask_ext.upper()))
    write(root / "train" / "lonely_01.jpg", jpeg_bytes(999))
    report = split_dataset(root, SplitOptions(group_pattern=r"^([^_]+)_"))
    assert report.layout == "segmentation"
    assert report.unlabeled == 1
    for split in ("train", "valid"):
        images = sorted(p.stem for p in (root / split / "images").iterdir())
        masks = sorted(p.stem.removesuffix("_mask") for p in (root / split / "masks").iterdir())
        assert images == masks
    valid_cars = {p.name.split("_")[0] for p in (root / "valid" / "images").iterdir()}
    train_cars = {p.name.split("_")[0] for p in (root / "train" / "images").iterdir()}
    assert valid_cars and not valid_cars & train_cars  # groups never straddle splits
    assert not (root / "train_masks").exists()  # emptied by the move, restored by undo


def test_segmentation_with_explicit_masks_folder(tmp_path: Path):
    root = tmp_path / "seg"
    for i in range(6):
        write(root / "imgs" / f"{i}.jpg", jpeg_bytes(i))
        write(root / "labels" / f"{i}.png", jpeg_bytes(100 + i, fmt="PNG"))
    out = tmp_path / "out"
    report = split_dataset(root / "imgs", SplitOptions(masks=root / "labels", mask_suffix="", out=out, mode="copy"))
    assert sum(report.to_dict()["totals"].values()) == 6
    assert len(list((out / "train" / "masks").iterdir())) == len(list((out / "train" / "images").iterdir()))


def test_junk_is_never_a_sample_or_class(tmp_path: Path):
    root = tmp_path / "j"
    for i in range(5):
        write(root / "cat" / f"{i}.jpg", jpeg_bytes(i))
        write(root / "dog" / f"{i}.jpg", jpeg_bytes(10 + i))
    write(root / ".DS_Store", b"x")
    write(root / "cat" / "._0.jpg", b"resource fork")
    write(root / ".ipynb_checkpoints" / "a.jpg", jpeg_bytes(77))
    write(root / "dog" / "desktop.ini", b"x")
    report = split_dataset(root)
    assert set(report.splits["train"]) == {"cat", "dog"}
    assert sum(report.to_dict()["totals"].values()) == 10


def test_a_default_parse_that_merges_classes_says_so_and_names_the_option(tmp_path: Path):
    from typer.testing import CliRunner

    from prep.cli import app

    pets = tmp_path / "pets"
    for n, breed in enumerate(["golden_retriever", "golden_doodle", "great_dane", "beagle"]):
        for i in range(4):
            write(pets / f"{breed}_{i}.jpg", jpeg_bytes(10 * n + i))
    runner = CliRunner()
    dry = runner.invoke(app, ["split", str(pets), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    hint = " ".join(line.strip() for line in dry.output.splitlines() if "merged" in line or "before-last-underscore" in line)
    assert "golden_doodle, golden_retriever as one class, 'golden': 3 classes" in hint
    assert "--label-parser before-last-underscore reads 4" in hint
    chosen = runner.invoke(app, ["split", str(pets), "--dry-run", "--label-parser", "before-last-underscore", "--json"])
    assert chosen.exit_code == 0 and json.loads(chosen.stdout)["label_hint"] is None
    assert sorted(json.loads(chosen.stdout)["splits"]["train"]) == ["beagle", "golden_doodle", "golden_retriever", "great_dane"]
    cats = tmp_path / "cats"
    for i in range(6):
        write(cats / f"cat.{i}.jpg", jpeg_bytes(100 + i))
        write(cats / f"dog.{i}.jpg", jpeg_bytes(200 + i))
    plain = runner.invoke(app, ["split", str(cats), "--dry-run", "--json"])
    assert plain.exit_code == 0 and json.loads(plain.stdout)["label_hint"] is None


def test_an_unlabeled_test_folder_is_no_split_and_a_test_split_goes_beside_it(tmp_path: Path):
    from typer.testing import CliRunner

    from prep.cli import app

    runner = CliRunner()
    raw = tmp_path / "kaggle"
    for i in range(10):
        write(raw / "train" / f"cat.{i}.jpg", jpeg_bytes(i))
        write(raw / "train" / f"dog.{i}.jpg", jpeg_bytes(50 + i))
    for i in range(4):
        write(raw / "test" / f"{i}.jpg", jpeg_bytes(90 + i))  # Kaggle's unlabeled test images
    before = snapshot(raw)
    done = runner.invoke(app, ["split", str(raw), "--test", "0.2"])
    assert done.exit_code == 0, done.output
    assert "The test split is in testing/: test/ holds other files" in " ".join(done.output.split())
    assert sorted(p.name for p in (raw / "test").iterdir()) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]  # left as they were
    assert sorted(p.name for p in (raw / "testing").iterdir()) == ["cat", "dog"]
    stats = runner.invoke(app, ["stats", str(raw), "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["splits"]["test"] == {"cat": 2, "dog": 2}  # testing/, not the unlabeled test/
    preview = runner.invoke(app, ["augment", str(raw), "--split", "test", "--out", str(tmp_path / "a.png")])
    assert preview.exit_code == 0 and (tmp_path / "a.png").is_file()
    assert runner.invoke(app, ["split", "--undo", str(raw)]).exit_code == 0
    (raw / "stats.json").unlink()
    assert snapshot(raw) == before


def test_a_dataset_beside_an_unlabeled_test_folder_has_no_test_split(tmp_path: Path):
    from typer.testing import CliRunner

    from prep.cli import app

    root = tmp_path / "data"
    for s, split in enumerate(("train", "valid")):
        for n, name in enumerate(("cat", "dog")):
            for i in range(3):
                write(root / split / name / f"{i}.jpg", jpeg_bytes(100 * s + 10 * n + i))
    for i in range(3):
        write(root / "test" / f"{i}.jpg", jpeg_bytes(900 + i))
    runner = CliRunner()
    stats = runner.invoke(app, ["stats", str(root), "--json"])
    assert stats.exit_code == 0 and set(json.loads(stats.stdout)["splits"]) == {"train", "valid"}
    preview = runner.invoke(app, ["augment", str(root), "--split", "test", "--out", str(tmp_path / "a.png")])
    assert preview.exit_code != 0 and "has no test split (it has train, valid)" in preview.output
    assert not (tmp_path / "a.png").exists()
