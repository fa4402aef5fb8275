"""What a user's disk does: fills up, is read-only, refuses long names, holds symlink loops.

The full-disk cases run on a real tmpfs of a few hundred KiB (the tests run as root in CI);
the others inject the operating system's error where a real one cannot be made here. Each
case must end in one line naming the path and the cause, exit 1, and lose nothing.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prep.cli import app
from prep.errors import DiskError
from prep.util.files import copy_new_file, partial_copy_path, rename_no_replace
from prep.split.api import split_dataset
from prep.split.journal import JOURNAL_NAME, Journal, Status
from prep.split.plan import SplitOptions

from conftest import jpeg_bytes, snapshot, write

runner = CliRunner()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs: room for a split's journal and a few copies, not for all of them."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not root?): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def dataset(root: Path, per_class: int = 20, size: tuple[int, int] = (64, 64)) -> Path:
    for i in range(per_class):
        write(root / "train" / f"cat.{i}.jpg", jpeg_bytes(i, size=size))
        write(root / "train" / f"dog.{i}.jpg", jpeg_bytes(500 + i, size=size))
    return root


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system of ``folder`` up to ``leave_bytes`` of free space."""
    ballast = folder / ".ballast"
    with ballast.open("wb") as file:
        try:
            while True:
                free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
                if free <= leave_bytes:
                    break
                file.write(b"\0" * min(65536, max(4096, free - leave_bytes)))
                file.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return ballast


