"""Training under faults: SIGKILL at random moments, Ctrl-C, damaged and misfit checkpoints.

Whatever moment a kill comes at, after ``--resume`` the summary's best is what ``best.pt``
holds, no epoch is logged twice, and no temporary file is left.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prep.cli import app
from prep.engine.checkpoint import CheckpointError, load_checkpoint, load_model_weights, save_checkpoint
from prep.train.options import TrainOptions
from prep.train.run import train

from conftest import jpeg_bytes, write

runner = CliRunner()
# 12 kills on every commit that CI checks (20 took 265 s of a 13-minute suite); PREP_TEST_KILLS for more.
KILLS = int(os.environ.get("PREP_TEST_KILLS", "12"))


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults") / "d"
    for split, n in (("train", 12), ("valid", 6)):
        for c in ("a", "b"):
            for i in range(n):
                write(root / split / c / f"{i}.jpg", jpeg_bytes(len(split) * 100 + ord(c) * 10 + i, size=(24, 24)))
    return root


def tiny(run_dir: Path, **extra) -> TrainOptions:
    settings = dict(epochs=2, image_size=16, batch_size=8, workers=0, lr=0.01, optimizer="adam", scheduler="none", weights="none", run_dir=run_dir)
    return TrainOptions(**{**settings, **extra})


def assert_run_consistent(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    best = load_checkpoint(run_dir / "best.pt")
    assert best["epoch"] == summary["best_epoch"]
    assert best["best"] == summary["best_valid_acc"]
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, summary["epochs"] + 1))
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    return summary


def test_a_kill_between_saving_last_and_best_is_repaired_on_resume(tiny_split: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_split, tiny(run_dir, epochs=1))
    epoch_one_best = (run_dir / "best.pt").read_bytes()
    train(tiny_split, tiny(run_dir, resume=True))
    # Now make it look killed right after epoch 2's last.pt, which improved, was saved:
    # best.pt still the epoch-1 model, its temporary file left, epoch 3 half logged.
    last = load_checkpoint(run_dir / "last.pt")
    last.update(best_epoch=2, best=1.5)
    save_checkpoint(run_dir / "last.pt", last)
    (run_dir / "best.pt").write_bytes(epoch_one_best)
    (run_dir / ".best.pt.tmp").write_bytes(b"half")
    with (run_dir / "metrics.jsonl").open("a") as log:
        log.write(json.dumps({"epoch": 3, "valid_acc": 0.1}) + "\n" + '{"epoch": 4, "val')

    summary = train(tiny_split, tiny(run_dir, resume=True))

    assert summary["best_epoch"] == 2 and summary["best_valid_acc"] == 1.5
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == 2
    assert_run_consistent(run_dir)


def test_resume_without_last_pt_is_an_error_not_a_new_run(tmp_path: Path, tiny_split: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = runner.invoke(app, ["train", str(tiny_split), "--resume", "--run-dir", str(run_dir)])
    assert result.exit_code == 1
    assert "Nothing to resume" in result.output and "Traceback" not in result.output
    assert list(run_dir.iterdir()) == []


def _flip_a_weight_byte(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        biggest = max(archive.infolist(), key=lambda info: info.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(data[biggest.header_offset + 26:][:2], "little"), int.from_bytes(data[biggest.header_offset + 28:][:2], "little")
    start = biggest.header_offset + 30 + name_len + extra_len
    data[start + biggest.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_the_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(1000)}, "epoch": 1})
    assert load_checkpoint(path)["epoch"] == 1
    _flip_a_weight_byte(path)
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_shape_is_one_line(tmp_path: Path) -> None:
    two, three = torch.nn.Linear(4, 2), torch.nn.Linear(4, 3)
    with pytest.raises(CheckpointError, match=r"weight is \[3, 4\] in the checkpoint but \[2, 4\] in the model"):
        load_model_weights(two, three.state_dict(), tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="it lacks bias"):
        load_model_weights(two, {"weight": torch.zeros(2, 4)}, tmp_path / "c.pt")


def test_ctrl_c_in_the_first_epoch_exits_130_and_the_summary_names_only_what_exists(tiny_split: Path, tmp_path: Path) -> None:
    from prep.hookspecs import hookimpl
    from prep.plugins import temporary_plugin

    class CtrlCAtStart:
        @hookimpl
        def on_train_start(self, run):
            os.kill(os.getpid(), signal.SIGINT)

    run_dir = tmp_path / "run"
    with temporary_plugin(CtrlCAtStart(), "test-ctrl-c-start"):
        result = runner.invoke(app, [
            "train", "--weights", "none", str(tiny_split), "--epochs", "2", "--image-size", "16", "--batch-size", "8", "--workers", "0",
            "--run-dir", str(run_dir), "--json",
        ])
    assert result.exit_code == 130, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["best"] is None and not (run_dir / "best.pt").exists()
    assert summary["last"] == str(run_dir / "last.pt") and (run_dir / "last.pt").exists()


def test_predict_skips_unreadable_images_and_counts_them(tiny_split: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_split, tiny(run_dir, epochs=1))
    images = tmp_path / "images"
    for i in range(3):
        write(images / f"{i}.jpg", jpeg_bytes(900 + i))
    write(images / "broken.jpg", b"\xff\xd8\xff not really")
    write(images / "empty.jpg", b"")
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(run_dir / "best.pt"), str(images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "skipped 2 unreadable images" in said
    assert "broken.jpg" in said and "empty.jpg" in said
    rows = out.read_text().splitlines()
    assert len(rows) == 1 + 3 and not any("broken" in row or "empty" in row for row in rows)


def _wait_for(path: Path, process: subprocess.Popen, limit: float = 300) -> float:
    """Seconds until ``path`` exists (or the process ended)."""
    began = time.perf_counter()
    while not path.exists() and process.poll() is None and time.perf_counter() - began < limit:
        time.sleep(0.01)
    return time.perf_counter() - began


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_keeps_best_and_log_consistent(tiny_split: Path, tmp_path: Path) -> None:
    """KILLS real ``prep train`` processes, each SIGKILLed at a random moment, then resumed
    to the end. One in four kills lands anywhere from start-up to the first checkpoint (the
    run must then refuse to resume, or resume from it); the others land anywhere after it
    (training, validation, a checkpoint save), where resuming is what is tested."""
    rng = random.Random(1234)
    command = [sys.executable, "-m", "prep", "--quiet", "train", "--weights", "none", str(tiny_split), "--epochs", "4", "--image-size", "16",
               "--batch-size", "4", "--workers", "0", "--lr", "0.01", "--optimizer", "adam", "--scheduler", "none"]
    # One undisturbed run tells how long start-up plus the first epoch, and the whole run, take here.
    clean = subprocess.Popen([*command, "--run-dir", str(tmp_path / "clean")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = _wait_for(tmp_path / "clean" / "last.pt", clean)
    began = time.perf_counter()
    assert clean.wait(timeout=300) == 0
    after_first = time.perf_counter() - began
    outcomes = {"killed before last.pt": 0, "resumed": 0, "finished before the kill": 0}
    for trial in range(KILLS):
        run_dir = tmp_path / f"run{trial}"
        process = subprocess.Popen([*command, "--run-dir", str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if trial % 4 == 0:  # anywhere up to the first checkpoint, as long as it took the clean run here
            time.sleep(rng.uniform(0, first_checkpoint))
        else:
            _wait_for(run_dir / "last.pt", process)
            time.sleep(rng.uniform(0, after_first))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.returncode == 0:
            outcomes["finished before the kill"] += 1
            assert_run_consistent(run_dir)
            continue
        resumed = subprocess.run([*command, "--resume", "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=300)
        if not (run_dir / "last.pt").exists():
            outcomes["killed before last.pt"] += 1
            assert resumed.returncode == 1 and "Nothing to resume" in resumed.stderr, resumed.stderr
            assert "Traceback" not in resumed.stderr
            continue
        assert resumed.returncode == 0, resumed.stderr
        outcomes["resumed"] += 1
        summary = assert_run_consistent(run_dir)
        assert summary["epochs"] == 4 and summary["status"] == "completed"
    print(outcomes)
    assert outcomes["resumed"] >= KILLS // 2, outcomes


# -- Images that vanish during a run -----------------------------------------------------------

class _Vanish:
    """A callback that moves ``share`` of a split's images away after the first epoch."""

    def __init__(self, root: Path, split: str, share: float) -> None:
        self.root, self.split, self.share = root, split, share

    def on_epoch_end(self, run, metrics) -> None:
        if run.epoch == 1:
            files = sorted((self.root / self.split).rglob("*.jpg"))
            away = self.root.parent / "away"
            for path in files[: max(1, round(len(files) * self.share))]:
                target = away / path.relative_to(self.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)


