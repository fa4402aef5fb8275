"""prep evaluate writes its pictures beside the model, never into the working directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prep.cli import app

runner = CliRunner()


def test_the_picture_goes_beside_the_model_and_its_path_is_printed(colours_checkpoint: Path, colours_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run = tmp_path / "run"
    shutil.copytree(colours_checkpoint.parent, run, ignore=shutil.ignore_patterns("evaluate-*"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["evaluate", str(run / "best.pt"), str(colours_dataset), "--workers", "0"])
    assert result.exit_code == 0, result.output
    picture = run / f"evaluate-{colours_dataset.name}" / "confusion.png"
    assert picture.is_file() and f"Confusion matrix: {picture}" in " ".join(result.output.split())
    on_test = runner.invoke(app, ["evaluate", str(run), str(colours_dataset), "--split", "test", "--workers", "0"])
    assert on_test.exit_code == 0 and (run / f"evaluate-{colours_dataset.name}-test" / "confusion.png").is_file()
    assert list(work.iterdir()) == []  # nothing in the working directory
    resumed = runner.invoke(app, ["train", "--resume", "--run-dir", str(run), "--workers", "0"])  # the folder stays a run's
    assert resumed.exit_code == 0, resumed.output
