"""Nothing is lost or overwritten: dry runs, modes, undo, re-runs, conflicts, bad files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from prep.errors import JournalError, TargetExistsError
from prep.split.api import split_dataset, undo_split
from prep.split.journal import JOURNAL_NAME, Journal, Status
from prep.split.plan import SplitOptions
from prep.split.splitters import SplitSize

from conftest import dirs, jpeg_bytes, snapshot, write


def test_dry_run_touches_nothing(flat_dataset: Path):
    before, before_dirs = snapshot(flat_dataset), dirs(flat_dataset)
    report = split_dataset(flat_dataset, dry_run=True)
    assert report.status == "dry-run" and report.examples
    assert snapshot(flat_dataset) == before and dirs(flat_dataset) == before_dirs


def test_same_seed_gives_same_split(tmp_path: Path, flat_dataset: Path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(flat_dataset, copy)
    split_dataset(flat_dataset, SplitOptions(seed=3))
    split_dataset(copy, SplitOptions(seed=3))
    assert snapshot(flat_dataset).keys() - {JOURNAL_NAME} == snapshot(copy).keys() - {JOURNAL_NAME}


def test_undo_after_finished_split_restores_exactly(flat_dataset: Path):
    before, before_dirs = snapshot(flat_dataset), dirs(flat_dataset)
    split_dataset(flat_dataset, SplitOptions(test=SplitSize(0.1, False)))
    assert snapshot(flat_dataset) != before
    undo_split(flat_dataset)
    assert snapshot(flat_dataset) == before and dirs(flat_dataset) == before_dirs


@pytest.mark.parametrize("mode", ["link", "copy", "symlink"])
def test_other_modes_keep_the_source_and_undo_cleanly(tmp_path: Path, flat_dataset: Path, mode: str):
    before = snapshot(flat_dataset)
    out = tmp_path / "out"
    report = split_dataset(flat_dataset, SplitOptions(mode=mode, out=out))
    assert snapshot(flat_dataset) == before
    placed = snapshot(out)
    assert len([k for k in placed if k.startswith(("train/", "valid/"))]) == 40
    if mode == "link":
        some = next((out / "train" / "cat").iterdir())
        assert some.stat().st_nlink == 2
    if mode == "symlink":
        assert next((out / "valid" / "dog").iterdir()).is_symlink()
    assert report.status == "done"
    undo_split(out)
    assert snapshot(flat_dataset) == before
    assert not out.exists()  # prep created it, so undo removes it


def test_undo_refuses_to_remove_a_changed_copy(tmp_path: Path, flat_dataset: Path):
    out = tmp_path / "out"
    split_dataset(flat_dataset, SplitOptions(mode="copy", out=out))
    victim = next((out / "train" / "cat").iterdir())
    victim.write_bytes(b"edited by the user")
    with pytest.raises(JournalError, match="no longer an unchanged copy"):
        undo_split(out)
    assert victim.read_bytes() == b"edited by the user"


def test_rerun_of_finished_split_is_a_no_op(flat_dataset: Path):
    split_dataset(flat_dataset)
    after = snapshot(flat_dataset)
    report = split_dataset(flat_dataset)
    assert report.status == "already-done"
    assert snapshot(flat_dataset) == after


def test_rerun_with_other_options_refuses(flat_dataset: Path):
    split_dataset(flat_dataset)
    with pytest.raises(TargetExistsError, match="--undo"):
        split_dataset(flat_dataset, SplitOptions(seed=1))


def test_existing_target_file_stops_before_anything_moves(tmp_path: Path, flat_dataset: Path):
    out = tmp_path / "out"
    plan = split_dataset(flat_dataset, SplitOptions(out=out, mode="copy"), dry_run=True)
    target = out / plan.examples[0]["to"]
    write(target, b"precious")
    before = snapshot(tmp_path)
    with pytest.raises(TargetExistsError, match="Would overwrite"):
        split_dataset(flat_dataset, SplitOptions(out=out, mode="copy"))
    assert snapshot(tmp_path) == before
    assert target.read_bytes() == b"precious"


def test_non_empty_target_split_folder_stops(tmp_path: Path, flat_dataset: Path):
    out = tmp_path / "out"
    write(out / "valid" / "notes" / "mine.txt", b"mine")
    before = snapshot(tmp_path)
    with pytest.raises(TargetExistsError, match="not part of this split"):
        split_dataset(flat_dataset, SplitOptions(out=out))
    assert snapshot(tmp_path) == before


def test_in_place_split_beside_an_existing_valid_folder_stops(flat_dataset: Path):
    write(flat_dataset / "valid" / "cat" / "old.jpg", jpeg_bytes(4242))
    before = snapshot(flat_dataset)
    with pytest.raises(TargetExistsError):
        split_dataset(flat_dataset)
    assert snapshot(flat_dataset) == before


def test_unfinished_split_with_other_options_refuses(flat_dataset: Path):
    split_dataset(flat_dataset)
    journal = Journal.load(flat_dataset / JOURNAL_NAME)
    journal.status = Status.IN_PROGRESS
    journal.save()
    with pytest.raises(JournalError, match="unfinished"):
        split_dataset(flat_dataset, SplitOptions(seed=9))


def test_corrupt_journal_is_reported(flat_dataset: Path):
    (flat_dataset / JOURNAL_NAME).write_text("{not json")
    with pytest.raises(JournalError, match="Cannot read split journal"):
        split_dataset(flat_dataset)


def _png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    data += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return data + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


@pytest.fixture
def dataset_with_bad_files(flat_dataset: Path) -> Path:
    train = flat_dataset / "train"
    good = jpeg_bytes(3333)
    write(train / "cat.empty.jpg", b"")
    write(train / "cat.truncated.jpg", good[: len(good) // 2])
    write(train / "dog.garbage.jpg", b"this is not an image at all" * 10)
    write(train / "dog.really_png.jpg", jpeg_bytes(4444, fmt="PNG"))
    write(train / "cat.bomb.png", _png_header_claiming(40000, 40000))
    return flat_dataset


def test_bad_files_are_set_aside_with_reasons_never_deleted(dataset_with_bad_files: Path):
    root = dataset_with_bad_files
    before = snapshot(root)
    report = split_dataset(root)
    reasons = {r["file"].split("/")[-1]: r["reason"] for r in report.rejected}
    assert reasons == {
        "cat.empty.jpg": "empty",
        "cat.truncated.jpg": "truncated",
        "dog.garbage.jpg": "undecodable",
        "dog.really_png.jpg": "wrong-extension",
        "cat.bomb.png": "decompression-bomb",
    }
    for name, reason in reasons.items():
        assert (root / "_rejected" / reason / name).exists()
    after = {k: v for k, v in snapshot(root).items() if k != JOURNAL_NAME}
    assert sorted(after.values()) == sorted(before.values())  # every byte still there
    undo_split(root)
    assert snapshot(root) == before


def test_full_verify_catches_corruption_in_the_middle(flat_dataset: Path):
    data = bytearray(jpeg_bytes(77, size=(64, 64)))
    data[300:900] = b"\xff" * 600  # start and end intact, scan data destroyed
    write(flat_dataset / "train" / "cat.middle.jpg", bytes(data))
    quick = split_dataset(flat_dataset, dry_run=True)
    assert "train/cat.middle.jpg" not in {r["file"] for r in quick.rejected}
    from prep.split.checks import Verify

    full = split_dataset(flat_dataset, SplitOptions(verify=Verify.full), dry_run=True)
    assert {r["file"]: r["reason"] for r in full.rejected} == {"train/cat.middle.jpg": "undecodable"}


def test_trailing_bytes_after_a_valid_jpeg_are_not_punished(flat_dataset: Path):
    write(flat_dataset / "train" / "cat.trailer.jpg", jpeg_bytes(88) + b"\x00camera trailer" * 8)
    report = split_dataset(flat_dataset, dry_run=True)
    assert report.rejected == []


def test_duplicates_land_in_one_split_and_dedupe_sets_them_aside(flat_dataset: Path):
    train = flat_dataset / "train"
    for i in range(4):
        write(train / f"dog.copy{i}.jpg", (train / "cat.0.jpg").read_bytes())
    report = split_dataset(flat_dataset, dry_run=True)
    copies = [{"file": "train/cat.0.jpg", "label": "cat"}] + [{"file": f"train/dog.copy{i}.jpg", "label": "dog"} for i in range(4)]
    assert report.duplicates == {"groups": 1, "files": 4, "conflicting_labels": 1, "conflicts": [copies]}
    from typer.testing import CliRunner

    from prep.cli import app

    shown = CliRunner().invoke(app, ["split", str(flat_dataset), "--dry-run"])
    assert shown.exit_code == 0 and (
        "identical, labeled differently: train/cat.0.jpg (cat), train/dog.copy0.jpg (dog), train/dog.copy1.jpg (dog)" in shown.output
    ), shown.output
    split_dataset(flat_dataset)
    homes = {p.parent.parent.name for p in flat_dataset.rglob("*.jpg") if p.name.startswith(("cat.0.", "dog.copy"))}
    assert len(homes) == 1
    undo_split(flat_dataset)
    deduped = split_dataset(flat_dataset, SplitOptions(dedupe=True))
    assert len([r for r in deduped.rejected if r["reason"] == "duplicate"]) == 4
    assert len(list((flat_dataset / "_rejected" / "duplicate").iterdir())) == 4


def test_same_names_from_different_folders_do_not_clash(tmp_path: Path):
    root = tmp_path / "nested"
    for i in range(6):
        write(root / "cat" / "a" / f"{i}.jpg", jpeg_bytes(i))
        write(root / "cat" / "b" / f"{i}.jpg", jpeg_bytes(100 + i))
        write(root / "dog" / f"{i}.jpg", jpeg_bytes(200 + i))
    before = snapshot(root)
    split_dataset(root, SplitOptions(valid=SplitSize(0.5, False)))
    assert len(list(root.rglob("*.jpg"))) == 18
    undo_split(root)
    assert snapshot(root) == before


def test_odd_file_names_survive(tmp_path: Path):
    root = tmp_path / "odd"
    names = ["cat.ünïcode 1.jpg", "cat.with space.jpg", "cat.$weird#.jpg", "dog.中文.jpg", "dog.a'b.jpg", "dog.x;y.jpg"]
    for i, name in enumerate(names):
        write(root / name, jpeg_bytes(i))
    before = snapshot(root)
    report = split_dataset(root, SplitOptions(valid=SplitSize(0.34, False)))
    assert sum(report.to_dict()["totals"].values()) == 6
    undo_split(root)
    assert snapshot(root) == before


def test_undo_without_journal_is_an_error(tmp_path: Path):
    with pytest.raises(JournalError, match="nothing to undo"):
        undo_split(tmp_path)


def test_link_across_filesystems_falls_back_to_copy_and_says_so(tmp_path: Path, flat_dataset: Path, monkeypatch: pytest.MonkeyPatch):
    import errno
    import os

    def no_cross_device_links(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_cross_device_links)
    before = snapshot(flat_dataset)
    report = split_dataset(flat_dataset, SplitOptions(mode="link", out=tmp_path / "other"))
    assert report.copied_instead_of_linked == 40
    placed = next((tmp_path / "other" / "train" / "cat").iterdir())
    assert placed.stat().st_nlink == 1  # a real copy
    assert snapshot(flat_dataset) == before
    undo_split(tmp_path / "other")
    assert snapshot(flat_dataset) == before


def test_interrupted_copy_is_finished_by_rerun_and_removed_by_undo(tmp_path: Path, flat_dataset: Path):
    out = tmp_path / "out"
    split_dataset(flat_dataset, SplitOptions(mode="copy", out=out))
    placed = snapshot(out)
    journal = Journal.load(out / JOURNAL_NAME)
    victim = next(e for e in journal.entries if e.split == "train")
    original = (flat_dataset / victim.src).read_bytes()
    (out / victim.dst).write_bytes(original[: len(original) // 3])  # as if killed mid-copy
    journal.status = Status.IN_PROGRESS
    journal.save()
    assert split_dataset(flat_dataset, SplitOptions(mode="copy", out=out)).status == "resumed"
    assert snapshot(out) == placed
    (out / victim.dst).write_bytes(original[:100])
    undo_split(out)
    assert not out.exists()


def test_journal_records_the_hash_of_each_file_that_needed_one(flat_dataset: Path):
    import hashlib

    train = flat_dataset / "train"
    for i in range(3):
        write(train / f"cat.copy{i}.jpg", (train / "cat.1.jpg").read_bytes())
    write(train / "dog.copy.jpg", (train / "dog.2.jpg").read_bytes())
    split_dataset(flat_dataset, SplitOptions(dedupe=True))
    journal = Journal.load(flat_dataset / JOURNAL_NAME)
    hashed = [e for e in journal.entries if e.digest]
    assert {Path(e.src).name for e in hashed} == {"cat.1.jpg", "dog.2.jpg"}  # the kept copies
    for entry in hashed:
        data = (flat_dataset / entry.dst).read_bytes()
        assert entry.digest == hashlib.blake2b(data, digest_size=16).hexdigest()


def test_half_written_journal_is_cleaned_up(flat_dataset: Path):
    from prep.split.journal import JOURNAL_TEMP_NAME

    before = snapshot(flat_dataset)
    (flat_dataset / JOURNAL_TEMP_NAME).write_bytes(b"")  # as left by a kill during the save
    with pytest.raises(JournalError, match="nothing to undo"):
        undo_split(flat_dataset)
    assert snapshot(flat_dataset) == before
    (flat_dataset / JOURNAL_TEMP_NAME).write_bytes(b"{")
    split_dataset(flat_dataset)
    assert not (flat_dataset / JOURNAL_TEMP_NAME).exists()