def test_copy_onto_a_full_disk_is_one_line_then_undo_while_full_then_finish(tmp_path: Path, small_disk: Path) -> None:
    src = dataset(tmp_path / "src", per_class=30, size=(96, 96))
    before = snapshot(src)
    out = small_disk / "out"
    ballast = fill(small_disk, leave_bytes=120_000)

    result = runner.invoke(app, ["split", str(src), "--mode", "copy", "--out", str(out)])

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "No space left on device" in result.output and "prep split --undo" in result.output
    assert Journal.load(out / JOURNAL_NAME).status == Status.IN_PROGRESS
    # No partial file under any name: only complete copies, and no hidden leftovers.
    for path in out.rglob("*"):
        if path.is_file() and path.name != JOURNAL_NAME:
            assert not path.name.startswith(".prep-partial-"), path
            assert path.read_bytes() == (src / "train" / path.name).read_bytes()
    # Commands that read a split refuse the unfinished one.
    stats = runner.invoke(app, ["stats", str(out)])
    assert stats.exit_code == 1 and "stopped half-way" in stats.output

    # The disk is still full: undo must work all the same.
    undone = runner.invoke(app, ["split", "--undo", str(out)])
    assert undone.exit_code == 0, undone.output
    assert not out.exists()
    assert snapshot(src) == before

    # Split again, fail again, free space, re-run: it finishes.
    assert runner.invoke(app, ["split", str(src), "--mode", "copy", "--out", str(out)]).exit_code == 1
    ballast.unlink()
    again = runner.invoke(app, ["split", str(src), "--mode", "copy", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert Journal.load(out / JOURNAL_NAME).status == Status.DONE
    assert sorted(p.name for p in out.rglob("*.jpg")) == sorted(p.name for p in (src / "train").iterdir())
    assert snapshot(src) == before


def test_a_journal_that_cannot_be_written_leaves_nothing_behind(tmp_path: Path, small_disk: Path) -> None:
    src = dataset(tmp_path / "src")
    before = snapshot(src)
    out = small_disk / "out"
    out.mkdir()
    fill(small_disk, leave_bytes=0)
    result = runner.invoke(app, ["split", str(src), "--mode", "copy", "--out", str(out)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "No space left on device" in result.output
    assert [p.name for p in out.iterdir()] == []  # no half-written journal
    assert snapshot(src) == before


def test_stats_on_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path: Path, small_disk: Path) -> None:
    data = small_disk / "data"
    split_dataset(dataset(data, per_class=4, size=(16, 16)), SplitOptions(workers=1))
    fill(small_disk, leave_bytes=0)
    result = runner.invoke(app, ["stats", str(data), "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "No space left on device" in result.output
    assert not [p for p in data.rglob(".*tmp*")], list(data.rglob(".*tmp*"))


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EIO])
def test_a_move_the_disk_refuses_stops_with_one_line_and_can_be_undone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Read-only, permission, immutable: injected at the tenth file (root ignores modes)."""
    import prep.split.placement as placement

    src = dataset(tmp_path / "src")
    before = snapshot(src)
    real, calls = placement.rename_no_replace, []

    def refusing(a: str, b: str) -> None:
        calls.append(a)
        if len(calls) == 10:
            raise OSError(code, os.strerror(code), a, None, b)
        real(a, b)

    monkeypatch.setattr(placement, "rename_no_replace", refusing)
    result = runner.invoke(app, ["split", str(src)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert os.strerror(code) in result.output and "9 of 40" in result.output
    monkeypatch.setattr(placement, "rename_no_replace", real)
    assert runner.invoke(app, ["split", "--undo", str(src)]).exit_code == 0
    assert snapshot(src) == before


def test_a_name_too_long_for_the_file_system_is_found_before_anything_moves(tmp_path: Path) -> None:
    src = tmp_path / "src"
    long_label = "x" * 250
    for i in range(5):
        write(src / "train" / long_label / f"{'y' * 20}{i}.jpg", jpeg_bytes(i))
        write(src / "train" / "dog" / f"{i}.jpg", jpeg_bytes(50 + i))
    write(src / "train" / long_label / "0" / f"{'y' * 20}0.jpg", jpeg_bytes(99))  # renamed with its path: too long
    before = snapshot(src)
    result = runner.invoke(app, ["split", str(src)])
    assert result.exit_code == 2, result.output
    assert "longer than the file system" in result.output and "Nothing was moved" in result.output
    assert snapshot(src) == before


def test_symlink_loops_and_symlinked_folders_are_never_followed(tmp_path: Path) -> None:
    src = dataset(tmp_path / "src", per_class=5)
    os.symlink("cat.999.jpg", src / "train" / "cat.999.jpg")  # a link to itself
    os.symlink(src / "train", src / "train" / "again")  # a folder linking to its parent
    before = snapshot(src)
    for mode in ("copy", "move"):
        out = tmp_path / f"out-{mode}"
        result = runner.invoke(app, ["split", str(src), "--mode", mode, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        # The looping link is set aside as unreadable, not followed.
        assert [p.name for p in (out / "_rejected" / "unreadable").iterdir()] == ["cat.999.jpg"]
        assert runner.invoke(app, ["split", "--undo", str(out)]).exit_code == 0
        assert snapshot(src) == before


def test_copy_new_file_never_leaves_a_partial_file_under_its_final_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write(tmp_path / "a.bin", os.urandom(200_000))
    target = tmp_path / "out" / "a.bin"
    target.parent.mkdir()
    import prep.util.files as fsutil

    def dies_half_way(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        os.write(out_fd, b"x" * 1000)
        raise KeyboardInterrupt  # a Ctrl-C in the middle of the copy

    monkeypatch.setattr(fsutil.os, "sendfile", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        copy_new_file(str(source), str(target))
    assert not target.exists()
    assert not Path(partial_copy_path(str(target))).exists()
    monkeypatch.undo()
    copy_new_file(str(source), str(target))
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(FileExistsError):
        copy_new_file(str(source), str(target))


def test_rename_no_replace_refuses_an_existing_target(tmp_path: Path) -> None:
    a, b = write(tmp_path / "a", b"a"), write(tmp_path / "b", b"b")
    with pytest.raises(FileExistsError):
        rename_no_replace(str(a), str(b))
    assert a.read_bytes() == b"a" and b.read_bytes() == b"b"
    rename_no_replace(str(a), str(tmp_path / "c"))
    assert (tmp_path / "c").read_bytes() == b"a" and not a.exists()


def test_a_stale_partial_copy_is_removed_when_a_killed_copy_split_is_finished(tmp_path: Path) -> None:
    src = dataset(tmp_path / "src", per_class=5)
    out = tmp_path / "out"
    options = SplitOptions(mode="copy", out=out, workers=1)
    split_dataset(src, options)
    journal = Journal.load(out / JOURNAL_NAME)
    # Make it look killed during one copy: the copy's temporary file is there, not the copy.
    entry = journal.entries[3]
    (out / entry.dst).rename(partial_copy_path(str(out / entry.dst)))
    journal.status = Status.IN_PROGRESS
    journal.save()
    report = split_dataset(src, options)
    assert report.status == "resumed"
    assert (out / entry.dst).read_bytes() == (src / entry.src).read_bytes()
    assert not list(out.rglob(".prep-partial-*"))


def test_disk_error_message_names_path_and_cause() -> None:
    message = str(DiskError.from_os_error(OSError(errno.EROFS, "Read-only file system", "/data/out"), "write"))
    assert message == "Cannot write /data/out: Read-only file system (the file system is read-only; choose a writable folder)."
