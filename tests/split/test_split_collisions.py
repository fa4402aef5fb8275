"""Property tests: random nested trees with the same names at different depths.

Whatever the tree, mode and output folder, a split keeps the multiset of file contents
(nothing lost, nothing overwritten), never places a file onto another source, and an
undo gives back the original tree exactly.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from prep.errors import UsageError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from prep.cli import app
from prep.split.api import split_dataset, undo_split
from prep.split.journal import JOURNAL_NAME, Journal
from prep.split.plan import SplitOptions
from prep.split.splitters import SplitSize

from conftest import jpeg_bytes, snapshot, write

MODES = ("move", "copy", "link", "symlink")
IMAGES = [jpeg_bytes(seed, size=(8, 8)) for seed in range(64)]

# A class folder holds files a0.jpg ... and maybe nested folders holding the same names.
class_tree = st.lists(
    st.tuples(st.sampled_from(["", "", "0", "z", "sub", "0/1"]), st.integers(0, 5)),
    min_size=4, max_size=14, unique=True,
)


def build_tree(root: Path, trees: dict[str, list[tuple[str, int]]]) -> None:
    content = 0
    for label, files in trees.items():
        for folder, number in files:
            write(root / "train" / label / folder / f"a{number}.jpg", IMAGES[content % len(IMAGES)])
            content += 1


def assert_every_file_placed_intact(before: dict[str, str], src: Path, target: Path, mode: str) -> None:
    """Every original file has a journal entry, and the file at its destination has the
    original's content; a copy, link or symlink also leaves the original as it was."""
    journal = Journal.load(target / JOURNAL_NAME)
    assert sorted(e.src for e in journal.entries) == sorted(before)
    for entry in journal.entries:
        placed = target / entry.dst
        assert hashlib.sha256(placed.read_bytes()).hexdigest() == before[entry.src], entry
        if mode != "move":
            assert hashlib.sha256((src / entry.src).read_bytes()).hexdigest() == before[entry.src], entry
    if mode == "move":
        # Nothing left behind, nothing twice: as many images as before.
        roots = {src, target}
        assert sum(len(list(root.rglob("*.jpg"))) for root in roots) == len(before)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cat=class_tree, dog=class_tree, mode=st.sampled_from(MODES), with_out=st.booleans(),
    seed=st.integers(0, 3),
)
def test_split_keeps_every_file_and_undo_is_exact(tmp_path: Path, cat, dog, mode: str, with_out: bool, seed: int) -> None:
    case = tmp_path / "case"
    shutil.rmtree(case, ignore_errors=True)
    src, out = case / "src", case / "out"
    build_tree(src, {"cat": cat, "dog": dog})
    before = snapshot(src)
    options = SplitOptions(valid=SplitSize(0.3, False), seed=seed, mode=mode, out=out if with_out else None, workers=1)
    target = (out if with_out else src).resolve()
    if mode != "move" and not with_out:
        # In place, a copy would leave the validation images in train/ as well: refused.
        with pytest.raises(UsageError, match=f"--mode {mode} keeps each source where it is"):
            split_dataset(src, options)
        assert snapshot(src) == before
        return

    report = split_dataset(src, options)

    assert report.status == "done"
    assert_every_file_placed_intact(before, src.resolve(), target, mode)
    undo_split(target)
    assert snapshot(src) == before
    assert not (target / JOURNAL_NAME).exists()
    assert not out.exists()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nested", ["0", "z"])
@pytest.mark.parametrize("with_out", [False, True])
def test_the_reported_nested_tree_loses_nothing(tmp_path: Path, mode: str, nested: str, with_out: bool) -> None:
    """The report's case: cat/aN.jpg and cat/<nested>/aN.jpg, 60 files, through the CLI."""
    src, out = tmp_path / "src", tmp_path / "out"
    for i in range(20):
        write(src / "train" / "cat" / f"a{i}.jpg", jpeg_bytes(i))
        write(src / "train" / "cat" / nested / f"a{i}.jpg", jpeg_bytes(100 + i))
        write(src / "train" / "dog" / f"a{i}.jpg", jpeg_bytes(200 + i))
    before = snapshot(src)
    target = (out if with_out else src).resolve()
    runner = CliRunner()
    result = runner.invoke(app, ["split", str(src), "--mode", mode, *(["--out", str(out)] if with_out else [])])
    if mode != "move" and not with_out:  # it would leave the validation images in train/ too
        assert result.exit_code == 2 and "keeps each source where it is" in result.output, result.output
        assert snapshot(src) == before
        return
    assert result.exit_code == 0, result.output
    assert_every_file_placed_intact(before, src.resolve(), target, mode)
    result = runner.invoke(app, ["split", "--undo", str(target)])
    assert result.exit_code == 0, result.output
    assert snapshot(src) == before


def test_no_destination_is_another_files_source(tmp_path: Path) -> None:
    """The plan itself: the nested file is renamed instead of aimed at cat/a0.jpg."""
    from prep.split.sources import discover
    from prep.split.plan import build_plan

    src = tmp_path / "src"
    write(src / "train" / "cat" / "a0.jpg", jpeg_bytes(1))
    write(src / "train" / "cat" / "0" / "a0.jpg", jpeg_bytes(2))
    for i in range(4):
        write(src / "train" / "dog" / f"d{i}.jpg", jpeg_bytes(10 + i))
        write(src / "train" / "cat" / f"c{i}.jpg", jpeg_bytes(20 + i))
    options = SplitOptions(valid=SplitSize(0.25, False), workers=1)
    plan = build_plan(src.resolve(), discover(src.resolve(), options.layout_options()), options)
    sources = {e.src for e in plan.entries}
    for entry in plan.entries:
        assert entry.dst == entry.src or entry.dst not in sources, entry
    nested = next(e for e in plan.entries if e.src == "train/cat/0/a0.jpg")
    assert nested.dst.endswith("train__cat__0__a0.jpg")


def test_a_target_that_is_another_source_is_refused(tmp_path: Path) -> None:
    """check_targets, on its own: a plan that would place onto another source stops
    before anything moves (the overwrite check no longer excuses the split's own files)."""
    from prep.errors import TargetExistsError, UsageError
    from prep.split.journal import Entry
    from prep.split.plan import check_targets

    src = tmp_path / "src"
    write(src / "train" / "cat" / "a0.jpg", jpeg_bytes(1))
    write(src / "train" / "cat" / "0" / "a0.jpg", jpeg_bytes(2))
    entries = [
        Entry("train/cat/0/a0.jpg", "train/cat/a0.jpg", "train", "cat", 1),
        Entry("train/cat/a0.jpg", "valid/cat/a0.jpg", "valid", "cat", 1),
    ]
    with pytest.raises(TargetExistsError, match="a0.jpg"):
        check_targets(src, src, entries)
