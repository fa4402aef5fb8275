"""Kill real ``prep split`` processes with SIGKILL at random moments; nothing may be lost.

Half the kills land at a uniformly random time in the run, half just after the journal
appears (so that they interrupt placement itself). After each kill, either re-running the
same command must finish the split, or ``--undo`` must restore the original exactly; both
are checked, and every original file must exist exactly once throughout.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from prep.split.api import split_dataset, undo_split
from prep.errors import JournalError
from prep.split.journal import JOURNAL_NAME, JOURNAL_TEMP_NAME, Journal, Status
from prep.split.plan import SplitOptions
from prep.split.splitters import SplitSize

from conftest import jpeg_bytes, snapshot, write

FILES_PER_CLASS = 600
KILLS_THEN_RERUN = 12
KILLS_THEN_UNDO = 12
KILLS_DURING_UNDO = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "data"
    for i in range(FILES_PER_CLASS):
        write(root / "train" / f"cat.{i}.jpg", jpeg_bytes(i, size=(16, 16)))
        write(root / "train" / f"dog.{i}.jpg", jpeg_bytes(100_000 + i, size=(16, 16)))
    for i in range(20):
        write(root / "test1" / f"{i}.jpg", jpeg_bytes(200_000 + i, size=(16, 16)))
    return root


def contents(root: Path) -> Counter:
    """The multiset of file contents, ignoring prep's journal (and its temporary file, left
    when a kill lands inside a save): each original exactly once. The final checks, after
    a re-run or an undo, compare everything, so that those must clean up the temporary."""
    return Counter(v for k, v in snapshot(root).items() if k not in (JOURNAL_NAME, JOURNAL_TEMP_NAME))


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "prep", "--quiet", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def kill_at(proc: subprocess.Popen, journal: Path, rng: random.Random, full_run: float) -> None:
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0, full_run))
    else:
        deadline = time.monotonic() + 10
        while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.03))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_random_moments_never_loses_a_file(template: Path, tmp_path: Path):
    rng = random.Random(1234)
    expected_original = snapshot(template)
    expected_contents = contents(template)
    options = SplitOptions(test=SplitSize(0.1, False), seed=5)
    args = ["--test", "0.1", "--seed", "5"]

    # One uninterrupted run, to know how long a run takes and what the result looks like.
    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    began = time.monotonic()
    finished = subprocess.run([sys.executable, "-m", "prep", "--quiet", "split", str(reference), *args])
    full_run = time.monotonic() - began
    assert finished.returncode == 0
    expected_split = {k for k in snapshot(reference) if k != JOURNAL_NAME}

    interrupted = mid_placement = 0
    for attempt in range(KILLS_THEN_RERUN + KILLS_THEN_UNDO):
        data = tmp_path / f"run{attempt}"
        shutil.copytree(template, data)
        proc = start(["split", str(data), *args])
        kill_at(proc, data / JOURNAL_NAME, rng, full_run)
        interrupted += proc.returncode == -signal.SIGKILL
        loose = sum(1 for p in (data / "train").iterdir() if p.is_file())
        mid_placement += 0 < loose < 2 * FILES_PER_CLASS
        assert contents(data) == expected_contents
        if attempt < KILLS_THEN_RERUN:
            if (data / JOURNAL_NAME).exists() or any((data / "train").iterdir()):
                split_dataset(data, options)
            assert contents(data) == expected_contents
            assert {k for k in snapshot(data) if k != JOURNAL_NAME} == expected_split  # no temp left
            undo_split(data)
        elif (data / JOURNAL_NAME).exists():
            undo_split(data)
        else:  # killed before the journal was saved: nothing moved, nothing to undo
            with pytest.raises(JournalError, match="nothing to undo"):
                undo_split(data)
        assert snapshot(data) == expected_original, f"attempt {attempt}"
        shutil.rmtree(data)
    assert interrupted >= KILLS_THEN_RERUN  # most kills must really interrupt a run
    assert mid_placement >= 3  # and some must land while files are being moved


def test_sigkill_during_undo_then_undo_again(template: Path, tmp_path: Path):
    rng = random.Random(99)
    expected_original = snapshot(template)
    for attempt in range(KILLS_DURING_UNDO):
        data = tmp_path / f"undo{attempt}"
        shutil.copytree(template, data)
        split_dataset(data)
        proc = start(["split", "--undo", str(data)])
        time.sleep(rng.uniform(0.2, 0.45))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert contents(data) == contents(template)
        journal = data / JOURNAL_NAME
        if journal.exists() and Journal.load(journal).status == Status.UNDOING:
            with pytest.raises(JournalError, match="undo"):
                split_dataset(data)  # a half-undone split is never re-split by accident
        if journal.exists():
            undo_split(data)
        assert snapshot(data) == expected_original
        shutil.rmtree(data)


def test_sigkill_of_a_multilabel_split_then_rerun_writes_the_same_labels(tmp_path: Path):
    """A multi-label split writes each split's labels.csv after its files are in place: a
    kill anywhere leaves a split that a re-run finishes to the uninterrupted one's result."""
    rng = random.Random(7)
    template = tmp_path / "template"
    tags = ["clear primary", "haze primary water", "clear primary road", "cloudy", "clear primary water road"]
    rows = ["image_name,tags"]
    for i in range(2 * FILES_PER_CLASS):
        write(template / "train-jpg" / f"train_{i}.jpg", jpeg_bytes(300_000 + i, size=(16, 16)))
        rows.append(f"train_{i},{tags[i % len(tags)]}")
    (template / "train_v2.csv").write_text("\n".join(rows) + "\n")
    expected_original = snapshot(template)
    args = ["--labels", "train_v2.csv", "--seed", "5"]
    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    began = time.monotonic()
    assert subprocess.run([sys.executable, "-m", "prep", "--quiet", "split", str(reference), *args]).returncode == 0
    full_run = time.monotonic() - began
    expected_split = {k: v for k, v in snapshot(reference).items() if k != JOURNAL_NAME}
    assert "train/labels.csv" in expected_split and "valid/labels.csv" in expected_split
    options = SplitOptions(seed=5, labels_csv=Path("train_v2.csv"), test=SplitSize.parse("0", "--test"))  # as the CLI reads it
    interrupted = 0
    for attempt in range(6):
        data = tmp_path / f"run{attempt}"
        shutil.copytree(template, data)
        proc = start(["split", str(data), *args])
        kill_at(proc, data / JOURNAL_NAME, rng, full_run)
        interrupted += proc.returncode == -signal.SIGKILL
        assert contents(data) == contents(template) + Counter(
            v for k, v in snapshot(data).items() if k.endswith("labels.csv")
        )  # every image (and the CSV) exactly once, beside the labels.csv files written so far
        if (data / JOURNAL_NAME).exists():
            split_dataset(data, options)
            assert {k: v for k, v in snapshot(data).items() if k != JOURNAL_NAME} == expected_split
            undo_split(data)
        assert snapshot(data) == expected_original, f"attempt {attempt}"
        shutil.rmtree(data)
    assert interrupted >= 4  # most kills must really interrupt a run
