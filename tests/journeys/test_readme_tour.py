"""The README's five-minute tours, run as written: every shell command of their fenced blocks,
in order, in one shell in an empty folder, as a newcomer pastes them."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import readme_tour_commands as tour_commands


def run_tour(commands: list[str], folder: Path) -> subprocess.CompletedProcess:
    """Run ``commands`` in one ``bash -e`` in ``folder``. ``source .venv/bin/activate`` is
    the clone's own venv: this test's Python's."""
    venv = Path(sys.executable).parent.parent
    script = "\n".join(
        f"source {venv}/bin/activate" if command == "source .venv/bin/activate" else f"echo '+ {command}' >&2; {command}"
        for command in commands
    )
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=folder, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, OMP_NUM_THREADS="2", PATH=os.environ.get("PATH", "")),
    )


@pytest.mark.slow  # the classification tour trains, evaluates, exports and runs the range test: about 90 s
def test_the_classification_tour_runs_as_written(tmp_path: Path):
    done = run_tour(tour_commands("Five minutes: classification"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and (latest / "best.pt").is_file() and (latest / "best.onnx").is_file()
    assert (latest / f"evaluate-dogsandcats" / "confusion.png").is_file()
    rows = list(csv.reader((tmp_path / "submission.csv").open()))
    assert rows[0] == ["id", "label"] and len(rows) > 1
    assert (tmp_path / "preview.png").is_file() and (tmp_path / "lr_find.png").is_file()
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # a U-Net and a multi-label ResNet, each trained for a few epochs on CPU
@pytest.mark.parametrize("section, submission_header", [
    ("Five minutes: segmentation", ["img", "rle_mask"]),
    ("Five minutes: several tags per image", ["image_name", "tags"]),
])
def test_the_other_tours_run_as_written(section: str, submission_header: list[str], tmp_path: Path):
    commands = ["source .venv/bin/activate", *tour_commands(section)]
    done = run_tour(commands, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "latest" / "best.pt").is_file()
    assert next(csv.reader((tmp_path / "submission.csv").open())) == submission_header
    assert "Traceback" not in done.stderr
