"""The commands a script chains, each a real process: split, stats, train, evaluate, export,
lr-find and plugins, with every --json output parsing while progress and logs go to stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # seven processes in a row, each paying torch's import


def test_every_json_output_parses_while_progress_and_logs_go_to_stderr(flat_dataset: Path, tmp_path: Path):
    """Each command with --json, as a script would chain them, through a real process (so
    that rich draws its bars and torch prints what it prints)."""
    import os
    import subprocess
    import sys

    def run(*args: str) -> dict | list:
        done = subprocess.run(
            [sys.executable, "-m", "prep", *args, "--json"], capture_output=True, text=True, timeout=600,
            env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    assert run("split", str(flat_dataset))["status"] == "done"
    assert run("stats", str(flat_dataset), "--workers", "1")["classes"] == ["cat", "dog"]
    summary = run("train", str(flat_dataset), "--weights", "none", "--epochs", "1", "--image-size", "16",
                  "--batch-size", "8", "--workers", "0", "--run-dir", str(tmp_path / "run"))
    best = summary["best"]
    assert run("evaluate", best, str(flat_dataset), "--workers", "0", "--out", str(tmp_path / "c.png"))["images"] > 0
    assert run("export", best, "--format", "onnx", "--out", str(tmp_path / "m.onnx"))["checked"]
    assert run("lr-find", str(flat_dataset), "--weights", "none", "--image-size", "16", "--batch-size", "8",
               "--steps", "6", "--workers", "0", "--out", str(tmp_path / "lr.png"))["steps"] >= 5
    assert run("plugins")["trainers"]
