"""A cross-validation killed in the middle of a fold: ``--resume`` keeps the folds that
finished, continues the killed one from its last.pt, and trains the rest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from prep.split.api import split_dataset
from prep.split.plan import SplitOptions
from prep.split.splitters import SplitSize

from conftest import write_colour_images


def _wait_for(path: Path, process: subprocess.Popen, limit: float = 300) -> None:
    began = time.perf_counter()
    while not path.exists() and process.poll() is None and time.perf_counter() - began < limit:
        time.sleep(0.005)


def test_sigkill_during_fold_2_resumes_at_fold_2(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_colour_images(raw, 6, 0, classes=["amber", "blue"])
    split_dataset(raw, SplitOptions(folds=3, valid=SplitSize(0, False), out=tmp_path / "data", mode="copy"))
    run_dir = tmp_path / "cv"
    command = [
        sys.executable, "-m", "prep", "train", str(tmp_path / "data"), "--fold", "all", "--weights", "none", "--epochs", "3",
        "--image-size", "16", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--run-dir", str(run_dir),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(run_dir / "fold-2" / "last.pt", process)  # fold 2 (the third) has finished its first epoch
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    kept = {k: (run_dir / f"fold-{k}" / "last.pt").stat().st_mtime_ns for k in (0, 1)}
    killed_at = len((run_dir / "fold-2" / "metrics.jsonl").read_text().splitlines())
    assert 1 <= killed_at < 3
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "fold 0 (1 of 3): completed" in resumed.stdout + resumed.stderr
    out = resumed.stdout + resumed.stderr
    assert out.count("(finished before; kept)") == 2 and "Fold 2 (3 of 3): Training" in out and "Fold 0 (1 of 3): Training" not in out
    assert {k: (run_dir / f"fold-{k}" / "last.pt").stat().st_mtime_ns for k in (0, 1)} == kept
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "fold-2" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # continued from last.pt, no epoch twice
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and [f["status"] for f in summary["folds"]] == ["completed"] * 3
    assert summary["oof"]["images"] == 12