@pytest.mark.parametrize("split", ["train", "valid"])
def test_images_vanishing_mid_run_stop_it_with_one_line_and_never_a_best(tiny_split: Path, tmp_path: Path, split: str) -> None:
    import shutil

    from prep.engine.epoch import ImagesMissingError

    root = tmp_path / "data" / "d"
    shutil.copytree(tiny_split, root)
    run_dir = tmp_path / "run"
    with pytest.raises(ImagesMissingError, match=rf"went missing during the run \(the first: {root}.*last.pt keeps epoch 1"):
        train(root, tiny(run_dir, epochs=3, cache="off", monitor="valid_loss"), callbacks=[_Vanish(root, split, 0.5)])
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1]


def test_a_few_images_vanishing_are_skipped_by_name(tiny_split: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "data" / "d"
    shutil.copytree(tiny_split, root)
    for c in ("a", "b"):  # 40 training images, of which one goes
        for i in range(12, 20):
            write(root / "train" / c / f"{i}.jpg", jpeg_bytes(700 + ord(c) * 10 + i, size=(24, 24)))
    summary = train(root, tiny(tmp_path / "run", epochs=2, cache="off"), callbacks=[_Vanish(root, "train", 0.02)])
    assert summary["status"] == "completed" and len(summary["skipped_images"]) == 1


def test_a_validation_with_no_image_is_never_a_best(tmp_path: Path) -> None:
    import math

    from prep.engine.epoch import validate

    class Nothing:
        collate_origin = "collate function"

        def __iter__(self):
            return iter(())

        def __len__(self):
            return 0

    from prep.builtin_tasks.classification.task import ClassificationTask

    task = ClassificationTask()
    loss, _, count = validate(torch.nn.Linear(2, 2), Nothing(), task, torch.nn.CrossEntropyLoss(), ["a", "b"], [0, 0, 0], [1, 1, 1], torch.device("cpu"))
    assert count == 0 and math.isnan(loss)


@pytest.mark.slow
def test_undoing_the_split_under_an_uncached_training_stops_it_with_one_line(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(30):
            write(source / c / f"{i}.jpg", jpeg_bytes(ord(c[0]) * 50 + i, size=(64, 48)))
    split = runner.invoke(app, ["split", str(source), "--out", str(tmp_path / "out")])
    assert split.exit_code == 0, split.output
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "prep", "train", str(tmp_path / "out"), "--weights", "none", "--image-size", "32",
         "--batch-size", "4", "--epochs", "200", "--cache", "off", "--workers", "0", "--monitor", "valid_loss",
         "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    undo = runner.invoke(app, ["split", "--undo", str(tmp_path / "out")])
    assert undo.exit_code == 0, undo.output
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("Error:")][0].count("went missing") == 1, stderr
