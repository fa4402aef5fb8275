"""The example third-party plugin in examples/prep-smallcnn, installed the way a user
installs it (pip, offline) and used through the real entry-point machinery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parents[2] / "examples" / "prep-smallcnn"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-installs the plugin into its own folder, which then goes on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(PLUGIN)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert list(target.glob("prep_smallcnn-0.1.0.dist-info"))
    return target


def prep(args: list[str], site: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, "-m", "prep", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_prep_plugins_lists_the_installed_example(installed: Path):
    done = prep(["plugins", "--json"], installed)
    assert done.returncode == 0, done.stderr
    listed = {p["name"]: p for p in json.loads(done.stdout)["plugins"]}
    assert listed["smallcnn"]["version"] == "prep-smallcnn 0.1.0"
    assert listed["smallcnn"]["hooks"] == ["register_collate_fns", "register_trainers"]


def test_the_example_plugin_trains_with_its_own_collate_function(installed: Path, tmp_path: Path):
    data = tmp_path / "dogsandcats"
    for args in (["sample", str(data), "--n", "100", "--seed", "4"], ["split", str(data)]):
        assert prep(args, installed).returncode == 0
    done = prep([
        "train", str(data), "--plugin", "small-cnn", "--epochs", "3", "--image-size", "32", "--batch-size", "16",
        "--workers", "0", "--run-dir", str(tmp_path / "run"), "--json",
    ], installed)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed" and summary["best_valid_acc"] > 0.7  # chance is 0.5
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "plugin: small-cnn" in config and "collate: cutout" in config and "scheduler: onecycle" in config
    evaluated = prep(["evaluate", summary["best"], str(data), "--json"], installed)
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["acc"] == pytest.approx(summary["best_valid_acc"])


def test_the_example_plugins_own_tests_pass_once_installed(installed: Path):
    env = dict(os.environ, PYTHONPATH=str(installed))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        capture_output=True, text=True, env=env, cwd=PLUGIN,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
